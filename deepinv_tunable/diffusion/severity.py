r"""Degradations over a range of severities, and the severity audit (Flash-Diffusion :footcite:p:`fabian2023adapt`).

One place draws degraded inputs for the severity encoder, in training and in evaluation:

* :class:`SeverityRanges` says which degradations and how severe: MRI acceleration, CT views,
  Gaussian blur std (0 means no blur: denoising only), measurement noise std;
* :func:`sample_degradations` draws one :class:`Degradation` per example;
* :func:`degrade` simulates each example's measurements with the physics factory
  (:func:`~deepinv_tunable.physics.factory.build_physics`) and returns the measurement-only estimate
  :math:`\tilde x` (zero-filled MRI magnitude, CT filtered back-projection, the blurred image)
  the encoder sees; :class:`~deepinv_tunable.solvers.FlashDiffusion` gives the encoder the same.

:func:`severity_audit` relates the encoder's :math:`\hat\sigma^2` to the true degradation level
over a sweep (Spearman rank correlation per kind) and lists the samples the encoder finds
surprisingly easy or hard for their level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import spearmanr

from ..physics import build_physics, measurement_estimate, to_physics_domain

Kind = Literal["mri", "ct", "blur"]
#: +1 where a larger level is a worse degradation (acceleration, blur std); -1 for CT views.
SEVERITY_DIRECTION = {"mri": 1.0, "ct": -1.0, "blur": 1.0}
_LEVEL_NAME = {"mri": "acceleration", "ct": "n_views", "blur": "blur_sigma"}


class SeverityRanges(BaseModel):
    """Which degradations are drawn, and over which severities (inclusive ranges)."""

    model_config = ConfigDict(extra="forbid")
    kinds: list[Kind] = Field(default_factory=lambda: ["mri", "ct", "blur"], min_length=1)
    mri_acceleration: tuple[float, float] = (2.0, 12.0)
    ct_views: tuple[int, int] = (20, 180)
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    noise_sigma: tuple[float, float] = (0.0, 0.03)

    @model_validator(mode="after")
    def _ordered(self) -> SeverityRanges:
        for name in ("mri_acceleration", "ct_views", "blur_sigma", "noise_sigma"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}")
        if self.mri_acceleration[0] < 1 or self.ct_views[0] < 1:
            raise ValueError(
                f"MRI acceleration must be >= 1 and CT views >= 1, got {self.mri_acceleration}, {self.ct_views}"
            )
        return self

    def level_range(self, kind: str) -> tuple[float, float]:
        return {"mri": self.mri_acceleration, "ct": self.ct_views, "blur": self.blur_sigma}[kind]


@dataclass(frozen=True)
class Degradation:
    """One simulated acquisition: ``kind`` at ``level`` (acceleration, views or blur std) with
    measurement noise ``noise_sigma``; ``seed`` fixes the mask / noise."""

    kind: str
    level: float
    noise_sigma: float
    seed: int = 0

    def __post_init__(self):
        if self.kind not in SEVERITY_DIRECTION:
            raise ValueError(f"unknown degradation kind '{self.kind}'; expected one of {list(SEVERITY_DIRECTION)}")
        least = {"mri": 1.0, "ct": 1.0, "blur": 0.0}[self.kind]
        if not self.level >= least or self.noise_sigma < 0:
            raise ValueError(
                f"{self.kind} level ({_LEVEL_NAME[self.kind]}) must be >= {least} and noise_sigma >= 0, "
                f"got level={self.level}, noise_sigma={self.noise_sigma}"
            )

    def physics_config(self) -> dict:
        """The :func:`~deepinv_tunable.physics.factory.build_physics` config of this degradation."""
        base = {"noise_sigma": self.noise_sigma, "seed": self.seed}
        if self.kind == "mri":
            return {"kind": "mri", "acceleration": self.level, **base}
        if self.kind == "ct":
            return {"kind": "ct", "n_views": int(self.level), **base}
        # blur; a blur std this small is a delta kernel: plain denoising
        return (
            {"kind": "blur", "blur_sigma": self.level, **base} if self.level >= 0.1 else {"kind": "denoising", **base}
        )


def sample_degradations(n: int, ranges: SeverityRanges, generator: torch.Generator | None = None) -> list[Degradation]:
    """``n`` degradations: a kind uniformly among ``ranges.kinds``, then level and noise uniformly
    in their ranges (CT views rounded to a multiple of 10), each with its own mask/noise seed."""
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64).tolist()
    out = []
    for a, b, c, d in u:
        kind = ranges.kinds[min(int(a * len(ranges.kinds)), len(ranges.kinds) - 1)]
        low, high = ranges.level_range(kind)
        level = low + b * (high - low)
        if kind == "ct":  # multiples of 10 views, so a few cached operators serve a whole run
            level = float(min(max(10 * round(level / 10), math.ceil(low)), math.floor(high)))
        noise = ranges.noise_sigma[0] + c * (ranges.noise_sigma[1] - ranges.noise_sigma[0])
        out.append(Degradation(kind, float(level), float(noise), seed=int(d * 2**31)))
    return out


def degrade(x: torch.Tensor, degradations: Sequence[Degradation]) -> torch.Tensor:
    r"""Measurement-only estimates :math:`\tilde x_i = A_i^\dagger(A_i x_i + n_i)` (single channel,
    clipped to [0, 1]), one degradation per example of ``x`` ``(B, 1, H, W)``; ``x`` is not modified."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x must be (B, 1, H, W) images, got shape {tuple(x.shape)}")
    if len(degradations) != x.shape[0]:
        raise ValueError(f"got {len(degradations)} degradations for a batch of {x.shape[0]} images")
    out = []
    size = tuple(int(s) for s in x.shape[-2:])
    # the simulation is data, not the network: full precision even inside a bf16 training step
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        for xi, deg in zip(x.float(), degradations):
            physics = degradation_physics(deg, size, str(x.device))
            clean = physics.A(to_physics_domain(xi[None], physics))
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(deg.seed), dtype=clean.dtype)
            out.append(measurement_estimate(clean + deg.noise_sigma * noise.to(clean.device), physics, fbp=True))
    return torch.cat(out)


def degradation_physics(degradation: Degradation, img_size: tuple[int, int], device: str = "cpu"):
    """The noiseless operator of ``degradation`` (noise is added by :func:`degrade` from its seed).
    CT operators are cached per number of views: building one costs a second, applying it milliseconds."""
    config = {**degradation.physics_config(), "noise_sigma": 0.0}
    if degradation.kind == "ct":
        return _ct_operator(int(degradation.level), tuple(img_size), device)
    return build_physics(config, img_size, device=device)


@lru_cache(maxsize=256)
def _ct_operator(n_views: int, img_size: tuple[int, int], device: str):
    # cached for the whole process: built under a caller's bf16 autocast it would keep bf16 grids
    with torch.autocast(torch.device(device).type, enabled=False):
        return build_physics({"kind": "ct", "n_views": n_views}, img_size, device=device)


@dataclass
class SeverityAudit:
    """What :func:`severity_audit` measured.

    :param dict spearman: per kind, the Spearman correlation of :math:`\\hat\\sigma^2` with the
        severity (the level times :data:`SEVERITY_DIRECTION`, so 1 is perfect for every kind).
    :param list rows: per sample: ``kind``, ``level``, ``image`` (index), ``sigma2``, ``residual``
        (log :math:`\\hat\\sigma^2` minus the median of its level's) and ``true_error`` (the actual
        per-coordinate squared latent error, when a reference encoder was given).
    :param dict truth_spearman: per kind, the same correlation for the *true* latent error (how
        much the level really degrades the encoding; only with a reference encoder).
    :param dict estimate_vs_truth: per kind, Spearman of :math:`\\hat\\sigma^2` with the true error.
    :param list easy: rows whose :math:`\\hat\\sigma^2` is far below their level's median (log residual
        < -``threshold``): images that suffer little from this degradation.
    :param list hard: rows far above it (log residual > ``threshold``).
    """

    spearman: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    truth_spearman: dict[str, float] = field(default_factory=dict)
    estimate_vs_truth: dict[str, float] = field(default_factory=dict)
    easy: list[dict] = field(default_factory=list)
    hard: list[dict] = field(default_factory=list)


def severity_audit(
    encoder,
    images: torch.Tensor,
    sweep: dict[str, Sequence[float]],
    noise_sigma: float = 0.01,
    reference=None,
    threshold: float = math.log(2.0),
    seed: int = 0,
) -> SeverityAudit:
    r"""Score a severity encoder over a sweep of degradation levels on the same images.

    Every image is degraded at every level of every kind in ``sweep`` (e.g.
    ``{"mri": [2, 4, 8, 12], "blur": [0, 1, 2, 3]}``) with noise ``noise_sigma``, and encoded.

    :param encoder: a :class:`~deepinv_tunable.nets.SeverityEncoder` (``encoder(x) -> (z_hat, sigma2)``).
    :param torch.Tensor images: clean ``(N, 1, H, W)`` images (held out from training).
    :param dict sweep: kind -> levels.
    :param float noise_sigma: measurement noise of every degradation. Default 0.01.
    :param reference: the VAE whose ``encode_mean`` gives the clean latent; when given, each row
        also has the true error variance. Default ``None``.
    :param float threshold: a sample is "easy" or "hard" when its log :math:`\hat\sigma^2` differs from
        its level's median by more than this. Default :math:`\log 2` (a factor 2).
    :param int seed: seed of masks and noise. Default 0.
    :return: :class:`SeverityAudit`.
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be (N, 1, H, W) with N >= 2, got shape {tuple(images.shape)}")
    unknown = set(sweep) - set(SEVERITY_DIRECTION)
    if unknown or not sweep:
        raise ValueError(f"sweep kinds must be among {list(SEVERITY_DIRECTION)}, got {list(sweep)}")
    rows: list[dict] = []
    with torch.no_grad():
        z_true = reference.encode_mean(images) if reference is not None else None
        for kind, levels in sweep.items():
            for j, level in enumerate(levels):
                degs = [
                    Degradation(kind, float(level), noise_sigma, seed=seed + 1000 * j + i) for i in range(len(images))
                ]
                z_hat, sigma2 = encoder(degrade(images, degs))
                err = (z_hat - z_true).pow(2).flatten(1).mean(1) if z_true is not None else None
                for i in range(len(images)):
                    rows.append(
                        {
                            "kind": kind,
                            _LEVEL_NAME[kind]: float(level),
                            "level": float(level),
                            "image": i,
                            "sigma2": float(sigma2[i]),
                            "true_error": None if err is None else float(err[i]),
                        }
                    )
    spearman, truth_spearman, estimate_vs_truth = {}, {}, {}
    easy, hard = [], []
    for kind in sweep:
        mine = [r for r in rows if r["kind"] == kind]
        levels = np.array([r["level"] for r in mine]) * SEVERITY_DIRECTION[kind]
        spearman[kind] = _spearman(levels, [r["sigma2"] for r in mine])
        if reference is not None:
            truth = [r["true_error"] for r in mine]
            truth_spearman[kind] = _spearman(levels, truth)
            estimate_vs_truth[kind] = _spearman(truth, [r["sigma2"] for r in mine])
        for level in sorted({r["level"] for r in mine}):
            same = [r for r in mine if r["level"] == level]
            median = float(np.median([math.log(max(r["sigma2"], 1e-12)) for r in same]))
            for r in same:
                r["residual"] = math.log(max(r["sigma2"], 1e-12)) - median
                if r["residual"] < -threshold:
                    easy.append(r)
                elif r["residual"] > threshold:
                    hard.append(r)
    return SeverityAudit(
        spearman=spearman,
        rows=rows,
        truth_spearman=truth_spearman,
        estimate_vs_truth=estimate_vs_truth,
        easy=sorted(easy, key=lambda r: r["residual"]),
        hard=sorted(hard, key=lambda r: -r["residual"]),
    )


def _spearman(a, b) -> float:
    rho = spearmanr(a, b).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def plot_severity_audit(audit: SeverityAudit, path) -> None:
    """Scatter of :math:`\\hat\\sigma^2` against the level, one panel per kind, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.atomic import save_figure

    kinds = list(audit.spearman)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.4 * len(kinds), 3.0), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        mine = [r for r in audit.rows if r["kind"] == kind]
        ax.scatter([r["level"] for r in mine], [r["sigma2"] for r in mine], s=10, alpha=0.7, label="estimated")
        if mine and mine[0]["true_error"] is not None:
            ax.scatter(
                [r["level"] for r in mine],
                [r["true_error"] for r in mine],
                s=10,
                marker="x",
                alpha=0.6,
                label="true latent error",
            )
        ax.set(
            yscale="log",
            xlabel=_LEVEL_NAME[kind],
            ylabel=r"$\hat\sigma^2$",
            title=f"{kind}: Spearman {audit.spearman[kind]:.2f}",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
