r"""Posterior sampling, streaming moments, split-conformal calibration and coverage :footcite:p:`generative_priors_notes`.

:class:`PosteriorSampler` wraps any stochastic reconstructor — the package's samplers
(:class:`~deepinv_tunable.solvers.PnPHVAESampler`,
:class:`~deepinv_tunable.solvers.TunableLDMSolver`) or deepinv's own (``DPS``, ``DiffPIR``,
``DDRM``, and the Monte Carlo chains ``ULA``/``SKRock``, whose ``forward`` returns the chain's
posterior mean) — draws :math:`N` samples in batches and keeps only running moments
(:class:`RunningMoments`), so memory grows with the batch size, not with :math:`N`.

Intervals from a few samples of an approximate sampler are rarely calibrated. Split conformal
scaling fixes that without assumptions on the sampler: on calibration images with ground truth,
the score of a pixel is :math:`s = |x - \bar x| / \max(\hat\sigma, \epsilon)`; with :math:`\hat q`
the :math:`\lceil (n+1)(1-\alpha) \rceil / n` empirical quantile of the :math:`n` calibration
scores, the interval :math:`\bar x \pm \hat q\,\max(\hat\sigma, \epsilon)` covers a new pixel
of an exchangeable image with probability at least :math:`1 - \alpha` (marginally over pixels
and images; pixels of one image are not exchangeable with each other, so per-image coverage
varies around the nominal value).
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import write_json_atomic
from ..utils.progress import progress_bar


class RunningMoments:
    r"""Streaming mean and variance over samples (Welford, merged batch-wise by Chan's formula).

    Each :meth:`update` adds a batch of samples ``(n, *shape)``; :meth:`update_moments` adds a
    group summarised by its own mean and (population) variance, e.g. one Monte Carlo chain.
    Memory is two tensors of ``shape``, whatever the number of samples.

    :Examples:

        >>> m = RunningMoments()
        >>> m.update(torch.tensor([[1.0], [2.0]])); m.update(torch.tensor([[3.0], [4.0], [5.0]]))
        >>> m.count, m.mean.item(), m.var().item(), m.var(unbiased=False).item()
        (5, 3.0, 2.5, 2.0)
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def _merge(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if self.mean is None:
            self.count, self.mean, self._m2 = n, mean.clone(), m2.clone()
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.count = total

    def update(self, samples: torch.Tensor) -> None:
        """Add a batch of samples stacked along dimension 0."""
        samples = samples.detach().to(torch.float64)
        mean = samples.mean(0)
        self._merge(samples.shape[0], mean, (samples - mean).pow(2).sum(0))

    def update_moments(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        """Add a group of ``count`` samples given by its mean and population variance."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self._merge(int(count), mean.detach().to(torch.float64), var.detach().to(torch.float64) * count)

    def var(self, unbiased: bool = True) -> torch.Tensor:
        """Variance (``unbiased``: divide by ``count - 1``; needs two samples)."""
        if self.mean is None:
            raise ValueError("no samples yet")
        if unbiased and self.count < 2:
            raise ValueError("the unbiased variance needs at least 2 samples")
        return self._m2 / (self.count - 1 if unbiased else self.count)


@dataclass
class PosteriorSummary:
    """Result of :meth:`PosteriorSampler.sample`; tensors are ``(B, C, H, W)`` like the samples.

    :param torch.Tensor mean: posterior mean estimate (the reconstruction).
    :param torch.Tensor std: pixelwise posterior std (unbiased).
    :param int n_samples: samples per image (for chains: chains per image).
    :param float seconds: wall time of the sampling.
    :param torch.Tensor samples: all samples ``(N, B, C, H, W)``, only with ``keep_samples=True``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    n_samples: int
    seconds: float
    samples: torch.Tensor | None = None

    @classmethod
    def from_samples(cls, samples: torch.Tensor, seconds: float = 0.0) -> PosteriorSummary:
        """Summary of samples stacked along dimension 0, e.g. the magnitudes of kept MRI samples."""
        if samples.shape[0] < 2:
            raise ValueError(f"a summary needs at least 2 samples, got {samples.shape[0]}")
        return cls(
            mean=samples.mean(0), std=samples.std(0), n_samples=samples.shape[0], seconds=seconds, samples=samples
        )

    def interval(self, alpha: float = 0.1, method: str = "gaussian") -> tuple[torch.Tensor, torch.Tensor]:
        r"""Central :math:`1-\alpha` credible interval, before any calibration.

        ``"gaussian"``: :math:`\bar x \pm z_{1-\alpha/2}\,\hat\sigma` (needs only the moments);
        ``"empirical"``: the :math:`\alpha/2` and :math:`1-\alpha/2` sample quantiles (needs
        ``keep_samples=True``; crude for small :math:`N`).
        """
        _check_alpha(alpha)
        if method == "gaussian":
            z = central_z(alpha)
            return self.mean - z * self.std, self.mean + z * self.std
        if method == "empirical":
            if self.samples is None:
                raise ValueError("empirical intervals need the samples: PosteriorSampler(..., keep_samples=True)")
            q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=self.samples.dtype)
            lower, upper = torch.quantile(self.samples, q, dim=0)
            return lower, upper
        raise ValueError(f"method must be 'gaussian' or 'empirical', got {method!r}")


def central_z(alpha: float) -> float:
    """:math:`z_{1-\alpha/2}`, the half width in standard deviations of a central Gaussian
    :math:`1-\alpha` interval (1.645 for 90%).

    >>> round(central_z(0.1), 3)
    1.645
    """
    _check_alpha(alpha)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - alpha / 2, dtype=torch.float64)))


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (e.g. 0.1 for 90% intervals), got {alpha}")


def _accepts_seed(reconstructor: Callable) -> bool:
    """Whether ``reconstructor(y, physics, seed=...)`` is understood (deepinv's samplers and the
    package's stochastic solvers take ``seed``)."""
    targets = [reconstructor.forward if hasattr(reconstructor, "forward") else reconstructor]
    if hasattr(reconstructor, "_solve"):
        targets.append(reconstructor._solve)
    return any("seed" in inspect.signature(t).parameters for t in targets)


def _chain_length(sampler) -> int:
    """Retained states of one deepinv Monte Carlo chain (``BaseSampling``: after burn-in, thinned)."""
    try:
        max_iter, burnin, thinning = int(sampler.max_iter), float(sampler.burnin_ratio), int(sampler.thinning)
    except (AttributeError, TypeError, ValueError):
        return 1
    return max(1, len(range(int(max_iter * burnin), max_iter, max(thinning, 1))))


def _repeat(t: torch.Tensor, b: int) -> torch.Tensor:
    return t if b == 1 else t.repeat(b, *([1] * (t.dim() - 1)))


def _per_image(value, n_batch: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n_batch


class PosteriorSampler:
    r"""Draw :math:`N` posterior samples from any stochastic reconstructor and summarise them.

    Samples are drawn ``batch_size`` at a time by repeating the measurements along the batch
    dimension (sample :math:`j` of image :math:`i` sits at :math:`jB + i`), so a physics whose
    parameters differ per image (a batch of masks) needs ``batch_size=1``. Batch :math:`j` runs
    with torch's global RNG seeded to ``seed + j`` inside :func:`torch.random.fork_rng` (the
    caller's RNG state is left as it was) and, when the reconstructor takes a ``seed``
    argument, with ``seed=seed + j`` too: the same seed gives the same summary.

    A deepinv Monte Carlo chain (``BaseSampling``: ``ULA``, ``SKRock``, ...) returns the mean of
    its retained states from ``forward``; for these the sampler calls ``sample`` and merges
    each chain's mean and variance (:meth:`RunningMoments.update_moments`), so ``N`` counts
    chains.

    :param reconstructor: ``reconstructor(y, physics, **kwargs)`` returning one random sample
        per batch element, or a deepinv ``BaseSampling`` chain.
    :param int n_samples: :math:`N` per image. Default 16.
    :param int batch_size: samples drawn per call. Default 8.
    :param int seed: base seed. Default 0.
    :param bool keep_samples: also return all samples (memory grows with :math:`N`). Default False.
    :param transform: applied to every batch of samples before the moments, e.g.
        :func:`~deepinv_tunable.physics.domain.from_physics_domain` to summarise MRI magnitudes. Default none.
    :param bool progress: tqdm bar over batches; default only on a terminal.

    :Examples:

        >>> import deepinv as dinv
        >>> from deepinv_tunable.diffusion.consistency import gaussian_posterior_sample
        >>> physics = dinv.physics.Inpainting((1, 4, 4), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.1))
        >>> y = physics(torch.zeros(1, 1, 4, 4))
        >>> exact = lambda y, physics: gaussian_posterior_sample(physics, y, torch.zeros(y.shape[0], 1, 4, 4), 1.0, 0.1)
        >>> summary = PosteriorSampler(exact, n_samples=2000, batch_size=500).sample(y, physics)
        >>> # unobserved pixels keep the prior's std 1, observed ones sqrt(1 / (1 + 100)) ~ 0.1
        >>> sorted({round(v, 1) for v in summary.std.flatten().tolist()})
        [0.1, 1.0]
    """

    def __init__(
        self,
        reconstructor: Callable,
        n_samples: int = 16,
        batch_size: int = 8,
        seed: int = 0,
        keep_samples: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool | None = None,
    ):
        if n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 (a std needs two samples), got {n_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.reconstructor = reconstructor
        self.n_samples, self.batch_size, self.seed = int(n_samples), int(batch_size), int(seed)
        self.keep_samples, self.transform, self.progress = keep_samples, transform, progress
        self.is_chain = callable(getattr(reconstructor, "sample", None)) and hasattr(reconstructor, "iterator")

    def _draw(self, y: torch.Tensor, physics, seed: int, kwargs: dict):
        devices = [y.device] if y.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), warnings.catch_warnings():
            # deepinv's SDE samplers built without an rng ignore `seed` (with a warning) and use
            # the global RNG, which is seeded here anyway
            warnings.filterwarnings("ignore", message="Cannot set seed")
            torch.manual_seed(seed)
            if self.is_chain:
                return self.reconstructor.sample(y, physics, seed=seed, **kwargs)
            if _accepts_seed(self.reconstructor):
                kwargs = {**kwargs, "seed": seed}
            return self.reconstructor(y, physics, **kwargs)

    def sample(self, y: torch.Tensor, physics, **kwargs) -> PosteriorSummary:
        """Draw ``n_samples`` per image of ``y``. Extra ``kwargs`` go to the reconstructor; tensors
        among them with one entry per image (e.g. ``x_init``, a warm start) are repeated like ``y``."""
        if self.is_chain and self.transform is not None:
            raise ValueError("transform needs individual samples; a Monte Carlo chain only returns its moments")
        start = time.perf_counter()
        moments, kept = RunningMoments(), []
        n_batch = y.shape[0]
        bar = progress_bar(total=self.n_samples, progress=self.progress, desc="posterior samples", unit="sample")
        drawn, j = 0, 0
        while drawn < self.n_samples:
            b = min(self.batch_size, self.n_samples - drawn)
            out = self._draw(
                _repeat(y, b),
                physics,
                self.seed + j,
                {k: _repeat(v, b) if _per_image(v, n_batch) else v for k, v in kwargs.items()},
            )
            if self.is_chain:
                mean, var = out
                count = _chain_length(self.reconstructor)
                for i in range(b):
                    rows = slice(i * n_batch, (i + 1) * n_batch)
                    moments.update_moments(mean[rows], var[rows], count)
            else:
                out = self.transform(out) if self.transform is not None else out
                samples = out.detach().reshape(b, n_batch, *out.shape[1:])
                moments.update(samples)
                if self.keep_samples:
                    kept.append(samples.cpu())
            drawn += b
            j += 1
            bar.update(b)
        bar.close()
        dtype = y.dtype if y.is_floating_point() else torch.float32
        # chains: population variance within chains plus spread of chain means
        var = moments.var(unbiased=not self.is_chain)
        return PosteriorSummary(
            mean=moments.mean.to(dtype),
            std=var.clamp_min(0).sqrt().to(dtype),
            n_samples=self.n_samples,
            seconds=time.perf_counter() - start,
            samples=torch.cat(kept) if kept else None,
        )


@dataclass
class Coverage:
    """Empirical coverage of intervals: the fraction of ground-truth pixels inside, overall and
    per image, and the mean interval width."""

    coverage: float
    mean_width: float
    per_image: list[float]
    n_pixels: int


def _roi_mask(roi: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if roi is None:
        return torch.ones_like(like, dtype=torch.bool)
    try:
        return torch.broadcast_to(roi.to(like.device) > 0.5, like.shape)
    except RuntimeError:
        raise ValueError(
            f"roi of shape {tuple(roi.shape)} does not broadcast to the images' shape {tuple(like.shape)}"
        ) from None


def coverage(
    lower: torch.Tensor, upper: torch.Tensor, truth: torch.Tensor, roi: torch.Tensor | None = None
) -> Coverage:
    """Fraction of ``truth`` pixels within ``[lower, upper]`` (inside ``roi``, a mask
    broadcastable to the images; default everywhere) and the mean width ``upper - lower``.

    >>> c = coverage(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.tensor([[[[0.5, 2.0], [0.1, 0.9]]]]))
    >>> c.coverage, c.mean_width
    (0.75, 1.0)
    """
    if not (lower.shape == upper.shape == truth.shape):
        raise ValueError(
            f"lower {tuple(lower.shape)}, upper {tuple(upper.shape)} and truth "
            f"{tuple(truth.shape)} must have the same shape"
        )
    mask = _roi_mask(roi, truth)
    inside = ((truth >= lower) & (truth <= upper) & mask).flatten(1).sum(1).double()
    counts = mask.flatten(1).sum(1).double()
    if bool((counts == 0).any()):
        raise ValueError("the roi is empty for at least one image")
    width = (upper - lower)[mask]
    return Coverage(
        coverage=float(inside.sum() / counts.sum()),
        mean_width=float(width.mean()),
        per_image=(inside / counts).tolist(),
        n_pixels=int(counts.sum()),
    )


def _moments(item) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(item, PosteriorSummary):
        return item.mean, item.std
    if isinstance(item, tuple) and len(item) == 2:
        return item
    raise TypeError(f"expected a PosteriorSummary or a (mean, std) pair, got {type(item).__name__}")


class ConformalCalibrator:
    r"""Split-conformal scaling of posterior std into calibrated intervals.

    :meth:`fit` computes :math:`\hat q`, the :math:`\lceil (n+1)(1-\alpha)\rceil/n` empirical
    quantile of :math:`|x - \bar x| / \max(\hat\sigma, \epsilon)` over the calibration pixels;
    :meth:`apply` returns :math:`\bar x \pm \hat q \max(\hat\sigma, \epsilon)`. An exact sampler
    gives :math:`\hat q \approx z_{1-\alpha/2}` (1.645 at 90%); an over-confident one a larger
    :math:`\hat q`. The floor :math:`\epsilon` keeps pixels where all samples agree (air) from
    dividing by zero. Saved as JSON (:meth:`save` / :meth:`load`) next to the model it calibrates.

    :param float alpha: miscoverage; intervals aim at :math:`1 - \alpha`. Default 0.1.
    :param float std_floor: :math:`\epsilon`, in image units. Default 1e-3.

    :Examples:

        >>> g = torch.Generator().manual_seed(0)
        >>> truth = torch.randn(4, 1, 32, 32, generator=g)  # the sampler claims std 0.5; the truth has 1
        >>> cal = ConformalCalibrator(alpha=0.1).fit([(torch.zeros_like(truth), torch.full_like(truth, 0.5))], [truth])
        >>> round(cal.q, 1)  # 2 x 1.645
        3.3
    """

    def __init__(self, alpha: float = 0.1, std_floor: float = 1e-3):
        _check_alpha(alpha)
        if not std_floor > 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        self.alpha, self.std_floor = float(alpha), float(std_floor)
        self.q: float | None = None
        self.n_calibration = 0

    def scores(self, summary, truth: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
        """Conformity scores :math:`|x - \\bar x| / \\max(\\hat\\sigma, \\epsilon)` of the pixels in ``roi``."""
        mean, std = _moments(summary)
        if mean.shape != truth.shape or std.shape != truth.shape:
            raise ValueError(
                f"mean {tuple(mean.shape)}, std {tuple(std.shape)} and truth {tuple(truth.shape)} "
                "must have the same shape"
            )
        return ((truth - mean).abs() / std.clamp_min(self.std_floor))[_roi_mask(roi, truth)]

    def fit(
        self, summaries: Iterable, truths: Iterable[torch.Tensor], rois: Iterable[torch.Tensor | None] | None = None
    ) -> ConformalCalibrator:
        """Calibrate on pairs of (:class:`PosteriorSummary` or ``(mean, std)``, ground truth), one
        per batch of calibration images, optionally with a region of interest each."""
        summaries, truths = list(summaries), list(truths)
        rois = list(rois) if rois is not None else [None] * len(summaries)
        if not (len(summaries) == len(truths) == len(rois)) or not summaries:
            raise ValueError(
                f"need as many summaries ({len(summaries)}), ground truths ({len(truths)}) "
                f"and rois ({len(rois)}), at least one"
            )
        scores = torch.cat([self.scores(s, t, r).flatten() for s, t, r in zip(summaries, truths, rois)])
        n = scores.numel()
        level = math.ceil((n + 1) * (1 - self.alpha)) / n
        if level > 1:
            raise ValueError(f"{n} calibration pixels are too few for alpha={self.alpha}")
        self.q = float(np.quantile(scores.double().cpu().numpy(), level, method="higher"))
        self.n_calibration = n
        return self

    def _fitted(self) -> float:
        if self.q is None:
            raise ValueError("the calibrator is not fitted: call fit(...) or load(...) first")
        return self.q

    def half_width(self, std: torch.Tensor) -> torch.Tensor:
        """Calibrated half width :math:`\\hat q \\max(\\hat\\sigma, \\epsilon)`."""
        return self._fitted() * std.clamp_min(self.std_floor)

    def apply(self, summary) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated interval ``(lower, upper)`` for a :class:`PosteriorSummary` or ``(mean, std)``."""
        mean, std = _moments(summary)
        h = self.half_width(std)
        return mean - h, mean + h

    def to_dict(self) -> dict:
        return {
            "method": "split-conformal, score |x - mean| / max(std, std_floor)",
            "alpha": self.alpha,
            "nominal_coverage": 1 - self.alpha,
            "q": self._fitted(),
            "std_floor": self.std_floor,
            "n_calibration_pixels": self.n_calibration,
        }

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ConformalCalibrator:
        """Read a calibration written by :meth:`save`; ``ValueError`` if the file is not one."""
        d = json.loads(Path(path).read_text())
        missing = {"alpha", "q", "std_floor"} - set(d)
        if missing:
            raise ValueError(f"{path}: not a conformal calibration (missing {sorted(missing)})")
        cal = cls(alpha=d["alpha"], std_floor=d["std_floor"])
        cal.q, cal.n_calibration = float(d["q"]), int(d.get("n_calibration_pixels", 0))
        return cal
