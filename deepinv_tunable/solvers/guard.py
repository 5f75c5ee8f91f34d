r"""Estimate, then verify: a reconstruction that explains the measurements worse than the
measurement baseline is replaced by that baseline, loudly.

With :math:`\chi^2(x) = \|A x - y\|^2 / (m \sigma^2)` (:func:`deepinv_tunable.audit.hallucination.chi2`), a
sample :math:`\hat x` falls back when

.. math::

    \chi^2(\hat x) > \max\big(\chi^2(x_\mathrm{base}),\ \chi^2_\mathrm{max}\big),

:math:`x_\mathrm{base}` the :class:`~deepinv_tunable.solvers.MeasurementBaseline` (zero-filled
MRI, least-squares CT, the observed blurred image). The floor :math:`\chi^2_\mathrm{max}` (default
2) is needed because some baselines fit the data exactly (zero-filled MRI has :math:`\chi^2 = 0`)
while an image that explains the data down to the noise has :math:`\chi^2 \approx 1`. The check
is on the prior's own estimate, before any final data-consistency step: a final projection would
hide the disagreement while keeping what the prior invented in the null space of :math:`A`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import deepinv as dinv
import torch

from ..diffusion.consistency import weighted_data_consistency
from ..physics.data_fit import CHI2_UNDERFIT, chi2
from .base import Reconstruction
from .classical import MeasurementBaseline

DEFAULT_MAX_CHI2 = CHI2_UNDERFIT


@dataclass
class GuardResult:
    """``x`` with fallen-back samples replaced; per-sample ``chi2`` of the estimate and of the
    baseline, and the ``fallback`` flags (all ``(B,)``, on the CPU)."""

    x: torch.Tensor
    chi2: torch.Tensor
    baseline_chi2: torch.Tensor
    fallback: torch.Tensor


def measurement_guard(
    x: torch.Tensor,
    y: torch.Tensor,
    physics: dinv.physics.Physics,
    max_chi2: float = DEFAULT_MAX_CHI2,
    who: str = "solver",
    sigma: float | None = None,
) -> GuardResult:
    r"""Replace the samples of ``x`` that explain ``y`` worse than the measurement baseline.

    :param torch.Tensor x: estimates in the physics' image domain, ``(B, C, H, W)``.
    :param torch.Tensor y: measurements.
    :param deepinv.physics.Physics physics: forward model with a Gaussian noise level.
    :param float max_chi2: floor of the fallback threshold. Default 2.
    :param str who: solver name for the warning.
    :param float sigma: the noise std; ``None`` (default): the physics' (a noiseless physics
        needs the solver's resolved level).

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}, (32, 32))
        >>> x = torch.rand(2, 1, 32, 32); y = physics(x)
        >>> import warnings; warnings.simplefilter("ignore")
        >>> out = measurement_guard(torch.stack([x[0], 1 - x[1]]), y, physics)
        >>> out.fallback.tolist(), torch.equal(out.x[1], y[1])
        ([False, True], True)
    """

    if max_chi2 <= 0:
        raise ValueError(f"max_chi2 must be positive, got {max_chi2}")
    with torch.no_grad():
        base = MeasurementBaseline()(y, physics)
        chi, chi_base = chi2(x, y, physics, sigma).cpu(), chi2(base, y, physics, sigma).cpu()
        fallback = chi > torch.clamp(chi_base, min=max_chi2)
        out = torch.where(fallback.to(x.device).reshape(-1, *[1] * (x.dim() - 1)), base.to(x.dtype), x)
    if fallback.any():
        bad = fallback.nonzero().flatten().tolist()
        warnings.warn(
            f"{who}: samples {bad} explain the measurements worse than the measurement baseline "
            f"(chi2 {[round(float(chi[i]), 2) for i in bad]} against baseline "
            f"{[round(float(chi_base[i]), 2) for i in bad]}, floor {max_chi2:g}); returning the baseline "
            "for them (GuardResult.fallback / the reconstruction's fallback flags say which)",
            RuntimeWarning,
            stacklevel=3,
        )
    return GuardResult(out, chi, chi_base, fallback)


@dataclass
class VerifiedResult:
    """Result of :func:`verify_and_correct`, all per sample ``(B,)`` on the CPU but ``x``:
    ``chi2`` of the estimate, ``fallback`` flags, the final step's data weight ``dc_weight``
    (NaN where the step did not run) and ``chi2_final`` of the returned ``x``."""

    x: torch.Tensor
    chi2: torch.Tensor
    fallback: torch.Tensor
    dc_weight: torch.Tensor
    chi2_final: torch.Tensor


@dataclass
class GuardedReconstruction(Reconstruction):
    """A :class:`~deepinv_tunable.solvers.Reconstruction` whose estimate went through
    :func:`verify_and_correct`: per sample ``(B,)``, the reduced chi-square ``chi2_estimate`` of
    the prior's own estimate (before any fallback or final step; the returned ``x``'s is
    ``chi2``), the ``fallback`` flags (``x`` holds the measurement baseline there) and the data
    weight ``dc_weight`` of the final data-consistency step (0: the estimate already explained
    the data; NaN: step off or fallen back)."""

    chi2_estimate: torch.Tensor | None = None
    fallback: torch.Tensor | None = None
    dc_weight: torch.Tensor | None = None

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"chi2_estimate": self.chi2_estimate, "fallback": self.fallback, "dc_weight": self.dc_weight}


def verify_and_correct(
    x: torch.Tensor,
    y: torch.Tensor,
    physics: dinv.physics.Physics,
    max_chi2: float = DEFAULT_MAX_CHI2,
    correct: bool | None = True,
    who: str = "solver",
    sigma: float | None = None,
) -> VerifiedResult:
    r"""The end of every generative sampler of the package: verify the prior's own estimate with
    :func:`measurement_guard` (first: a final projection would hide its disagreement), then, when
    ``correct``, apply :func:`~deepinv_tunable.diffusion.consistency.weighted_data_consistency` to the
    samples that passed (``correct=None``: where the physics is linear, the only kind with the
    proximal step it takes). ``sigma``: the noise std (default: the physics').

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}, (32, 32))
        >>> x = torch.rand(2, 1, 32, 32); y = physics(x)
        >>> import warnings; warnings.simplefilter("ignore")
        >>> out = verify_and_correct(torch.stack([x[0], 1 - x[1]]), y, physics)
        >>> out.fallback.tolist(), bool(torch.isnan(out.dc_weight[1]))
        ([False, True], True)
    """

    guard = measurement_guard(x, y, physics, max_chi2, who=who, sigma=sigma)
    out, dc_weight = guard.x, torch.full((x.shape[0],), float("nan"))
    if correct is None:
        correct = isinstance(physics, dinv.physics.LinearPhysics)
    if correct and not bool(guard.fallback.all()):
        kept = (~guard.fallback).nonzero().flatten().to(out.device)
        # the whole batch goes in (the physics may hold one operator per example); baselines that
        # fit the data leave with gamma = 0, and only the kept rows are taken
        dc = weighted_data_consistency(out, y, physics, sigma=sigma)
        out = out.index_copy(0, kept, dc.x[kept])
        dc_weight[kept.cpu()] = dc.gamma[kept.cpu()]
    return VerifiedResult(out, guard.chi2, guard.fallback, dc_weight, chi2(out, y, physics, sigma).cpu())
