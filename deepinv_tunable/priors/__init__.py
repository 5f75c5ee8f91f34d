"""deepinv ``Denoiser`` subclasses built from the package's generative models."""

from .hvae_denoiser import HVAEDenoiser, tau_for_sigma

__all__ = ["HVAEDenoiser", "tau_for_sigma"]
