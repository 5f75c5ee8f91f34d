"""Networks only: they know nothing of physics or solvers."""

from .checkpoint import CheckpointError, PretrainedMixin
from .dncnn import DnCNN
from .drunet import ConditionalDRUNet
from .hvae import HVAE
from .latent_unet import LatentUNet
from .ordered_flow import OrderedFlow
from .severity import SeverityEncoder
from .tunable_vae import TunableVAE

__all__ = [
    "CheckpointError",
    "ConditionalDRUNet",
    "DnCNN",
    "HVAE",
    "LatentUNet",
    "OrderedFlow",
    "PretrainedMixin",
    "SeverityEncoder",
    "TunableVAE",
]
