"""One module per report section: `compute(ctx) -> dict` (its report.json keys) and
`render(report) -> str` (its markdown, from the finished report.json); `report.py` runs them."""
