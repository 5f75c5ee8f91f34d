r"""Hallucination audit: is a structure in a reconstruction supported by the measurements?

A reconstruction :math:`\hat x` from :math:`y = A x + \varepsilon`, :math:`\varepsilon \sim
\mathcal N(0, \sigma^2 I)`, mixes what the measurements determine with what the prior supplies.
For a linear operator :math:`A` the split is exact:

.. math::

    \hat x = \underbrace{A^\dagger A \hat x}_{\text{seen by the measurements}}
           + \underbrace{(I - A^\dagger A)\hat x}_{\text{null space: invented by the prior}},

and the two parts are orthogonal. This module turns the split into maps and numbers
:footcite:p:`generative_priors_notes`:

* :func:`chi2`: data consistency :math:`\|A\hat x - y\|^2 / (m\sigma^2)` (about 1 when the
  reconstruction explains the data down to the noise);
* :func:`null_space_component`, :func:`null_space_energy`: what the prior invented, pixel by pixel
  (for Cartesian MRI: exactly the unsampled k-space);
* :func:`support_fraction`: the share of a structure's energy the measurements can see, on the
  scale of the best-measured direction, :math:`\|A s\|^2 / (\|A\|^2 \|s\|^2) \in [0, 1]`;
* :func:`hallucination_audit`: all of the above for one reconstruction, plus sample disagreement
  restricted to the null space when posterior samples are given, and a flag for a candidate
  finding in a region of interest (``roi``).

The question "is this lesion in the data or made up by the prior?" gets a map
(``null_energy``, ``null_disagreement``) and a number (``finding_support``, ``flagged``) in
the :class:`AuditReport`.

Images are ``(B, C, H, W)`` in the physics' image domain (2 channels, real and imaginary, for
MRI); energy maps sum :math:`|\cdot|^2` over channels and are ``(B, 1, H, W)``. A chi2 close to
1 does not clear a finding: a lesion built from unmeasured frequencies changes nothing in
:math:`A\hat x`, so it is perfectly data-consistent and still invented. That is what the
support fraction is for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import deepinv as dinv
import torch

from ..physics import operator_norm_sq, residual_sq, resolve_sigma
from ..physics.data_fit import check_measurements, chi2, measure, measured_count
from ..utils.checks import check_finite, check_image_batch, check_roi, require_linear

__all__ = [
    "AuditReport",
    "chi2",
    "hallucination_audit",
    "measured_count",
    "null_space_component",
    "null_space_energy",
    "operator_norm_sq",
    "support_fraction",
]


# -- helpers -------------------------------------------------------------------------------
def _energy(x: torch.Tensor) -> torch.Tensor:
    """Per-example energy :math:`\\|x\\|^2` ``(B,)`` (complex tensors allowed)."""
    return x.abs().pow(2).flatten(1).sum(1)


def _energy_map(x: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_c |x_c|^2` per pixel, ``(B, 1, H, W)``."""
    return x.abs().pow(2).sum(1, keepdim=True)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with 0 where ``den == 0`` (no energy at all: nothing to attribute)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


# -- public functions ----------------------------------------------------------------------
def null_space_component(x: torch.Tensor, physics: dinv.physics.LinearPhysics) -> torch.Tensor:
    r"""Part of ``x`` the measurements cannot see: :math:`x_\text{null} = x - A^\dagger A x`.

    :math:`A^\dagger` is the physics' own ``A_dagger``, so the split is as exact as deepinv's
    pseudo-inverse:

    * :class:`deepinv.physics.MRI` (single coil, deepinv 0.5): a ``DecomposablePhysics`` with
      :math:`A = M F` (orthonormal FFT, binary mask), whose ``A_dagger`` is
      :math:`F^{-1} M^{-1}_{+}` with singular values below ``1e-5`` treated as 0. For a binary mask
      this is the adjoint :math:`F^{-1} M` and the exact pseudo-inverse: :math:`x_\text{null}`
      is exactly the unsampled k-space of ``x``.
    * :class:`deepinv.physics.BlurFFT`, inpainting: also decomposable; a truncated inverse filter
      (frequencies whose transfer function is below ``1e-5`` in modulus are the null space).
    * other linear physics (CT, multi-coil MRI, ...): deepinv's iterative least squares (CG by
      default), so :math:`x_\text{null}` is accurate to the solver's tolerance.

    :param torch.Tensor x: images ``(B, C, H, W)`` in the physics' image domain.
    :param deepinv.physics.LinearPhysics physics: a linear forward model.
    :raises TypeError: the physics is not linear (no null space).
    :return: :math:`x_\text{null}`, same shape as ``x``; :math:`A x_\text{null} \approx 0` and
        :math:`x - x_\text{null} \perp x_\text{null}`.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4}, (32, 32))
        >>> x_null = null_space_component(torch.rand(1, 2, 32, 32), physics)
        >>> physics.A(x_null).abs().max().item() < 1e-5
        True
    """
    check_image_batch(x, "x")
    require_linear(physics, "the null space")
    return x - physics.A_dagger(measure(x, physics))


def null_space_energy(x: torch.Tensor, physics: dinv.physics.LinearPhysics) -> torch.Tensor:
    r"""Map of null-space energy :math:`\sum_c |x_{\text{null},c}|^2` (see
    :func:`null_space_component`): where the image holds content the measurements cannot see.

    :param torch.Tensor x: images ``(B, C, H, W)`` in the physics' image domain.
    :param deepinv.physics.LinearPhysics physics: a linear forward model.
    :return: tensor ``(B, 1, H, W)``.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4}, (32, 32))
        >>> null_space_energy(torch.rand(2, 2, 32, 32), physics).shape
        torch.Size([2, 1, 32, 32])
    """
    return _energy_map(null_space_component(x, physics))


@torch.no_grad()
def support_fraction(
    structure: torch.Tensor,
    physics: dinv.physics.LinearPhysics,
    roi: torch.Tensor | None = None,
    norm_sq: float | None = None,
) -> torch.Tensor:
    r"""Share of a structure's energy that the measurements see:

    .. math::

        f(s) = \frac{\|A s\|_2^2}{\|A\|_2^2\,\|s\|_2^2} \in [0, 1], \qquad s = r \odot \text{structure},

    with :math:`r` the region of interest. :math:`f = 1` when :math:`s` lies along the
    best-measured direction (any sampled k-space for MRI, the blur's pass band), :math:`f = 0`
    when :math:`s` lies in the null space: the measurements would be the same with or without it,
    so such a structure can only come from the prior. For "is this lesion real?", take
    ``structure`` = reconstruction minus a lesion-free reference (or minus the posterior mean)
    and ``roi`` = a box around the lesion: a small :math:`f` says the lesion is not in the data.

    :param torch.Tensor structure: images ``(B, C, H, W)`` in the physics' image domain.
    :param deepinv.physics.LinearPhysics physics: a linear forward model.
    :param torch.Tensor roi: mask or weight in :math:`[0, 1]` broadcastable to ``structure``
        (e.g. ``(B, 1, H, W)``). Default ``None``: the whole image. A hard box cuts the structure
        at its edges, which adds frequencies of its own: leave a margin around the finding.
    :param float norm_sq: :math:`\|A\|_2^2` if already known (:func:`operator_norm_sq`).
        Default ``None``: computed here.
    :raises ValueError: bad ``roi`` shape or values outside :math:`[0, 1]`; :math:`s` has zero
        energy for some example; ``norm_sq`` not positive.
    :return: tensor ``(B,)``, clipped to at most 1 (the power method approaches
        :math:`\|A\|^2` from below).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4}, (32, 32))
        >>> s = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> support_fraction(physics.A_dagger(physics.A(s)), physics)  # measured part only
        tensor([1.0000])
        >>> support_fraction(null_space_component(s, physics), physics).item() < 1e-6
        True
    """
    check_image_batch(structure, "structure")
    require_linear(physics, "the null space")
    s = structure if roi is None else check_roi(roi, structure.shape) * structure
    energy = _energy(s)
    if bool((energy == 0).any()):
        bad = torch.nonzero(energy == 0).flatten().tolist()
        where = "" if roi is None else " inside the roi"
        raise ValueError(
            f"the structure has zero energy{where} for example(s) {bad}; expected a nonzero structure "
            "(e.g. reconstruction minus reference) to measure"
        )
    if norm_sq is None:
        norm_sq = operator_norm_sq(physics, s.shape, device=s.device, dtype=s.dtype)
    elif not (math.isfinite(float(norm_sq)) and float(norm_sq) > 0):
        raise ValueError(f"norm_sq must be a positive, finite ||A||^2, got norm_sq={norm_sq}")
    return (_energy(measure(s, physics)) / (float(norm_sq) * energy)).clamp(max=1.0)


# -- the audit -----------------------------------------------------------------------------
def _to_list(t: torch.Tensor | None) -> Any:
    return None if t is None else t.detach().cpu().tolist()


def _mean(t: torch.Tensor | None) -> float | None:
    return None if t is None else float(t.detach().float().mean())


@dataclass
class AuditReport:
    r"""Result of :func:`hallucination_audit`; per-example numbers are ``(B,)`` tensors, maps are
    ``(B, 1, H, W)``. Fields that need samples or a region of interest are ``None`` without them.

    :param torch.Tensor chi2: :math:`\chi^2` of the reconstruction (about 1: consistent).
    :param torch.Tensor null_energy: map of :math:`|x_\text{null}|^2`, where the reconstruction
        holds content the measurements cannot see.
    :param torch.Tensor null_fraction: :math:`\|x_\text{null}\|^2 / \|\hat x\|^2`, the share
        of the reconstruction's energy supplied by the prior.
    :param torch.Tensor sample_chi2: :math:`\chi^2` of each sample, ``(N, B)``.
    :param torch.Tensor std: pixelwise posterior std,
        :math:`\sqrt{\tfrac1C\sum_c \operatorname{Var}_i[x_{i,c}]}` (population variance over
        the :math:`N` samples).
    :param torch.Tensor null_disagreement: :math:`\sqrt{\tfrac1N\sum_i\sum_c |n_{i,c}|^2}` with
        :math:`n_i` the null-space part of sample :math:`i`'s deviation from the sample mean:
        disagreement the measurements cannot settle (channels summed, not averaged as in ``std``).
    :param torch.Tensor null_disagreement_fraction: :math:`\sum_i\|n_i\|^2 / \sum_i\|d_i\|^2`,
        the share of the samples' disagreement that lies in the null space (0 if the samples agree).
    :param torch.Tensor roi_null_fraction: :math:`\|r x_\text{null}\|^2 / \|r \hat x\|^2` in the
        region of interest :math:`r`.
    :param torch.Tensor finding_support: :func:`support_fraction` of the candidate finding
        (reconstruction minus reference) in the region of interest.
    :param torch.Tensor flagged: ``finding_support < threshold``: the finding is mostly invisible
        to the measurements, so the prior made it up.
    :param float threshold: the flagging threshold.
    """

    chi2: torch.Tensor
    null_energy: torch.Tensor
    null_fraction: torch.Tensor
    sample_chi2: torch.Tensor | None = None
    std: torch.Tensor | None = None
    null_disagreement: torch.Tensor | None = None
    null_disagreement_fraction: torch.Tensor | None = None
    roi_null_fraction: torch.Tensor | None = None
    finding_support: torch.Tensor | None = None
    flagged: torch.Tensor | None = None
    threshold: float = 0.5

    def summary(self) -> dict[str, Any]:
        """The numbers without the maps, as plain Python values (JSON-serialisable).

        Each scalar field ``f`` gives ``f`` (one value per example, ``None`` if not computed)
        and ``f_mean``; ``sample_chi2`` is listed per example (``B`` lists of ``N`` values);
        ``flagged`` gives booleans and ``n_flagged``.
        """
        out: dict[str, Any] = {"n_examples": int(self.chi2.shape[0]), "threshold": float(self.threshold)}
        for name in ("chi2", "null_fraction", "null_disagreement_fraction", "roi_null_fraction", "finding_support"):
            value = getattr(self, name)
            out[name], out[f"{name}_mean"] = _to_list(value), _mean(value)
        sample = self.sample_chi2
        out["sample_chi2"] = None if sample is None else _to_list(sample.transpose(0, 1))
        out["sample_chi2_mean"] = _mean(sample)
        out["flagged"] = None if self.flagged is None else [bool(v) for v in self.flagged.tolist()]
        out["n_flagged"] = None if self.flagged is None else int(self.flagged.sum())
        return out


@torch.no_grad()
def _check_audit_inputs(x_hat: torch.Tensor, y: torch.Tensor, samples, reference) -> None:
    """:func:`hallucination_audit`'s inputs checked: one measurement per image, ``(N >= 2, *x_hat.shape)``
    finite samples, a finite reference of ``x_hat``'s shape."""
    batch = x_hat.shape[0]
    if y.shape[0] != batch:
        raise ValueError(f"y has batch size {y.shape[0]} but x_hat has {batch}; expected one measurement per image")
    if samples is not None:
        if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or samples.shape[1:] != x_hat.shape:
            shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
            raise ValueError(
                f"samples must have shape (N, *x_hat.shape) = (N, {', '.join(map(str, x_hat.shape))}), got {shape}"
            )
        if samples.shape[0] < 2:
            raise ValueError(f"samples must hold N >= 2 samples to measure disagreement, got N={samples.shape[0]}")
        check_finite(samples, "samples")
    if reference is not None:
        if not isinstance(reference, torch.Tensor) or reference.shape != x_hat.shape:
            shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"reference must have the shape of x_hat {tuple(x_hat.shape)}, got {shape}")
        check_finite(reference, "reference")


def _add_sample_disagreement(report: AuditReport, samples: torch.Tensor, y, physics, scale: torch.Tensor) -> None:
    """The samples' data fit, pixel std and null-space disagreement, into ``report``."""
    mean = samples.mean(0)
    sample_chi2, dev_sq, null_sq = [], 0.0, 0.0
    # one sample at a time: physics with per-example parameters (MRI masks of shape
    # (B, ...)) only accept batches of B images
    for sample in samples:
        sample_chi2.append(residual_sq(sample, y, physics) / scale)
        deviation = sample - mean
        null_part = null_space_component(deviation, physics)
        dev_sq = dev_sq + _energy_map(deviation)
        null_sq = null_sq + _energy_map(null_part)
    n = samples.shape[0]
    dev_total = dev_sq.flatten(1).sum(1)
    report.sample_chi2 = torch.stack(sample_chi2)
    report.std = (dev_sq / (n * samples.shape[2])).sqrt()  # mean over the channels too
    report.null_disagreement = (null_sq / n).sqrt()
    report.null_disagreement_fraction = _ratio(null_sq.flatten(1).sum(1), dev_total)


def _chi2_scale(y: torch.Tensor, physics, sigma: float | None) -> torch.Tensor:
    r""":math:`m\sigma^2` per example (the chi2's denominator); refuses examples with nothing measured."""
    sigma, _ = resolve_sigma(y, physics, sigma, estimate=False)
    m = measured_count(y, physics)
    if bool((m == 0).any()):
        raise ValueError(f"y has no measured entries for example(s) {torch.nonzero(m == 0).flatten().tolist()}")
    return m * sigma**2


def hallucination_audit(
    x_hat: torch.Tensor,
    y: torch.Tensor,
    physics: dinv.physics.LinearPhysics,
    samples: torch.Tensor | None = None,
    roi: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    sigma: float | None = None,
    threshold: float = 0.5,
    *,
    norm_sq: float | None = None,
) -> AuditReport:
    r"""Audit a reconstruction :math:`\hat x` of :math:`y = A x + \varepsilon`: which of its
    content do the measurements support?

    Always computed:

    * :math:`\chi^2(\hat x) = \|A\hat x - y\|^2/(m\sigma^2)` (:func:`chi2`): about 1 if
      :math:`\hat x` explains the data, :math:`\gg 1` if it contradicts them;
    * the null-space part :math:`x_\text{null} = \hat x - A^\dagger A\hat x`, as a map
      (``null_energy``) and as the share of the image's energy (``null_fraction``).

    With posterior ``samples`` :math:`x_1, \dots, x_N`: each sample's :math:`\chi^2`, the
    pixelwise std, and the disagreement restricted to the null space. With deviations
    :math:`d_i = x_i - \bar x` and their null-space parts :math:`n_i = d_i - A^\dagger A d_i`,

    .. math::

        \text{null\_disagreement} = \sqrt{\tfrac1N \textstyle\sum_i \sum_c |n_{i,c}|^2},
        \qquad
        \text{null\_disagreement\_fraction} = \frac{\sum_i \|n_i\|^2}{\sum_i \|d_i\|^2}.

    A fraction near 1 says the samples differ only where the measurements are silent: their
    spread is the prior's uncertainty, not the data's; high ``null_disagreement`` at a lesion
    says the prior is unsure whether to draw it.

    With a region of interest ``roi`` :math:`r` (a box around a suspected lesion):
    ``roi_null_fraction`` :math:`= \|r x_\text{null}\|^2 / \|r\hat x\|^2`, and the candidate
    finding :math:`s = \hat x - x_\text{ref}` (``reference``, else the sample mean) gets

    .. math::

        \text{finding\_support} = \frac{\|A (r s)\|^2}{\|A\|^2 \|r s\|^2}, \qquad
        \text{flagged} = \text{finding\_support} < \text{threshold}.

    This answers "is this lesion in the data or made up by the prior?": a flagged finding is
    mostly made of what the scanner did not measure (for MRI: unsampled k-space; for blur:
    frequencies the kernel erases). Note that such a lesion keeps :math:`\chi^2 \approx 1`: the
    data cannot refute it, which is exactly why they cannot support it either.

    A ``reference`` given without ``roi`` is audited over the whole image (``roi`` = 1).

    :param torch.Tensor x_hat: reconstruction ``(B, C, H, W)`` in the physics' image domain.
    :param torch.Tensor y: measurements ``(B, ...)``.
    :param deepinv.physics.LinearPhysics physics: the linear forward model.
    :param torch.Tensor samples: posterior samples ``(N, B, C, H, W)``, ``N >= 2``. Default ``None``.
    :param torch.Tensor roi: mask or weight in :math:`[0, 1]` broadcastable to ``x_hat``. Default ``None``.
    :param torch.Tensor reference: lesion-free reference ``(B, C, H, W)`` (e.g. a prior scan or a
        reconstruction without the finding). Default ``None``: the sample mean, if samples are given.
    :param float sigma: noise std. Default ``None``: the physics' Gaussian noise std.
    :param float threshold: support below which a finding is flagged, in :math:`[0, 1]`. Default 0.5.
    :param float norm_sq: :math:`\|A\|^2` if already known (reuse it across slices). Default ``None``.
    :raises ValueError: mismatched shapes, non-finite inputs, ``roi`` outside :math:`[0, 1]`,
        ``sigma <= 0``, ``threshold`` outside :math:`[0, 1]`, or a finding with zero energy in the roi.
    :raises TypeError: non-linear physics.
    :return: an :class:`AuditReport`.

    :Examples:

        Plant a lesion made only of unsampled k-space into an MRI image: it is data-consistent
        and flagged.

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (64, 64))
        >>> x = torch.zeros(1, 2, 64, 64)
        >>> x[:, 0, 16:48, 16:48] = 0.5
        >>> yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        >>> blob = torch.zeros_like(x)
        >>> blob[:, 0] = torch.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / 18)
        >>> lesion = null_space_component(blob, physics)
        >>> y = physics(x + lesion)
        >>> roi = torch.zeros(1, 1, 64, 64)
        >>> roi[..., 15:46, 19:50] = 1
        >>> report = hallucination_audit(x + lesion, y, physics, roi=roi, reference=x)
        >>> bool(report.flagged[0]), round(report.chi2.item(), 1)
        (True, 1.0)
    """
    check_image_batch(x_hat, "x_hat")
    check_measurements(y)
    require_linear(physics, "the null space")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got threshold={threshold}")
    _check_audit_inputs(x_hat, y, samples, reference)
    roi_t = None if roi is None else check_roi(roi, x_hat.shape)
    scale = _chi2_scale(y, physics, sigma)
    x_null = null_space_component(x_hat, physics)
    report = AuditReport(
        chi2=residual_sq(x_hat, y, physics) / scale,
        null_energy=_energy_map(x_null),
        null_fraction=_ratio(_energy(x_null), _energy(x_hat)),
        threshold=threshold,
    )

    if samples is not None:
        _add_sample_disagreement(report, samples, y, physics, scale)

    if roi_t is not None:
        report.roi_null_fraction = _ratio(_energy(roi_t * x_null), _energy(roi_t * x_hat))
    if reference is None and samples is not None and roi_t is not None:
        reference = samples.mean(0)
    if reference is not None:
        if norm_sq is None:
            norm_sq = operator_norm_sq(physics, x_hat.shape, device=x_hat.device, dtype=x_hat.dtype)
        report.finding_support = support_fraction(x_hat - reference, physics, roi_t, norm_sq=norm_sq)
        report.flagged = report.finding_support < threshold
    return report
