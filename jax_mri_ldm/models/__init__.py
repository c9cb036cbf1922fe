"""Networks only (no losses, data or training): the paper's VAE and the latent UNet.

All modules are flax linen, NHWC, float32 parameters with a ``dtype`` compute option.
"""

from jax_mri_ldm.models.unet import UNet, timestep_embedding
from jax_mri_ldm.models.vae import VAE, Decoder, Encoder

__all__ = ["VAE", "Decoder", "Encoder", "UNet", "timestep_embedding"]
