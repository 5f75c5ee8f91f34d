r"""How well an image explains the measurements: the number of measured entries :math:`m` and
the reduced chi-square :math:`\|Ax - y\|^2 / (m\sigma^2)`. The audit, the measurement guard of
the solvers and the data-consistency step read them from here (the residual itself is
:func:`deepinv_tunable.physics.measurement.residual_sq`)."""

from __future__ import annotations

import math

import deepinv as dinv
import torch

from ..utils.checks import check_finite, check_image_batch
from . import residual_sq, resolve_sigma

# seed of the probe image (measured_count; the power method's is physics.measurement._POWER_SEED): the
# audit's numbers must not depend on, nor disturb, the caller's random state
_PROBE_SEED = 0


def measure(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """``physics.A(x)``, refused unless it is one tensor (not e.g. a stacked physics' TensorList)."""
    out = physics.A(x)
    if not isinstance(out, torch.Tensor):  # e.g. a deepinv TensorList from stacked physics
        raise TypeError(
            f"expected a physics whose measurements are one tensor, got {type(out).__name__} "
            f"from {type(physics).__name__}.A"
        )
    return out


def check_measurements(y: torch.Tensor) -> None:
    """Refuse measurements that are not a finite tensor."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of measurements, got {type(y).__name__}")
    check_finite(y, "measurements y")


def _count(y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    try:
        image = physics.A_adjoint(y)  # only for the image shape and dtype
    except RuntimeError as err:
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not fit the physics ({type(physics).__name__}): {err}"
        ) from err
    except ValueError:  # deepinv's physics without an adjoint (a LinearPhysics given only A): y's data
        return (
            (y != 0).flatten(1).sum(1).to(y.real.dtype if (y.is_floating_point() or y.is_complex()) else torch.float32)
        )
    gen = torch.Generator(device=y.device).manual_seed(_PROBE_SEED)
    probe = torch.randn(image.shape, generator=gen, device=y.device, dtype=image.dtype)
    a_probe = measure(probe, physics)
    if a_probe.shape != y.shape:
        raise ValueError(
            f"the physics maps images of shape {tuple(image.shape)} to measurements of shape "
            f"{tuple(a_probe.shape)}, but y has shape {tuple(y.shape)}"
        )
    # an entry is measured if the operator reaches it, or if y holds data there (noise that
    # the physics does not mask still carries sigma^2 per entry)
    measured = (a_probe != 0) | (y != 0)
    return measured.flatten(1).sum(1).to(y.real.dtype if (y.is_floating_point() or y.is_complex()) else torch.float32)


@torch.no_grad()
def measured_count(y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    r"""Number :math:`m` of measured (real or complex) entries of ``y`` per example.

    An entry counts if the operator reaches it, :math:`(A z)_j \neq 0` for a random image
    :math:`z` (fixed seed, so the count is deterministic), **or** if :math:`y_j \neq 0`. The
    first rule finds the sampled k-space of MRI and the kept pixels of inpainting (deepinv masks
    their noise, so unmeasured entries of ``y`` are exactly 0); the second keeps the count right
    for physics whose noise is not masked (then every entry carries noise of variance
    :math:`\sigma^2` and belongs in the chi2). Blur and CT measure every entry. A physics with no
    adjoint (a deepinv ``LinearPhysics`` given only ``A``) has no image shape to probe with: its
    count is that of the non-zero entries of ``y``.

    A 2-channel MRI measurement counts its real and imaginary parts separately, as deepinv's
    Gaussian noise adds :math:`\sigma^2` to each: 4x Cartesian MRI of a :math:`64 \times 64`
    image has :math:`m = 2 \cdot 64^2 / 4`.

    :param torch.Tensor y: measurements ``(B, ...)``.
    :param deepinv.physics.Physics physics: the forward model that produced ``y``; the image
        shape is taken from ``physics.A_adjoint(y)``.
    :raises ValueError: ``y`` is not finite or does not have the shape ``physics.A`` produces.
    :return: float tensor ``(B,)``.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.05}, (64, 64))
        >>> y = physics(torch.rand(1, 2, 64, 64))
        >>> measured_count(y, physics)
        tensor([2048.])
    """
    check_measurements(y)
    return _count(y, physics)


def chi2(x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics, sigma: float | None = None) -> torch.Tensor:
    r"""Reduced chi-square of an image against the measurements:

    .. math::

        \chi^2(x) = \frac{\|A x - y\|_2^2}{m\,\sigma^2},

    with :math:`m` the number of measured entries (:func:`measured_count`). For the true image
    :math:`\mathbb E[\chi^2] = 1`, with spread :math:`\sqrt{2/m}`.

    * :math:`\chi^2 \approx 1`: the image explains the data down to the noise (consistent).
    * :math:`\chi^2 \gg 1`: the image contradicts the measurements (it is not what was scanned).
    * :math:`\chi^2 \ll 1`: the image reproduces the noise too (overfitting; e.g. the
      pseudo-inverse of MRI has :math:`\chi^2 = 0`).

    Consistency is necessary, not sufficient: structure in the null space of :math:`A` leaves
    :math:`\chi^2` unchanged (see :func:`~deepinv_tunable.audit.hallucination.support_fraction`).

    :param torch.Tensor x: images ``(B, C, H, W)`` in the physics' image domain.
    :param torch.Tensor y: measurements ``(B, ...)``.
    :param deepinv.physics.Physics physics: the forward model.
    :param float sigma: noise std :math:`\sigma`. Default ``None``: the std of the physics'
        Gaussian noise model.
    :raises ValueError: ``sigma`` not positive, or the physics has no noise level and no
        ``sigma`` is given; shapes that do not match the physics; non-finite inputs.
    :return: tensor ``(B,)``.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.05}, (64, 64))
        >>> x = torch.rand(1, 2, 64, 64)
        >>> y = physics(x)
        >>> round(chi2(x, y, physics).item(), 1)
        1.0
        >>> chi2(physics.A_dagger(y), y, physics).item() < 1e-6  # fits the noise exactly
        True
    """
    check_image_batch(x, "x")
    check_measurements(y)
    sigma, _ = resolve_sigma(y, physics, sigma, estimate=False)
    residual = residual_sq(x, y, physics)  # first: it names a shape mismatch between x and y
    with torch.no_grad():
        m = _count(y, physics)
    if bool((m == 0).any()):
        raise ValueError(f"y has no measured entries for example(s) {torch.nonzero(m == 0).flatten().tolist()}")
    return residual / (m * sigma**2)


#: Below this reduced chi-square a reconstruction reproduces more than half of the noise energy
#: of the measured entries: it fits the noise rather than explaining the data (zero-filled MRI
#: has 0). A regularised estimate keeps :math:`\chi^2 \approx 1 - \mathrm{df}/m` (``df`` its
#: effective degrees of freedom), so well-resolved high-SNR data legitimately sit somewhat
#: below 1, but not at a few tenths.
CHI2_OVERFIT = 0.5
#: Above this the residual holds more than twice the noise energy: the reconstruction leaves
#: measured signal unexplained (over-regularised, or not what was scanned). It is also the floor
#: of the generative samplers' fallback (:func:`~deepinv_tunable.solvers.guard.measurement_guard`).
CHI2_UNDERFIT = 2.0
#: Labels of :func:`fit_labels`.
FIT_LABELS = ("fits the noise", "consistent", "leaves signal in the residual")


def fit_labels(chi2_values: torch.Tensor | list[float]) -> list[str]:
    r"""Name the data-fit band of each reduced chi-square: ``"fits the noise"`` below
    :data:`CHI2_OVERFIT` (0.5), ``"consistent"`` up to :data:`CHI2_UNDERFIT` (2),
    ``"leaves signal in the residual"`` above. NaN (no noise level known) gives ``"unknown"``.

    :Examples:

        >>> fit_labels([0.09, 1.0, 7.5])
        ['fits the noise', 'consistent', 'leaves signal in the residual']
    """
    values = chi2_values.tolist() if isinstance(chi2_values, torch.Tensor) else list(chi2_values)
    labels = []
    for v in values:
        v = float(v)
        if math.isnan(v):
            labels.append("unknown")
        else:
            labels.append(FIT_LABELS[0] if v < CHI2_OVERFIT else FIT_LABELS[1] if v <= CHI2_UNDERFIT else FIT_LABELS[2])
    return labels


def try_chi2(x: torch.Tensor, y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor | None:
    """:func:`chi2` of ``x`` on the CPU, or ``None`` where it is not defined: the physics states no
    Gaussian noise level, or its measurements are not one real or complex tensor."""
    try:
        with torch.no_grad():
            return chi2(x, y, physics).detach().cpu()
    except (ValueError, TypeError):
        return None
