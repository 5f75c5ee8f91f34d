"""deepinv ``Denoiser`` subclasses built from the package's networks."""

from .dncnn_denoiser import DnCNNDenoiser
from .hvae_denoiser import HVAEDenoiser, corpus_tau_for_sigma, tau_for_sigma
from .pixel_denoiser import PixelDenoiser, load_pixel_denoiser

__all__ = [
    "DnCNNDenoiser",
    "HVAEDenoiser",
    "PixelDenoiser",
    "corpus_tau_for_sigma",
    "load_pixel_denoiser",
    "tau_for_sigma",
]
