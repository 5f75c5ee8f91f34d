"""deepinv ``Reconstructor`` subclasses: classical baselines, DPIR, generative-prior solvers and samplers."""

from .base import Reconstruction, SolverDiagnostics, TunableReconstructor
from .classical import DEFAULT_TV_LAMBDA, TVPGD, MeasurementBaseline, PseudoInverse
from .dpir import DPIR
from .flash import FlashDiffusion, FlashReconstruction
from .latent_diffusion import LatentDiffusionSolver
from .latent_map import LatentMAP
from .latent_tv import LatentMAPTV
from .pixel_flash import PixelFlash
from .pnp_hvae import PnPHVAE, PnPHVAESampler
from .tunable_ldm import TunableLDMSolver

__all__ = [
    "DEFAULT_TV_LAMBDA",
    "DPIR",
    "FlashDiffusion",
    "FlashReconstruction",
    "LatentDiffusionSolver",
    "LatentMAP",
    "LatentMAPTV",
    "MeasurementBaseline",
    "PixelFlash",
    "PnPHVAE",
    "PnPHVAESampler",
    "PseudoInverse",
    "Reconstruction",
    "SolverDiagnostics",
    "TVPGD",
    "TunableLDMSolver",
    "TunableReconstructor",
]
