"""Lightning modules, data modules and the training-recipe runner (one module per model)."""

from .data import SliceDataConfig, SliceDataModule, default_augmentation, load_slices
from .flow import OrderedFlowModule
from .hvae import HVAEModule
from .ldm import TunableLDMModule
from .presets import PRESETS
from .run import TrainRecipe, export_checkpoint, load_train_recipe, train
from .severity import SeverityEncoderModule
from .vae import LossTerm, TunableVAEModule, gaussian_kl

__all__ = [
    "HVAEModule",
    "LossTerm",
    "OrderedFlowModule",
    "PRESETS",
    "SliceDataConfig",
    "SeverityEncoderModule",
    "SliceDataModule",
    "TrainRecipe",
    "TunableLDMModule",
    "TunableVAEModule",
    "default_augmentation",
    "export_checkpoint",
    "gaussian_kl",
    "load_slices",
    "load_train_recipe",
    "train",
]
