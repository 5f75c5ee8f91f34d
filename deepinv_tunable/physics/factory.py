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
:func:`~deepinv_tunable.physics.domain.to_physics_domain` and :func:`~deepinv_tunable.physics.domain.from_physics_domain` are the one place where an image
crosses between the two, so any single-channel prior works with any physics.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import deepinv as dinv
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


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
