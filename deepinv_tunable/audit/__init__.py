"""Auditing a reconstruction: is it supported by the measurements, and how sure is it?
:mod:`.hallucination` (null-space energy, support of a region, the hallucination audit),
:mod:`.uncertainty` (posterior sampling, streaming moments, split-conformal calibration and
coverage), :mod:`.lipschitz` (the tempered HVAE's empirical Lipschitz ratio). Each name is
imported on first use."""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "AuditReport": "hallucination",
    "chi2": "hallucination",
    "hallucination_audit": "hallucination",
    "null_space_component": "hallucination",
    "null_space_energy": "hallucination",
    "support_fraction": "hallucination",
    "ConformalCalibrator": "uncertainty",
    "Coverage": "uncertainty",
    "PosteriorSampler": "uncertainty",
    "PosteriorSummary": "uncertainty",
    "RunningMoments": "uncertainty",
    "coverage": "uncertainty",
    "lipschitz_ratios": "lipschitz",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
