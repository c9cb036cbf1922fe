"""jax_mri_ldm: class-conditional latent diffusion for 2D brain MRI slices in JAX/Flax.

Stage 1 trains a VAE that maps 256x256 slices to an 8x32x32 latent; stage 2 trains a
class-conditional DDPM (classifier-free guidance, EMA) on those latents; the samplers in
`sampling.py` turn noise into labelled synthetic slices. See README.md.
"""

__version__ = "0.1.0"

CLASS_NAMES: tuple[str, ...] = ("normal", "tumour")
"""Label id -> class name of the binary mode (the paper; `config.data.classes=binary`).

With `config.data.classes=folders` or the built-in set with types, the classes come from the
data (`ImageSet.class_names`, recorded in the run); code downstream of the data must use the
run's class names, not this constant, for the number of classes."""
