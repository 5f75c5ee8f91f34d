"""Networks only (torch / diffusers modules; they know nothing of physics or solvers), each imported on first use
(:mod:`deepinv_tunable.utils.lazy`): the DnCNN, DRUNet and HVAE do not import diffusers."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "PretrainedMixin": "checkpoint",
    "DnCNN": "dncnn",
    "ConditionalDRUNet": "drunet",
    "HVAE": "hvae",
    "LatentUNet": "latent_unet",
    "OrderedFlow": "ordered_flow",
    "SeverityEncoder": "severity",
    "TunableVAE": "tunable_vae",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
