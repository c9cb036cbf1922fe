"""Evaluation: metrics, feature spaces, controls, the downstream study and the report.

* `metrics`, `neighbours`, `stats`: PSNR / SSIM / MS-SSIM, FID / KID, diversity; nearest
  training image and memorisation; confidence intervals and classification scores.
* `spectrum`, `prdc`: power-spectrum distance and latent-grid score; precision / recall /
  density / coverage.
* `features`: the self-supervised MRI encoder and the other candidate feature spaces.
* `controls`, `trust`, `control_study`: corrupted control sets, the check that a metric ranks
  them correctly, and the controls run on their own.
* `scoring`: every metric of one labelled set against the real images.
* `study`: the domain classifier and the real/synthetic downstream arms.
* `report` and `sections/`: the report, one module per section (compute -> JSON, render ->
  markdown); `context`, `generator`, `setmetrics`, `markdown`, `runinfo` serve them.

Submodules are imported explicitly (``from jax_mri_ldm.evaluation import metrics``) so that
importing the package stays cheap.
"""
