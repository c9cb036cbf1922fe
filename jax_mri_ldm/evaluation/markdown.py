"""Markdown helpers shared by the report sections (numbers, tables, n/a notes, images)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def f(v: Any, digits: int = 3) -> str:
    """A number for a table: `n/a` for None, ints as is, floats to `digits` places."""
    if v is None:
        return "n/a"
    if isinstance(v, int | np.integer):
        return str(int(v))
    v = float(v)
    if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e5):
        return f"{v:.{digits}g}" if abs(v) >= 1e5 else f"{v:.2e}"
    return f"{v:.{digits}f}"


def ci(summary: dict) -> str:
    """`mean ± half-width` of a study summary (or the mean with its n, or n/a)."""
    if summary["mean"] is None:
        return "n/a"
    if summary["half_width"] is None:
        return f"{summary['mean']:.3f} (n={summary['n']})"
    return f"{summary['mean']:.3f} ± {summary['half_width']:.3f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (lines, then a blank line)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def nulls_note(
    nulls: dict[str, str], prefixes: Sequence[str], hide: Sequence[str] = (".kid_std",)
) -> list[str]:
    """'Not computed' bullets for the section's null paths, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for p, r in nulls.items():
        if any(p.startswith(x) for x in prefixes) and not any(h in p for h in hide):
            by_reason.setdefault(r, []).append(p)
    if not by_reason:
        return []
    out = ["Not computed (`n/a`):", ""]
    for r, paths in by_reason.items():
        out.append(f"- {r}: " + ", ".join(f"`{p}`" for p in paths))
    return out + [""]


def img(rel: str, alt: str) -> str:
    """A markdown image link."""
    return f"![{alt}]({rel})"


def verdict(ok: bool | None) -> str:
    """'yes' / '**no**' / 'n/a' for a pass/fail cell."""
    return "n/a" if ok is None else ("yes" if ok else "**no**")
