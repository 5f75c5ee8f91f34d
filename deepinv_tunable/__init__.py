"""deepinv_tunable: tunable-complexity generative priors for DeepInverse.

Public classes and functions are importable from here (loaded on first use, so the command
line starts fast):

>>> import deepinv_tunable as dt
>>> dt.LatentMAP.__name__, dt.truncate.__module__
('LatentMAP', 'deepinv_tunable.latent')
"""

from __future__ import annotations

import importlib

from .lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "KDistribution": "latent",
    "truncate": "latent",
    "truncation_mask": "latent",
    "TunableVAE": "nets",
    "CheckpointError": "nets",
    "HVAE": "nets",
    "OrderedFlow": "nets",
    "LatentUNet": "nets",
    "PnPHVAE": "solvers",
    "TunableLDMSolver": "solvers",
    "HVAEDenoiser": "priors",
    "tau_for_sigma": "priors",
    "lipschitz_ratios": "diagnostics",
    "PnPHVAESampler": "solvers",
    "PosteriorSampler": "uncertainty",
    "PosteriorSummary": "uncertainty",
    "ConformalCalibrator": "uncertainty",
    "coverage": "uncertainty",
    "RunningMoments": "uncertainty",
    "hallucination_audit": "audit",
    "AuditReport": "audit",
    "support_fraction": "audit",
    "chi2": "audit",
    "null_space_component": "audit",
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
    "severity_audit": "severity",
    "SeverityRanges": "severity",
    "sample_degradations": "severity",
    "degrade": "severity",
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
    "severity",
    "priors",
    "diagnostics",
    "uncertainty",
    "audit",
    "latent",
    "nets",
    "solvers",
    "tuning",
    "physics",
    "data",
    "training",
    "recipes",
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
