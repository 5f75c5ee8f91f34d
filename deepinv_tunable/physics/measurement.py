"""Quantities of the measurements: residuals and their energy, the measurement baseline (the
image a solver must explain the data at least as well as), and the operator norm."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import deepinv as dinv
import torch

from ..utils.checks import require_linear
from .domain import from_physics_domain, physics_device, to_physics_domain


def residual_sq(
    x: torch.Tensor,
    y: torch.Tensor,
    physics: dinv.physics.Physics,
    where: torch.Tensor | None = None,
    differentiable: bool = False,
    image_norm: bool = False,
) -> torch.Tensor:
    r"""Per-example squared data residual :math:`\|(A x - y)_W\|^2`, ``(B,)``: how well an estimate
    explains the measurements. ``x`` may be a real single-channel image (embedded by
    :func:`~deepinv_tunable.physics.domain.to_physics_domain`) or already in the physics' domain; ``where`` restricts the sum to
    some entries (a boolean mask shaped like ``y``, e.g. held-out ones). With
    ``differentiable=True`` gradients flow to ``x`` (for objectives); by default none are tracked.
    With ``image_norm=True`` the residual is measured in the norm of :func:`measurement_energy`,
    the one in which a measurement error weighs what the image error behind it weighs.

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> physics = build_physics({"kind": "denoising"}, (2, 2))
    >>> residual_sq(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), physics)
    tensor([4.])
    """
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        ax = physics.A(to_physics_domain(x, physics))
        if not isinstance(ax, torch.Tensor):  # e.g. a deepinv TensorList from stacked physics
            raise TypeError(
                f"expected a physics whose measurements are one tensor, got {type(ax).__name__} "
                f"from {type(physics).__name__}.A"
            )
        if ax.shape != y.shape:
            raise ValueError(
                f"A(x) has shape {tuple(ax.shape)} but y has shape {tuple(y.shape)}; expected x as a real "
                "single-channel image or in the physics' image domain (e.g. 2 channels for MRI) at the measured size"
            )
        r = ax - y
        if where is not None:
            r = r * where
        return measurement_energy(r, physics) if image_norm else r.abs().pow(2).flatten(1).sum(1)


def measurement_energy(r: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    r"""Per-example energy of a measurement-domain residual ``r``, ``(B,)``, weighted so that it
    tracks the energy of the image error behind it.

    For parallel-beam CT (:class:`deepinv.physics.Tomography`, sinograms ``(B, C, detectors,
    views)``) the Fourier slice theorem gives :math:`\|x\|^2 = c \sum_\theta \int |\omega|\,
    |\widehat{P_\theta x}(\omega)|^2 d\omega`: each view's residual is weighted by the ramp
    :math:`|\omega|` along the detector axis (zero-padded to twice its length, as filtered
    back-projection does). Projections integrate fine detail away, so the plain norm hardly sees
    an error of high spatial frequency: scored in it, a held-out-view fit preferred a
    reconstruction 1.2 dB worse on a training subject. For every other physics (unitary MRI
    Fourier transforms, masks, denoising) the Euclidean norm :math:`\|r\|^2` (Parseval).

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> physics = build_physics({"kind": "denoising"}, (2, 2))
    >>> measurement_energy(torch.ones(1, 1, 2, 2), physics)
    tensor([4.])
    """
    if isinstance(physics, dinv.physics.Tomography):
        n = 2 * r.shape[-2]
        spectrum = torch.fft.fft(r, n=n, dim=-2)
        ramp = torch.fft.fftfreq(n, device=r.device).abs().reshape(-1, 1)
        # divided by the mean ramp weight, so white residuals keep their plain energy
        return (ramp * spectrum.abs().pow(2)).flatten(1).sum(1) / (n * float(ramp.mean()))
    return r.abs().pow(2).flatten(1).sum(1)


def _shows_the_image(physics: dinv.physics.Physics) -> bool:
    r"""Whether ``y`` is itself an image estimate (blur, denoising), where :math:`A^\dagger` would
    be an unregularised inverse filter that amplifies the noise without bound."""
    return isinstance(physics, (dinv.physics.BlurFFT, dinv.physics.Blur, dinv.physics.Denoising))


def keeps_what_it_measures(y: torch.Tensor, physics: dinv.physics.Physics, rtol: float = 1e-3) -> bool:
    r"""Whether :math:`A A^\top y = y`: the operator samples coefficients of an orthonormal basis
    (masked Fourier MRI, inpainting, denoising), so :math:`A^\top A` is a projection and a proximal
    data step only re-weights the measured coefficients. Blur and CT have a continuous spectrum:
    there the proximal step divides by small singular values and amplifies the noise.

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> mri = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (16, 16))
    >>> blur = build_physics({"kind": "blur", "blur_sigma": 1.5, "noise_sigma": 0.01}, (16, 16))
    >>> x = torch.rand(1, 1, 16, 16)
    >>> keeps_what_it_measures(mri(torch.cat([x, 0 * x], 1)), mri), keeps_what_it_measures(blur(x), blur)
    (True, False)
    """
    if not isinstance(physics, dinv.physics.LinearPhysics):
        return False
    with torch.no_grad():
        again = physics.A(physics.A_adjoint(y))
        return bool((again - y).abs().pow(2).sum() <= rtol**2 * y.abs().pow(2).sum())


def measurement_baseline(y: torch.Tensor, physics: dinv.physics.Physics, fbp: bool = False) -> torch.Tensor:
    r"""The estimate a reader gets from the measurements alone, in the physics' image domain:
    :math:`A^\dagger y` (zero-filled MRI, least-squares pseudo-inverse for CT, zero-filled
    inpainting), or :math:`y` itself for blur and denoising. ``fbp=True`` gives the filtered
    back-projection for CT (about 50x faster than least squares, noisier). ``y`` is not modified.

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> physics = build_physics({"kind": "denoising"}, (2, 2))
    >>> y = torch.ones(1, 1, 2, 2)
    >>> torch.equal(measurement_baseline(y, physics), y)
    True
    """
    with torch.no_grad():
        if _shows_the_image(physics):
            return y.clone()
        if fbp and isinstance(physics, dinv.physics.Tomography):
            return physics.A_dagger(y, fbp=True)
        return physics.A_dagger(y)


def measurement_estimate(y: torch.Tensor, physics: dinv.physics.Physics, fbp: bool = False) -> torch.Tensor:
    """:func:`measurement_baseline` as a real single-channel image clipped to [0, 1] (the
    magnitude for MRI): the measurement-only start of the package's solvers and estimators."""
    return from_physics_domain(measurement_baseline(y, physics, fbp=fbp), physics).real.clamp(0, 1)


#: seed of the power method's start (:func:`operator_norm_sq`): deterministic norms
_POWER_SEED = 0


def operator_norm_sq(
    physics: dinv.physics.LinearPhysics,
    image_shape: Sequence[int],
    *,
    max_iter: int = 500,
    rel_tol: float = 1e-5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> float:
    r"""Squared operator norm :math:`\|A\|_2^2 = \lambda_\max(A^\top A)` by deepinv's power method.

    Uses ``physics.compute_sqnorm`` (deepinv >= 0.4; ``physics.compute_norm`` otherwise). In
    deepinv 0.5, ``compute_norm(x0)`` returns the same squared norm :math:`\|A^\top A\|_2` by
    default (with a deprecation warning; ``squared=False`` gives :math:`\|A\|_2`). Two details
    of deepinv's power method are handled here:

    * it starts from ``torch.randn_like(x0)`` on the global random stream (the ``rng`` argument
      is not passed on), so the call runs in a forked random state with a fixed seed:
      deterministic, and the caller's random state is left as it was;
    * its stopping rule compares successive estimates in absolute terms, so a 20-iteration
      estimate first sets the scale and the tolerance becomes ``rel_tol`` times it.

    The Rayleigh quotient approaches :math:`\|A\|^2` from below; for a Gaussian blur its error
    after :math:`k` iterations is about :math:`1/(2k)` at worst, and the default stops around
    :math:`k \approx 250` (well under 1 %). Projections (masked MRI, inpainting) converge in 2
    iterations.

    :param deepinv.physics.LinearPhysics physics: a linear forward model.
    :param tuple image_shape: ``(C, H, W)``, or ``(B, C, H, W)`` for physics with per-example
        parameters (then the norm is the largest over the batch).
    :param int max_iter: most power iterations. Default 500.
    :param float rel_tol: stopping tolerance on the change of the estimate, relative to it.
        Default ``1e-5``.
    :param device: device of the probe image. Default: that of the physics' buffers (CPU if none).
    :param torch.dtype dtype: dtype of the probe image. Default ``torch.float32``.
    :raises ValueError: a shape that is not 3 or 4 positive sizes; ``max_iter < 1``; ``rel_tol <= 0``.
    :return: :math:`\|A\|_2^2` as a float.

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "blur", "blur_sigma": 1.5}, (32, 32))
        >>> round(operator_norm_sq(physics, (1, 32, 32)), 2)  # the DC gain of a normalised blur
        1.0
    """
    require_linear(physics, "the operator norm")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) or (B, C, H, W) with positive sizes, got {tuple(image_shape)}")
    if max_iter < 1 or not rel_tol > 0:
        raise ValueError(f"expected max_iter >= 1 and rel_tol > 0, got max_iter={max_iter}, rel_tol={rel_tol}")
    shape = shape if len(shape) == 4 else (1, *shape)
    device = torch.device(device) if device is not None else physics_device(physics)
    x0 = torch.zeros(shape, device=device, dtype=dtype)

    def power(iters: int, tol: float) -> float:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.random.default_generator.manual_seed(_POWER_SEED)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(_POWER_SEED)
            if hasattr(physics, "compute_sqnorm"):
                value = physics.compute_sqnorm(x0, max_iter=iters, tol=tol, verbose=False)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = physics.compute_norm(x0, max_iter=iters, tol=tol, verbose=False)
        return float(torch.as_tensor(value).real)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Power iteration: convergence not reached")
        rough = power(20, 0.0)  # tol 0: exactly 20 iterations, only to set the scale
    if rough <= 0:
        return 0.0
    return power(max_iter, rel_tol * rough)
