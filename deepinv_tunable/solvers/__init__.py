"""deepinv ``Reconstructor`` subclasses: classical baselines, DPIR, generative-prior solvers and
samplers. Each is imported on first use (:mod:`deepinv_tunable.utils.lazy`): ``from
deepinv_tunable.solvers import DPIR`` does not import diffusers."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "Reconstruction": "base",
    "SolverDiagnostics": "base",
    "TunableReconstructor": "base",
    "DEFAULT_TV_LAMBDA": "classical",
    "TVPGD": "classical",
    "MeasurementBaseline": "classical",
    "PseudoInverse": "classical",
    "DPIR": "dpir",
    "FlashDiffusion": "flash",
    "FlashReconstruction": "flash",
    "LatentDiffusionSolver": "latent_diffusion",
    "LatentMAP": "latent_map",
    "LatentMAPTV": "latent_tv",
    "PixelDPS": "pixel_dps",
    "PixelFlash": "pixel_flash",
    "PnPHVAE": "pnp_hvae",
    "PnPHVAESampler": "pnp_hvae_sampler",
    "TunableLDMSolver": "tunable_ldm",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
