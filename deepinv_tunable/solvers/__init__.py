"""deepinv ``Reconstructor`` subclasses: classical baselines now, generative-prior solvers later."""

from .base import Reconstruction, TunableReconstructor
from .classical import DEFAULT_TV_LAMBDA, TVPGD, MeasurementBaseline, PseudoInverse

SOLVERS = {"baseline": MeasurementBaseline, "pseudo_inverse": PseudoInverse, "tv_pgd": TVPGD}

__all__ = ["DEFAULT_TV_LAMBDA", "MeasurementBaseline", "PseudoInverse", "Reconstruction", "SOLVERS", "TVPGD", "TunableReconstructor"]
