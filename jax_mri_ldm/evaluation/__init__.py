"""Evaluation: image/distribution metrics, the downstream classifier study and the report.

* `metrics`  PSNR, SSIM, MS-SSIM, FID/KID from features, diversity, memorisation search,
  confidence intervals and binary classification metrics.
* `study`    train/evaluate the normal-vs-tumour classifier and run the real/synthetic arms.
* `report`   markdown and figures built from the outputs of the two modules above.

Submodules are imported explicitly (``from jax_mri_ldm.evaluation import metrics``) so that
importing the package stays cheap.
"""
