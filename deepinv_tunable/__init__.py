"""deepinv_tunable: tunable-complexity generative priors for DeepInverse.

Public classes and functions are importable from here (loaded on first use, so the command
line starts fast):

>>> import deepinv_tunable as dt
>>> dt.LatentMAP.__name__, dt.truncate.__module__
('LatentMAP', 'deepinv_tunable.nets.truncation')
"""

from __future__ import annotations

import importlib

from .utils.lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "KDistribution": "nets.truncation",
    "truncate": "nets.truncation",
    "truncation_mask": "nets.truncation",
    "TunableVAE": "nets",
    "CheckpointError": "nets",
    "HVAE": "nets",
    "OrderedFlow": "nets",
    "LatentUNet": "nets",
    "PnPHVAE": "solvers",
    "TunableLDMSolver": "solvers",
    "HVAEDenoiser": "priors",
    "tau_for_sigma": "priors",
    "lipschitz_ratios": "audit.lipschitz",
    "PnPHVAESampler": "solvers",
    "PosteriorSampler": "audit.uncertainty",
    "PosteriorSummary": "audit.uncertainty",
    "ConformalCalibrator": "audit.uncertainty",
    "coverage": "audit.uncertainty",
    "RunningMoments": "audit.uncertainty",
    "hallucination_audit": "audit.hallucination",
    "AuditReport": "audit.hallucination",
    "support_fraction": "audit.hallucination",
    "chi2": "audit.hallucination",
    "null_space_component": "audit.hallucination",
    "LatentMAP": "solvers",
    "LatentMAPTV": "solvers",
    "TVPGD": "solvers",
    "PseudoInverse": "solvers",
    "MeasurementBaseline": "solvers",
    "Reconstruction": "solvers",
    "SolverDiagnostics": "solvers",
    "AutoK": "tuning",
    "Tuned": "tuning",
    "select_k": "tuning",
    "sweep_k": "tuning",
    "discrepancy_k": "tuning",
    "measurement_splitting_k": "tuning",
    "one_standard_error_k": "tuning",
    "linear_denoising_mse": "tuning",
    "optimal_k_linear": "tuning",
    "build_physics": "physics",
    "load_volume": "data",
    "save_volume": "data",
    "TunableVAEModule": "training",
    "train": "training",
    "load_train_recipe": "training",
    "run_recipe": "recipes",
    "load_recipe": "recipes",
    "FlashDiffusion": "solvers",
    "FlashReconstruction": "solvers",
    "SeverityEncoder": "nets",
    "SeverityEncoderModule": "training",
    "severity_audit": "diffusion.severity",
    "SeverityRanges": "diffusion.severity",
    "sample_degradations": "diffusion.severity",
    "degrade": "diffusion.severity",
    "DPIR": "solvers",
    "select_parameter": "tuning",
    "ParameterChoice": "tuning",
    "estimate_noise_sigma": "physics",
    "DnCNN": "nets",
    "DnCNNDenoiser": "priors",
    "ConditionalDRUNet": "nets",
    "PixelDenoiser": "priors",
    "PixelFlash": "solvers",
    "measurement_guard": "solvers.guard",
    "verify_and_correct": "solvers.guard",
    "build_corpus": "data.corpus",
    "load_corpus": "data.corpus",
}
_SUBMODULES = (
    "pretrained",
    "priors",
    "nets",
    "solvers",
    "tuning",
    "diffusion",
    "audit",
    "physics",
    "data",
    "training",
    "recipes",
    "utils",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])
_export, _ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    try:
        return _export(name)
    except AttributeError:
        raise AttributeError(f"module 'deepinv_tunable' has no attribute '{name}'") from None


def __dir__() -> list[str]:
    return __all__
