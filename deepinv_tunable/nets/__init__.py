"""Networks only: they know nothing of physics or solvers."""

from .checkpoint import CheckpointError, PretrainedMixin
from .tunable_vae import TunableVAE

__all__ = ["CheckpointError", "PretrainedMixin", "TunableVAE"]
