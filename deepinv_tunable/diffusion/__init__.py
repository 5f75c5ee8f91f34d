"""Diffusion in one place: :mod:`.schedule` (the variance-preserving forward and reverse steps
every sampler shares), :mod:`.consistency` (the data-consistency steps of the latent samplers,
interchangeable) and :mod:`.severity` (degradations over a range of severities and the severity
audit of Flash-Diffusion). The samplers that use them are in :mod:`deepinv_tunable.solvers`. Each
name is imported on first use."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "ReverseStep": "schedule",
    "add_noise": "schedule",
    "reverse_steps": "schedule",
    "tweedie_z0": "schedule",
    "CONSISTENCY_STEPS": "consistency",
    "AdamDC": "consistency",
    "DataConsistency": "consistency",
    "DDSLocalMAP": "consistency",
    "LDPS": "consistency",
    "LatentProblem": "consistency",
    "PSLD": "consistency",
    "ScheduledLocalMAP": "consistency",
    "Degradation": "severity",
    "SeverityRanges": "severity",
    "degrade": "severity",
    "sample_degradations": "severity",
    "severity_audit": "severity",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
