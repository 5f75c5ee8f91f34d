r"""Physics factory: a small validated config -> a deepinv ``Physics`` object, used as it is.

Supported ``kind`` values and their keys (all optional except ``kind``):

====================== ======================================================================
``mri``                single-coil Cartesian MRI (:class:`deepinv.physics.MRI`): ``acceleration``,
                       ``center_fraction``, ``mask`` (``gaussian`` | ``random`` | ``equispaced``)
``multicoil_mri``      :class:`deepinv.physics.MultiCoilMRI` with synthetic smooth coil maps:
                       the MRI keys plus ``n_coils``
``ct``                 parallel-beam CT (:class:`deepinv.physics.Tomography`): ``n_views``
``blur``               :class:`deepinv.physics.BlurFFT`: ``kernel`` (``gaussian`` | ``motion``),
                       ``blur_sigma`` (px), ``kernel_size``
``inpainting``         :class:`deepinv.physics.Inpainting`: ``keep_fraction``
``compressed_sensing`` :class:`deepinv.physics.CompressedSensing`: ``sampling_ratio``
``phase_retrieval``    :class:`deepinv.physics.RandomPhaseRetrieval`: ``oversampling`` (m / n)
``denoising``          :class:`deepinv.physics.Denoising`
====================== ======================================================================

Every kind also takes ``noise_sigma`` (std of additive Gaussian noise on the measurements, on
the scale of images normalised to ``[0, 1]``) and ``seed`` (masks, kernels, random matrices and
the noise generator are reproducible).

Images are real and single-channel, ``(B, 1, H, W)``. MRI operators work on deepinv's complex
convention ``(B, 2, H, W)`` (real, imaginary); phase retrieval on complex tensors.
:func:`to_physics_domain` and :func:`from_physics_domain` are the one place where an image
crosses between the two, so any single-channel prior works with any physics.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .checks import require_linear


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")
    noise_sigma: float = Field(0.0, ge=0.0, description="std of Gaussian measurement noise")
    seed: int = Field(0, description="seed of masks, kernels, matrices and noise")


class MRIConfig(_Base):
    kind: Literal["mri"]
    acceleration: float = Field(4.0, ge=1.0)
    center_fraction: float | None = Field(None, ge=0.0, le=1.0)
    mask: Literal["gaussian", "random", "equispaced"] = "gaussian"


class MultiCoilMRIConfig(MRIConfig):
    kind: Literal["multicoil_mri"]  # type: ignore[assignment]
    n_coils: int = Field(8, ge=1)


class CTConfig(_Base):
    kind: Literal["ct"]
    n_views: int = Field(60, ge=1)


class BlurConfig(_Base):
    kind: Literal["blur"]
    kernel: Literal["gaussian", "motion"] = "gaussian"
    blur_sigma: float = Field(1.5, gt=0.0)
    kernel_size: int = Field(15, ge=3)


class InpaintingConfig(_Base):
    kind: Literal["inpainting"]
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0)


class CompressedSensingConfig(_Base):
    kind: Literal["compressed_sensing"]
    sampling_ratio: float = Field(0.25, gt=0.0, le=1.0)


class PhaseRetrievalConfig(_Base):
    kind: Literal["phase_retrieval"]
    oversampling: float = Field(2.0, gt=0.0)


class DenoisingConfig(_Base):
    kind: Literal["denoising"]


PhysicsConfig = Annotated[
    MRIConfig
    | MultiCoilMRIConfig
    | CTConfig
    | BlurConfig
    | InpaintingConfig
    | CompressedSensingConfig
    | PhaseRetrievalConfig
    | DenoisingConfig,
    Field(discriminator="kind"),
]
_ADAPTER = TypeAdapter(PhysicsConfig)
PHYSICS_KINDS = (
    "mri",
    "multicoil_mri",
    "ct",
    "blur",
    "inpainting",
    "compressed_sensing",
    "phase_retrieval",
    "denoising",
)


def parse_physics_config(config: dict | BaseModel) -> BaseModel:
    """Validate a physics config (dict or model); raises pydantic's ``ValidationError``."""
    return config if isinstance(config, BaseModel) else _ADAPTER.validate_python(config)


def smooth_coil_maps(n_coils: int, img_size: tuple[int, int], width: float = 0.6) -> torch.Tensor:
    r"""Synthetic smooth coil sensitivities: coils evenly spaced on a circle around the image.

    Coil :math:`c` at angle :math:`\theta_c = 2\pi c / N` has magnitude
    :math:`\exp(-\|r - 1.5 (\cos\theta_c, \sin\theta_c)\|^2 / (2 w^2))` and a smooth linear phase;
    maps are normalised so that :math:`\sum_c |S_c|^2 = 1` at every pixel (then ``A^H A`` with a
    full mask is the identity).

    :param int n_coils: number of coils :math:`N`.
    :param tuple img_size: ``(H, W)``.
    :param float width: Gaussian width :math:`w` relative to the half field of view.
    :return: complex tensor ``(N, H, W)``.
    """
    h, w = img_size
    y = torch.linspace(-1, 1, h).view(-1, 1)
    x = torch.linspace(-1, 1, w).view(1, -1)
    maps = []
    for c in range(n_coils):
        theta = 2 * math.pi * c / n_coils
        cx, cy = 1.5 * math.cos(theta), 1.5 * math.sin(theta)
        magnitude = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
        phase = 0.5 * (x * math.cos(theta) + y * math.sin(theta))
        maps.append(torch.polar(magnitude, phase))
    maps = torch.stack(maps)
    return maps / maps.abs().pow(2).sum(0, keepdim=True).sqrt()


_MASK_GENERATORS = {
    "gaussian": dinv.physics.generator.GaussianMaskGenerator,
    "random": dinv.physics.generator.RandomMaskGenerator,
    "equispaced": dinv.physics.generator.EquispacedMaskGenerator,
}


def mri_mask(config: MRIConfig, img_size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Cartesian column mask ``(H, W)`` from deepinv's generators, reproducible from ``config.seed``."""
    rng = torch.Generator(device=device).manual_seed(config.seed)
    generator = _MASK_GENERATORS[config.mask](
        img_size=img_size,
        acceleration=config.acceleration,
        center_fraction=config.center_fraction,
        rng=rng,
        device=device,
    )
    return generator.step(batch_size=1, seed=config.seed)["mask"][0, 0]


def build_physics(
    config: dict | BaseModel, img_size: tuple[int, int], device: torch.device | str = "cpu"
) -> dinv.physics.Physics:
    r"""Build the deepinv physics described by ``config`` for ``(H, W)`` images.

    :param dict config: physics config (see the module docstring), e.g.
        ``{"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}``.
    :param tuple img_size: image size ``(H, W)``.
    :param str device: device of the operator's buffers.
    :raises pydantic.ValidationError: unknown ``kind``, unknown key or out-of-range value.
    :raises ValueError: a size the operator cannot handle (e.g. non-square CT images).
    :return: the deepinv physics with its noise model set.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics, to_physics_domain
        >>> physics = build_physics({"kind": "mri", "acceleration": 4}, (64, 64))
        >>> y = physics(to_physics_domain(torch.rand(1, 1, 64, 64), physics))
        >>> y.shape
        torch.Size([1, 2, 64, 64])
    """
    cfg = parse_physics_config(config)
    h, w = (int(s) for s in img_size)
    if h < 1 or w < 1:
        raise ValueError(f"img_size must be two positive integers (H, W), got {img_size}")
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    if isinstance(cfg, MultiCoilMRIConfig):
        physics = dinv.physics.MultiCoilMRI(
            mask=mri_mask(cfg, (h, w), device),
            coil_maps=smooth_coil_maps(cfg.n_coils, (h, w)).to(device),
            img_size=(h, w),
            device=device,
        )
    elif isinstance(cfg, MRIConfig):
        physics = dinv.physics.MRI(mask=mri_mask(cfg, (h, w), device), img_size=(h, w), device=device)
    elif isinstance(cfg, CTConfig):
        if h != w:
            raise ValueError(f"CT (deepinv Tomography) needs square images, got {h}x{w}; crop or pad to a square")
        physics = dinv.physics.Tomography(angles=cfg.n_views, img_width=w, circle=False, normalize=True, device=device)
    elif isinstance(cfg, BlurConfig):
        if cfg.kernel == "gaussian":
            kernel = dinv.physics.functional.blur.gaussian_blur(sigma=(cfg.blur_sigma, cfg.blur_sigma))
        else:
            gen = dinv.physics.generator.MotionBlurGenerator(
                psf_size=(cfg.kernel_size, cfg.kernel_size), rng=rng, device=device
            )
            kernel = gen.step(batch_size=1, seed=cfg.seed)["filter"]
        physics = dinv.physics.BlurFFT(img_size=(1, h, w), filter=kernel.to(device), device=device)
    elif isinstance(cfg, InpaintingConfig):
        physics = dinv.physics.Inpainting(img_size=(1, h, w), mask=float(cfg.keep_fraction), rng=rng, device=device)
    elif isinstance(cfg, CompressedSensingConfig):
        physics = dinv.physics.CompressedSensing(
            m=max(1, round(cfg.sampling_ratio * h * w)), img_size=(1, h, w), rng=rng, device=device
        )
    elif isinstance(cfg, PhaseRetrievalConfig):
        physics = dinv.physics.RandomPhaseRetrieval(
            m=max(1, round(cfg.oversampling * h * w)), img_size=(1, h, w), rng=rng, device=device
        )
    else:
        physics = dinv.physics.Denoising(device=device)
    physics.noise_model = _noise_model(cfg, device)
    return physics


def _noise_model(cfg: BaseModel, device: torch.device | str) -> dinv.physics.GaussianNoise:
    """The config's Gaussian measurement noise, its generator seeded by ``seed + 1``."""
    return dinv.physics.GaussianNoise(
        sigma=cfg.noise_sigma, rng=torch.Generator(device=device).manual_seed(cfg.seed + 1)
    )


def batched_mri(
    configs: list[dict | BaseModel], img_size: tuple[int, int], device: torch.device | str = "cpu"
) -> dinv.physics.MRI:
    r"""One single-coil deepinv MRI operator whose mask differs per example: example :math:`i` is
    acquired with ``configs[i]`` (e.g. a batch of mixed accelerations). All configs must be
    single-coil MRI with the same ``noise_sigma``.

    >>> physics = batched_mri([{"kind": "mri", "acceleration": a} for a in (2, 8)], (32, 32))
    >>> physics.mask.shape, [round(float(m), 2) for m in physics.mask.mean((1, 2, 3))]
    (torch.Size([2, 2, 32, 32]), [0.5, 0.12])
    """
    cfgs = [parse_physics_config(c) for c in configs]
    if not cfgs or any(type(c) is not MRIConfig for c in cfgs):
        raise ValueError(f"batched_mri needs a non-empty list of single-coil MRI configs, got {[c.kind for c in cfgs]}")
    sigmas = {c.noise_sigma for c in cfgs}
    if len(sigmas) != 1:
        raise ValueError(f"all configs of a batch must share noise_sigma, got {sorted(sigmas)}")
    h, w = (int(s) for s in img_size)
    mask = torch.stack([mri_mask(c, (h, w), device) for c in cfgs])[:, None]
    physics = dinv.physics.MRI(mask=mask, img_size=(h, w), device=device)
    physics.noise_model = _noise_model(cfgs[0], device)
    return physics


def physics_rows(
    physics: dinv.physics.Physics, rows: torch.Tensor, batch: int, probe: torch.Tensor
) -> dinv.physics.Physics | None:
    """``physics`` restricted to the examples ``rows`` of a batch of ``batch``, or ``None`` when it
    holds per-example operators it cannot be cut into (the caller then runs the whole batch).

    A single-coil MRI with one mask per example (:func:`batched_mri`) is rebuilt on those masks;
    any other operator is kept when it maps ``probe`` (``len(rows)`` images) to ``len(rows)``
    measurements, i.e. when it is shared by the whole batch.

    >>> physics = batched_mri([{"kind": "mri", "acceleration": a} for a in (2, 8)], (32, 32))
    >>> sub = physics_rows(physics, torch.tensor([1]), 2, torch.zeros(1, 2, 32, 32))
    >>> sub.mask.shape, round(float(sub.mask.mean()), 2)
    (torch.Size([1, 2, 32, 32]), 0.12)
    """
    if len(rows) == batch:
        return physics
    mask = getattr(physics, "mask", None)
    if type(physics) is dinv.physics.MRI and isinstance(mask, torch.Tensor) and mask.shape[0] == batch > 1:
        sub = dinv.physics.MRI(mask=mask[rows], img_size=physics.img_size, device=mask.device)
        sub.noise_model = physics.noise_model
        return sub
    try:
        with torch.no_grad():
            shared = physics.A(probe).shape[0] == len(rows)
    except (RuntimeError, AssertionError, ValueError):  # deepinv refuses mismatched batches in several ways
        shared = False
    return physics if shared else None


def is_complex_mri(physics: dinv.physics.Physics) -> bool:
    """Whether ``physics`` expects deepinv's 2-channel complex images (MRI operators)."""
    return isinstance(physics, (dinv.physics.MRI, dinv.physics.MultiCoilMRI))


def is_phase_retrieval(physics: dinv.physics.Physics) -> bool:
    return isinstance(physics, dinv.physics.PhaseRetrieval)


def magnitude(x: torch.Tensor) -> torch.Tensor:
    r"""Magnitude of a deepinv complex image ``(B, 2, H, W)`` -> ``(B, 1, H, W)``:
    :math:`\sqrt{x_\text{re}^2 + x_\text{im}^2}`. Complex dtypes are accepted too."""
    if torch.is_complex(x):
        return x.abs()
    if x.shape[1] != 2:
        raise ValueError(f"expected a complex image with 2 channels (real, imaginary), got shape {tuple(x.shape)}")
    return torch.linalg.vector_norm(x, dim=1, keepdim=True)


def to_physics_domain(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """A real single-channel image ``(B, 1, H, W)`` as the input ``physics`` expects:
    2 channels with zero imaginary part for MRI, a complex tensor for phase retrieval,
    unchanged otherwise. Images already in that domain are returned as they are."""
    if is_complex_mri(physics):
        return x if x.shape[1] == 2 else torch.cat([x, torch.zeros_like(x)], dim=1)
    if is_phase_retrieval(physics):
        return x.to(torch.cfloat)
    return x


def physics_domain_adjoint(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """Adjoint of :func:`to_physics_domain` (a linear embedding of real images): the real
    channel of a 2-channel MRI image, the real part of a complex one, ``x`` otherwise."""
    if is_complex_mri(physics):
        return x[:, :1]
    return x.real if torch.is_complex(x) else x


def from_physics_domain(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """Inverse of :func:`to_physics_domain` for display and metrics: the magnitude for MRI
    (and complex phase-retrieval estimates), unchanged otherwise."""
    if is_complex_mri(physics) or torch.is_complex(x):
        return magnitude(x)
    return x


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
    :func:`to_physics_domain`) or already in the physics' domain; ``where`` restricts the sum to
    some entries (a boolean mask shaped like ``y``, e.g. held-out ones). With
    ``differentiable=True`` gradients flow to ``x`` (for objectives); by default none are tracked.
    With ``image_norm=True`` the residual is measured in the norm of :func:`measurement_energy`,
    the one in which a measurement error weighs what the image error behind it weighs.

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


def measurement_baseline(y: torch.Tensor, physics: dinv.physics.Physics, fbp: bool = False) -> torch.Tensor:
    r"""The estimate a reader gets from the measurements alone, in the physics' image domain:
    :math:`A^\dagger y` (zero-filled MRI, least-squares pseudo-inverse for CT, zero-filled
    inpainting), or :math:`y` itself for blur and denoising. ``fbp=True`` gives the filtered
    back-projection for CT (about 50x faster than least squares, noisier). ``y`` is not modified.

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


def physics_device(physics: dinv.physics.Physics) -> torch.device:
    """Device of the physics' buffers and parameters (CPU if it has none)."""
    for tensor in (*physics.buffers(), *physics.parameters()):
        return tensor.device
    return torch.device("cpu")


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


# ------------------------------------------------------------------------------ noise facts
#: MAD-to-std factor of a Gaussian: :math:`\sigma = \mathrm{median}|n| / 0.6745`.
_MAD_TO_STD = 0.6744897501960817


#: noise models the package's solvers handle: their data terms are Gaussian log-likelihoods
_GAUSSIAN_NOISE_MODELS = ("GaussianNoise", "ZeroNoise")
#: :func:`check_unit_range` refuses measurements whose back-projection has an RMS above this
#: (an image in [0, 1] gives at most 1; [0, 255] data give about 100)
UNIT_RANGE_RMS_LIMIT = 2.0


def check_gaussian_noise(physics: dinv.physics.Physics, who: str) -> None:
    """Refuse a physics whose noise model is not Gaussian with one level for the batch (Poisson,
    Gamma, uniform, random-level Gaussian...): the solvers' data terms assume it, and would be
    silently wrong.

    >>> check_gaussian_noise(build_physics({"kind": "blur", "noise_sigma": 0.01}, (8, 8)), "TVPGD")
    """
    noise = getattr(physics, "noise_model", None)
    if noise is not None and type(noise).__name__ not in _GAUSSIAN_NOISE_MODELS:
        raise ValueError(
            f"{who} assumes Gaussian measurement noise (deepinv GaussianNoise or ZeroNoise); the physics has "
            f"{type(noise).__name__}. Give it a Gaussian noise model of the same std, or use a solver made for it"
        )
    noise_sigma(physics, default=0.0)  # refuses per-image levels


def check_unit_range(y: torch.Tensor, physics: dinv.physics.Physics, who: str) -> None:
    r"""Refuse measurements of images far outside [0, 1], the range every shipped network was
    trained on (e.g. [0, 255] data): the RMS of :math:`A^\top y / \|A\|^2` is at most the
    image's RMS (plus a noise term), so above :data:`UNIT_RANGE_RMS_LIMIT` the image cannot lie in
    [0, 1]. Linear physics only (others are not checked); costs 10 power iterations.
    """
    if not isinstance(physics, dinv.physics.LinearPhysics) or not isinstance(y, torch.Tensor):
        return
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rough norm is enough here: no "not converged" noise
        back = physics.A_adjoint(y)
        norm_sq = operator_norm_sq(
            physics, tuple(back.shape), max_iter=10, rel_tol=1e-2, device=back.device, dtype=back.dtype
        )
        rms = float(back.abs().pow(2).flatten(1).mean(1).sqrt().max()) / max(norm_sq, 1e-12)
    if rms > UNIT_RANGE_RMS_LIMIT:
        raise ValueError(
            f"{who} expects images in [0, 1] (deepinv's convention, and the range its prior was trained on); "
            f"these measurements back-project to an RMS of {rms:.3g} (at most 1 in range). "
            "Rescale the data (e.g. divide by 255, or by the volume's robust maximum) and the noise level with it"
        )


def check_measurement_shape(y: torch.Tensor, physics: dinv.physics.Physics, who: str) -> None:
    r"""Refuse measurements the physics cannot have produced: ``y`` must have the shape of
    :math:`A A^\top y`. A 1-channel ``y`` for deepinv's 2-channel MRI broadcasts through
    :math:`A^\top` without an error and gives a wrong image (TV: 23.5 to 15.9 dB); any other
    wrong shape would end in torch's raw shape error inside the solver."""
    if not isinstance(physics, dinv.physics.LinearPhysics):
        return
    try:
        with torch.no_grad():
            expected = tuple(physics.A(physics.A_adjoint(y)).shape)
    except RuntimeError as err:
        raise ValueError(
            f"{who}: measurements y of shape {tuple(y.shape)} do not fit the physics "
            f"{type(physics).__name__} ({str(err).splitlines()[0]})"
        ) from None
    if expected != tuple(y.shape):
        raise ValueError(
            f"{who}: measurements y of shape {tuple(y.shape)} do not fit the physics {type(physics).__name__}, "
            f"whose measurements have shape {expected}"
            + (" (deepinv's MRI takes complex data as 2 channels: real, imaginary)" if is_complex_mri(physics) else "")
        )


def physics_in_dtype(physics: dinv.physics.Physics, dtype: torch.dtype) -> dinv.physics.Physics:
    """``physics`` when its floating tensors are all ``dtype``; otherwise a copy cast to it (the
    caller's object is never modified). A mask built from NumPy is float64; a solver computing
    in float32 would end in a raw dtype error at its first product."""
    tensors = [t for t in (*physics.parameters(), *physics.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype for t in tensors):
        return physics
    return copy.deepcopy(physics).to(dtype)


def noise_sigma(physics: dinv.physics.Physics, default: float | None = None) -> float:
    """Std of the physics' Gaussian noise model (``default`` when it has none or it is 0).

    >>> round(noise_sigma(build_physics({"kind": "denoising", "noise_sigma": 0.02}, (8, 8))), 6)
    0.02
    """
    sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
    if sigma is not None:
        values = torch.as_tensor(sigma).flatten()
        if values.numel() > 1 and not bool((values == values[0]).all()):
            raise ValueError(
                f"per-image noise levels are not supported: the physics' noise sigma holds {values.numel()} "
                f"different values ({values[:4].tolist()}...); reconstruct each image with its own physics"
            )
    value = float(torch.as_tensor(sigma).flatten()[0]) if sigma is not None else 0.0
    if value > 0:
        return value
    if default is None:
        raise ValueError(
            "the physics states no Gaussian noise level; give it noise_model=deepinv.physics.GaussianNoise(sigma) "
            "with the measurement noise std (sigma > 0)"
        )
    return float(default)


def _mad_std(values: torch.Tensor) -> torch.Tensor:
    """Robust std of zero-mean samples along the last axis: median absolute value / 0.6745."""
    return values.abs().median(dim=-1).values / _MAD_TO_STD


def _mad_std_away_from_edges(band: torch.Tensor, steps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Robust std of ``band`` (B, N) where ``valid``, recomputed once without the positions whose
    neighbouring first differences ``steps`` (B, N) exceed 4 noise stds: edges put signal into
    every finest-scale band, while a pure-noise difference exceeds that bound once in 10^4."""
    out = []
    for i in range(band.shape[0]):
        values = band[i][valid[i]]
        if values.numel() < 16:
            raise ValueError(
                f"cannot estimate the noise of example {i}: fewer than 16 fully observed "
                "neighbourhoods; pass sigma=... (the measurement noise std)"
            )
        first = _mad_std(values)
        flat = valid[i] & (steps[i] <= 4 * math.sqrt(2) * first)
        out.append(_mad_std(band[i][flat]) if int(flat.sum()) >= 16 else first)
    return torch.stack(out).float()


def _hermitian_noise(y: torch.Tensor) -> torch.Tensor:
    r"""Per-example noise std of single-coil k-space ``(B, 2, H, W)`` of a **real** image.

    The k-space of a real image is Hermitian, :math:`Y(k) = \overline{Y(-k)}`, so wherever both
    :math:`k` and :math:`-k` are sampled, :math:`Y(k) - \overline{Y(-k)} = n(k) - \overline{n(-k)}`
    is pure noise of std :math:`\sqrt2\,\sigma` per component: no signal leaks into the estimate.
    """
    yc = torch.complex(y[:, 0].double(), y[:, 1].double())
    h, w = yc.shape[-2:]
    # index of -k on deepinv's centred (fftshift) grid; for even sizes also the uncentred one
    rows = (h - torch.arange(h)) % h if h % 2 == 0 else h - 1 - torch.arange(h)
    cols = (w - torch.arange(w)) % w if w % 2 == 0 else w - 1 - torch.arange(w)
    mirror = yc[:, rows][:, :, cols].conj()
    pairs = (yc != 0) & (mirror != 0)
    # each pair appears twice (k and -k) with the same |difference|: harmless for a median
    out = []
    for b in range(yc.shape[0]):
        d = (yc[b] - mirror[b])[pairs[b]]
        if d.numel() < 16:
            raise ValueError(
                f"cannot estimate the noise of MRI example {b}: only {d.numel()} k-space samples have "
                "a sampled mirror partner; pass sigma=... (the measurement noise std)"
            )
        out.append(_mad_std(torch.cat([d.real, d.imag])) / math.sqrt(2))
    return torch.stack(out).float()


def _difference_noise(y: torch.Tensor, dim: int, order: int) -> torch.Tensor:
    """Per-example noise std from ``order``-th finite differences of ``y`` along ``dim``, normalised
    so that white noise keeps its std (smooth signal cancels, the noise does not), away from kinks."""
    coeffs = [(-1) ** (order - j) * math.comb(order, j) for j in range(order + 1)]
    y = y.double()
    n = y.shape[dim]
    d = sum(c * y.narrow(dim, j, n - order) for j, c in enumerate(coeffs))
    d = d / math.sqrt(sum(c * c for c in coeffs))
    first = (y.narrow(dim, 1, n - 1) - y.narrow(dim, 0, n - 1)).abs()
    # the largest first difference inside each difference stencil
    steps = torch.stack([first.narrow(dim, j, n - order) for j in range(order)]).amax(0)
    return _mad_std_away_from_edges(d.flatten(1), steps.flatten(1), torch.ones_like(d, dtype=torch.bool).flatten(1))


def _image_noise(y: torch.Tensor) -> torch.Tensor:
    r"""Per-example noise std of image-like ``y`` from its separable second differences
    :math:`(\delta^2_h \otimes \delta^2_w)\, y / 6` (kernel ``[1, -2, 1]`` per axis, unit gain on white
    noise), a finest-scale diagonal band that also cancels linear trends, so blurred edges leak
    less into it than into the Haar band of Donoho's rule. 3x3 neighbourhoods holding an exact
    zero (masked pixels) are skipped."""
    y = y.double()  # (B, C, H, W): estimate_noise_sigma only sends 4-D image-like measurements
    kernel = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    kernel = (kernel[:, None] * kernel[None, :] / 6.0)[None, None].repeat(y.shape[1], 1, 1, 1)
    band = torch.nn.functional.conv2d(y, kernel, groups=y.shape[1]).flatten(1)
    observed = torch.nn.functional.conv2d((y != 0).double(), torch.ones_like(kernel), groups=y.shape[1])
    valid = (observed == 9).flatten(1)
    dh, dv = (y[..., :, 1:] - y[..., :, :-1]).abs(), (y[..., 1:, :] - y[..., :-1, :]).abs()
    # the largest first difference inside each 3x3 stencil
    steps = torch.maximum(
        dh.unfold(-1, 2, 1).amax(-1).unfold(-2, 3, 1).amax(-1), dv.unfold(-2, 2, 1).amax(-1).unfold(-1, 3, 1).amax(-1)
    )
    return _mad_std_away_from_edges(band, steps.flatten(1), valid)


def estimate_noise_sigma(y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    r"""Std :math:`\hat\sigma` of additive white Gaussian noise in ``y``, per example ``(B,)``,
    from the measurements alone (for physics that do not state their noise level).

    Robust (median-absolute-deviation) estimates on a transform of :math:`y` where the signal
    nearly vanishes and the noise does not:

    - **single-coil MRI** of a real image: differences of k-space samples with their Hermitian
      mirror, :math:`Y(k) - \overline{Y(-k)}`, which hold no signal at all (an image with a phase
      inflates the estimate: pass ``sigma`` then);
    - **CT**: third differences of the sinogram along the detector, where projections are smooth;
    - **blur, denoising, inpainting** and other image-like measurements: a finest-scale diagonal
      band (separable second differences), the median rule of Donoho and Johnstone (1994); image
      texture finer than a pixel adds to it, so on real photographs below
      :math:`\sigma \approx 0.02` it is an upper bound.

    :param torch.Tensor y: measurements, real ``(B, ...)``.
    :param deepinv.physics.Physics physics: the forward operator that produced ``y``.
    :return: ``(B,)`` tensor of estimated noise stds.

    >>> physics = build_physics({"kind": "blur", "noise_sigma": 0.05}, (64, 64))
    >>> x = torch.zeros(1, 1, 64, 64); x[..., 16:48, 16:48] = 1
    >>> round(float(estimate_noise_sigma(physics(x), physics)[0]), 2)
    0.05

    Reference: D. L. Donoho and I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
    Biometrika 1994.
    """
    if not isinstance(y, torch.Tensor) or torch.is_complex(y) or y.dim() < 2:
        raise ValueError(f"y must be a real tensor (B, ...), got {type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
    if isinstance(physics, dinv.physics.MultiCoilMRI):
        raise ValueError(
            "cannot estimate the noise of multi-coil MRI (coil images are complex); "
            "pass sigma=... (the measurement noise std)"
        )
    with torch.no_grad():
        if isinstance(physics, dinv.physics.MRI):
            if y.dim() != 4 or y.shape[1] != 2:
                raise ValueError(f"expected single-coil k-space (B, 2, H, W), got shape {tuple(y.shape)}")
            return _hermitian_noise(y)
        if isinstance(physics, dinv.physics.Tomography):
            # sinogram (B, C, detectors, angles): smooth along the detector axis
            return _difference_noise(y, dim=-2, order=3)
        if y.dim() == 4 and min(y.shape[-2:]) >= 4:
            return _image_noise(y)
        raise ValueError(
            f"cannot estimate the noise of {type(physics).__name__} measurements of shape "
            f"{tuple(y.shape)}; pass sigma=... (the measurement noise std)"
        )


def mri_zero_filled_error(y: torch.Tensor, physics: dinv.physics.Physics, sigma: float | None = None) -> torch.Tensor:
    r"""Per-example RMS error of the zero-filled image of single-coil MRI, from the measurements
    alone: the energy of the unsampled k-space, predicted from the radial power spectrum of the
    sampled one, plus the noise of the sampled one,

    .. math::

        \hat e^2 = \frac{1}{2HW}\Big(\sum_{k \notin \Omega} \hat P(|k|) + 2\sigma^2 |\Omega|\Big),
        \qquad \hat P(r) = \operatorname{mean}_{k \in \Omega,\, |k| \approx r} |Y(k)|^2 - 2\sigma^2,

    :math:`\Omega` the sampled set; radii with no sample take a power law :math:`\log \hat P = a +
    b \log r` fitted to the others. Images' spectra are close to isotropic, which is what makes a
    Cartesian mask's sampled lines speak for the missing ones at the same radius. deepinv's
    orthonormal, centred FFT makes k-space energy equal image energy; the RMS is over the
    2-channel image, as the measurement-only estimate is compared in the physics' domain.

    :param torch.Tensor y: k-space ``(B, 2, H, W)``.
    :param deepinv.physics.Physics physics: single-coil :class:`~deepinv.physics.MRI`.
    :param float sigma: noise std. Default ``None``: the physics' (else estimated from ``y``).
    :return: float tensor ``(B,)``.
    """
    if not isinstance(physics, dinv.physics.MRI) or isinstance(physics, dinv.physics.MultiCoilMRI):
        raise ValueError(f"mri_zero_filled_error needs a single-coil deepinv MRI physics, got {type(physics).__name__}")
    if sigma is None:
        sigma_b = torch.as_tensor(noise_sigma(physics, default=0.0)).expand(y.shape[0])
        if float(sigma_b[0]) == 0:
            sigma_b = estimate_noise_sigma(y, physics)
    else:
        sigma_b = torch.full((y.shape[0],), float(sigma))
    h, w = y.shape[-2:]
    # deepinv keeps a mask per example as (B, 2, H, W), one for the batch as (1, 2, H, W)
    masks = physics.mask.reshape(physics.mask.shape[0], -1, h, w)[:, 0] != 0
    if masks.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"the MRI physics holds {masks.shape[0]} masks for a batch of {y.shape[0]} measurements")
    ky = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    kx = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    radius = (ky[:, None] ** 2 + kx[None, :] ** 2).sqrt() * max(h, w)
    bins = radius.round().long()
    n_bins = int(bins.max()) + 1
    out = []
    for b in range(y.shape[0]):
        mask = masks[b if masks.shape[0] > 1 else 0]
        power = (y[b, 0].double() ** 2 + y[b, 1].double() ** 2) - 2 * float(sigma_b[b]) ** 2
        total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins[mask], power[mask])
        count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins[mask], torch.ones_like(power[mask]))
        seen = count > 0
        spectrum = torch.where(seen, total / count.clamp_min(1), torch.zeros_like(total)).clamp_min(1e-12)
        fit = seen & (torch.arange(n_bins) > 0)
        if int(fit.sum()) >= 2 and not bool(seen.all()):
            log_r, log_p = torch.arange(n_bins, dtype=torch.float64)[fit].log(), spectrum[fit].log()
            slope = ((log_r - log_r.mean()) * (log_p - log_p.mean())).sum() / (log_r - log_r.mean()).pow(2).sum()
            intercept = log_p.mean() - slope * log_r.mean()
            r = torch.arange(n_bins, dtype=torch.float64).clamp_min(1)
            spectrum = torch.where(seen, spectrum, (intercept + slope * r.log()).exp())
        missing = spectrum[bins[~mask]].sum()
        noise = 2 * float(sigma_b[b]) ** 2 * int(mask.sum())
        out.append(((missing + noise) / (2 * h * w)).sqrt())
    return torch.stack(out).float()
