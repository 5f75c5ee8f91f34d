r"""Choosing the latent size :math:`k` of a tunable-complexity prior.

Three routes, from most to least information:

* **Linear theory** (:func:`linear_denoising_mse`, :func:`optimal_k_linear`): for a linear
  generator and Gaussian latents the expected error of the :math:`k`-truncated MAP denoiser has a
  closed form, so the best :math:`k` is known exactly. It explains why :math:`k^\star` falls as
  the noise grows.
* **Ground truth on held-out images** (:func:`sweep_k`): reconstruct for a grid of :math:`k`
  and keep the best score.
* **Measurements only** (:func:`discrepancy_k`, :func:`measurement_splitting_k`,
  :func:`one_standard_error_k`, :func:`select_k`): Morozov's discrepancy principle, Stein's
  unbiased risk estimate (:func:`~deepinv_tunable.autotune.sure_score`), or fitting on part of
  :math:`y` and scoring the rest.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch

from .autotune import holdout_mask, masked_physics, resolve_sigma, split_keeps, sure_score
from .physics import measurement_estimate, residual_sq
from .progress import progress_bar
from .solvers.base import TunableReconstructor


def _nonnegative(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _singular_values(singular_values: torch.Tensor | Sequence[float], require_sorted: bool = True) -> torch.Tensor:
    if not isinstance(singular_values, torch.Tensor):
        # any array-like, NumPy views with negative strides (a reversed spectrum) included
        singular_values = np.array(singular_values, dtype=object if isinstance(singular_values, str) else None)
        if singular_values.dtype.kind not in "biuf":
            raise ValueError(f"singular_values must be real numbers, got dtype {singular_values.dtype}")
    s = torch.as_tensor(singular_values)
    if s.is_complex() or s.dtype == torch.bool:
        raise ValueError(f"singular_values must be real, got dtype {s.dtype}")
    s = s.to(torch.float64)
    if s.dim() != 1:
        raise ValueError(f"singular_values must be 1-D, got shape {tuple(s.shape)}")
    if s.numel() == 0:
        raise ValueError("singular_values must hold at least one value, got an empty sequence")
    if not torch.isfinite(s).all():
        i = int((~torch.isfinite(s)).nonzero()[0])
        raise ValueError(f"singular_values must be finite, got s[{i}] = {s[i].item()}")
    if (s < 0).any():
        i = int((s < 0).nonzero()[0])
        raise ValueError(f"singular_values must be >= 0, got s[{i}] = {s[i].item()}")
    rises = s[1:] > s[:-1]
    if require_sorted and rises.any():
        i = int(rises.nonzero()[0])
        raise ValueError(
            "singular_values must be sorted in non-increasing order, "
            f"got s[{i}] = {s[i].item()} < s[{i + 1}] = {s[i + 1].item()}"
        )
    return s


def _int_k(k, name: str = "k") -> int:
    # operator.index accepts Python and NumPy integers but refuses floats such as 3.0, which
    # usually mean the caller computed k with a division and should round it on purpose.
    if isinstance(k, bool):
        raise ValueError(f"{name} must be an integer, got {k!r}")
    try:
        return operator.index(k)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {k!r}") from None


def _ks(ks: Sequence[int]) -> list[int]:
    ks = [_int_k(k, "every k in ks") for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one k, got an empty sequence")
    seen = set()
    for k in ks:
        if k in seen:
            raise ValueError(f"ks must not repeat a value, got k={k} twice")
        seen.add(k)
    return ks


def _finite_score(value, what: str, k: int) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} for k={k} must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} for k={k} must be finite, got {value}")
    return value


def linear_denoising_mse(
    singular_values: torch.Tensor | Sequence[float],
    sigma: float,
    lam: float,
    k: int | torch.Tensor,
    truncation_order: bool = False,
) -> float | torch.Tensor:
    r"""Expected squared error of the :math:`k`-truncated latent MAP denoiser for a linear generator.

    Model: :math:`x = G z` with :math:`z \sim \mathcal N(0, I_n)`,
    :math:`G = U \operatorname{diag}(s) V^\top`, and :math:`y = x + \varepsilon` with
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`. The estimator
    :math:`\hat x = G_k \hat z`, :math:`\hat z = \arg\min_z \|y - G_k z\|^2 + \lambda \|z\|^2`, with
    :math:`G_k` the generator restricted to its first :math:`k` right-singular directions, acts in the
    left-singular basis as :math:`\hat x_i = \frac{s_i^2}{s_i^2 + \lambda} y_i` for :math:`i \le k`
    and :math:`\hat x_i = 0` otherwise, so

    .. math::

        \mathrm{MSE}(k) = \mathbb E \|\hat x - x\|^2
        = \sum_{i \le k} \frac{\lambda^2 s_i^2 + s_i^4 \sigma^2}{(s_i^2 + \lambda)^2}
          + \sum_{i > k} s_i^2 .

    The first sum is shrinkage bias plus propagated noise, the second the signal the truncation
    throws away. It is the total over the :math:`n` coordinates, not the mean. A zero singular
    value contributes nothing whether kept or not (its shrinkage factor is taken as 0, also at
    :math:`\lambda = 0`).

    :param torch.Tensor singular_values: :math:`s_1 \ge \dots \ge s_n \ge 0`, 1-D tensor or sequence.
    :param float sigma: noise standard deviation :math:`\sigma \ge 0`.
    :param float lam: latent weight :math:`\lambda \ge 0` (0: maximum likelihood; :math:`\sigma^2`:
        the true MAP).
    :param int k: latent size in :math:`[0, n]`, or a 1-D integer tensor of sizes.
    :param bool truncation_order: ``singular_values`` are given in the order the truncation keeps
        them (e.g. :func:`generator_spectrum` of a trained model), not necessarily sorted: the
        sum is coordinate by coordinate, so the closed form holds in any order. Default False
        (a non-increasing spectrum is required, and an unsorted one is refused as a likely mistake).
    :return: a float for an integer ``k``; a float64 tensor of the same shape for a tensor ``k``.

    >>> round(linear_denoising_mse([2.0, 1.0], sigma=1.0, lam=1.0, k=1), 6)
    1.8
    >>> linear_denoising_mse([2.0, 1.0], 1.0, 1.0, torch.arange(3))
    tensor([5.0000, 1.8000, 1.3000], dtype=torch.float64)
    """
    s = _singular_values(singular_values, require_sorted=not truncation_order)
    sigma = _nonnegative(sigma, "sigma")
    lam = _nonnegative(lam, "lam")
    n = s.numel()

    s2 = s * s
    # Written as (1-c)^2 s^2 + c^2 sigma^2, which equals the closed form above but stays
    # defined at s_i = lam = 0, where the quotient form is 0/0.
    shrink = s2 / torch.where(s2 > 0, s2 + lam, 1.0)
    kept = (1 - shrink) ** 2 * s2 + shrink**2 * sigma**2
    zero = s.new_zeros(1)
    kept_upto = torch.cat([zero, torch.cumsum(kept, 0)])  # kept_upto[k] = sum_{i <= k}
    # Summing the tail from the small end avoids cancellation in total - cumsum when the
    # spectrum decays fast.
    dropped_from = torch.cat([torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0]), zero])
    table = kept_upto + dropped_from  # table[k] = MSE(k) for k = 0..n

    if isinstance(k, torch.Tensor):
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise ValueError(f"k must hold integers, got a tensor of dtype {k.dtype}")
        if k.dim() > 1:
            raise ValueError(f"k must be an integer or a 1-D tensor of integers, got shape {tuple(k.shape)}")
        bad = (k < 0) | (k > n)
        if bad.any():
            raise ValueError(f"k must lie in [0, n] = [0, {n}], got k = {k[bad].flatten()[0].item()}")
        return table[k.to(device=table.device, dtype=torch.long)]
    k = _int_k(k)
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got k = {k}")
    return float(table[k])


def optimal_k_linear(
    singular_values: torch.Tensor | Sequence[float], sigma: float, lam: float, truncation_order: bool = False
) -> int:
    r"""Latent size minimising :func:`linear_denoising_mse`:

    .. math::

        k^\star = \#\{\, i : s_i > 0,\ s_i^2 + 2\lambda > \sigma^2 \,\}.

    Keeping coordinate :math:`i` changes the error by
    :math:`-\,s_i^4 (s_i^2 + 2\lambda - \sigma^2) / (s_i^2 + \lambda)^2`, which is negative exactly
    when :math:`s_i^2 + 2\lambda > \sigma^2`; as the :math:`s_i` are sorted the helpful coordinates
    form a prefix, so :math:`k^\star` minimises the closed form. Where keeping a coordinate changes
    nothing (:math:`s_i = 0`, or :math:`s_i^2 + 2\lambda = \sigma^2`) it is left out, so ties go to the
    smallest minimiser. :math:`k^\star` is non-increasing in :math:`\sigma` for a fixed
    :math:`\lambda`; at the true MAP :math:`\lambda = \sigma^2` every non-zero direction helps.

    :param torch.Tensor singular_values: :math:`s_1 \ge \dots \ge s_n \ge 0`, 1-D tensor or sequence.
    :param float sigma: noise standard deviation :math:`\sigma \ge 0`.
    :param float lam: latent weight :math:`\lambda \ge 0`.
    :param bool truncation_order: ``singular_values`` in the truncation's order, not necessarily
        sorted (see :func:`linear_denoising_mse`): the helpful coordinates need not form a prefix
        then, and :math:`k^\star` is the smallest minimiser of the closed form over prefixes.
        Default False.

    >>> optimal_k_linear([2.0, 1.0, 0.5, 0.1], sigma=0.8, lam=0.0)
    2
    >>> optimal_k_linear([2.0, 1.0, 0.5, 0.1], sigma=0.8, lam=0.8**2)
    4
    """
    if truncation_order:
        s = _singular_values(singular_values, require_sorted=False)
        table = linear_denoising_mse(s, sigma, lam, torch.arange(s.numel() + 1), truncation_order=True)
        return int(torch.nonzero(table == table.min())[0])  # ties: the smallest k
    s = _singular_values(singular_values)
    sigma = _nonnegative(sigma, "sigma")
    lam = _nonnegative(lam, "lam")
    return int(((s > 0) & (s * s + 2 * lam > sigma**2)).sum())


def generator_spectrum(
    model,
    latents: torch.Tensor,
    step: float = 1e-2,
    batch_size: int = 64,
    stride: int = 1,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""The linear theory's spectrum fitted to a trained tunable generator, in its truncation order.

    Linearised at the mean latent :math:`\bar z` of ``latents`` (encoded images of the data the
    model describes), the generator is :math:`D(z) \approx D(\bar z) + J (z - \bar z)`, and with
    latent coordinates of standard deviation :math:`\varsigma_i` (over ``latents``) coordinate
    :math:`i` carries image energy

    .. math::

        s_i = \varsigma_i \, \|J e_i\|_2 ,

    the :math:`s_i` of :func:`linear_denoising_mse` (whose model whitens the latent, and treats the
    columns of :math:`J` as orthogonal, which a trained decoder only approximates). Columns of
    :math:`J` come from forward differences of size ``step`` times :math:`\varsigma_i`, in
    batches: :math:`K / \text{stride}` decodes in all.

    :param model: a generator with ``decode(z, k)``, ``latent_shape`` and ``latent_dim``
        (:class:`~deepinv_tunable.nets.TunableVAE`, :class:`~deepinv_tunable.nets.OrderedFlow`).
    :param torch.Tensor latents: ``(B, *latent_shape)``, ``B >= 2``.
    :param float step: finite-difference step, relative to each coordinate's spread. Default 0.01.
    :param int batch_size: perturbed latents decoded at once. Default 64.
    :param int stride: measure every ``stride``-th coordinate only and give its value to the
        ``stride - 1`` that follow it (a flow's :math:`K` is the pixel count). Default 1 (all).
    :param bool progress: a tqdm bar over the batches. Default ``None``: only on a terminal.
    :return: 1-D float64 tensor of the :math:`K` values :math:`s_i` in truncation order (pass
        ``truncation_order=True`` to the closed forms: a trained model's spectrum need not be sorted).

    >>> class Linear:  # a planted linear generator: column i of norm i + 1
    ...     latent_shape, latent_dim = (1, 1, 3), 3
    ...     def decode(self, z, k=None):
    ...         return z.flatten(1) * torch.tensor([1.0, 2.0, 3.0])
    >>> latents = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 0.0, -2.0]]).reshape(2, 1, 1, 3)
    >>> generator_spectrum(Linear(), latents).round(decimals=4)  # std (1.41, 0, 2.83) x norm (1, 2, 3)
    tensor([1.4142, 0.0000, 8.4853], dtype=torch.float64)
    """
    shape = tuple(model.latent_shape)
    if latents.dim() != len(shape) + 1 or tuple(latents.shape[1:]) != shape or latents.shape[0] < 2:
        raise ValueError(f"latents must be (B >= 2, {', '.join(map(str, shape))}), got shape {tuple(latents.shape)}")
    if not step > 0 or batch_size < 1 or stride < 1:
        raise ValueError(f"step must be > 0, batch_size and stride >= 1, got {step}, {batch_size} and {stride}")
    K = int(model.latent_dim)
    with torch.no_grad():
        flat = latents.detach().flatten(1).to(torch.float64)
        spread = flat.std(0)
        centre = flat.mean(0).to(latents.dtype)
        base = model.decode(centre.reshape(1, *shape), K).flatten(1).to(torch.float64)
        measured = torch.arange(0, K, stride)
        s = torch.zeros(len(measured), dtype=torch.float64)
        starts = range(0, len(measured), batch_size)
        with progress_bar(total=len(starts), progress=progress, desc="generator spectrum", leave=False) as bar:
            for first in starts:
                index = measured[first : first + batch_size]
                delta = (step * spread[index]).clamp_min(1e-12)
                z = centre.repeat(len(index), 1)
                z[torch.arange(len(index)), index] += delta.to(z.dtype)
                out = model.decode(z.reshape(-1, *shape), K).flatten(1).to(torch.float64)
                column_norm = (out - base).norm(dim=1) / delta
                s[first : first + len(index)] = torch.where(spread[index] > 0, spread[index] * column_norm, 0.0)
                bar.update(1)
    return s.repeat_interleave(stride)[:K]


@dataclass
class SweepResult:
    """``best`` is the chosen latent size; ``table`` maps each tried ``k`` to its criterion
    (a score when ``higher_is_better``, otherwise an error such as a held-out residual)."""

    best: int
    table: dict[int, float]
    higher_is_better: bool = True


def _pick(table: dict[int, float], higher_is_better: bool) -> int:
    target = max(table.values()) if higher_is_better else min(table.values())
    # Ties go to the smallest k: the simpler model, and the cheaper one to run.
    return min(k for k, v in table.items() if v == target)


def sweep_k(
    reconstruct: Callable[[int], torch.Tensor],
    ks: Sequence[int],
    score: Callable[[torch.Tensor], float],
) -> SweepResult:
    r"""Validation sweep: reconstruct for every ``k`` and keep the best score.

    :param Callable reconstruct: maps a latent size ``k`` to an estimate (e.g. of a held-out
        validation set).
    :param list ks: latent sizes to try (at least one, no repeats).
    :param Callable score: maps an estimate to a finite number, higher is better (e.g. mean PSNR
        against the ground truth; pass the negative of an error).
    :return: :class:`SweepResult`; ties go to the smallest ``k``.

    >>> truth = torch.full((4,), 3.0)
    >>> sweep_k(lambda k: torch.full((4,), float(k)), [1, 2, 3, 5], lambda x: -(x - truth).abs().mean()).best
    3
    """
    table = {k: _finite_score(score(reconstruct(k)), "score", k) for k in _ks(ks)}
    return SweepResult(best=_pick(table, True), table=table, higher_is_better=True)


def discrepancy_k(
    residual_norms_sq: Mapping[int, float | torch.Tensor],
    m: int,
    sigma: float,
    tau: float = 1.0,
) -> int:
    r"""Morozov's discrepancy principle: the smallest ``k`` that explains the data down to the noise.

    A reconstruction should not fit :math:`y` more closely than the noise allows, and a smaller
    latent space is the safer prior, so choose

    .. math::

        k = \min \{\, k : \|A \hat x_k - y\|^2 \le \tau\, m\, \sigma^2 \,\},

    where :math:`m \sigma^2` is the expected squared norm of the noise over the :math:`m`
    measurements of one example. If no ``k`` qualifies (the model family cannot reach the noise
    level, or :math:`\sigma` is underestimated) the ``k`` with the smallest residual is returned.
    Needs no ground truth, but a good estimate of :math:`\sigma`; :math:`\tau` slightly above 1
    is the classical safety margin.

    :param dict residual_norms_sq: ``{k: residual}``, the residual :math:`\|A \hat x_k - y\|^2` of one
        example as a float, or a 1-D tensor with one entry per example (each summed over that
        example's measurements); tensors are averaged over examples, so the threshold is always
        per example.
    :param int m: number of noisy real measurements per example (count only entries that carry
        noise: sampled k-space coefficients, with real and imaginary parts counted separately).
    :param float sigma: noise standard deviation per measurement, :math:`\ge 0`.
    :param float tau: safety factor :math:`\tau > 0`. Default 1.

    >>> discrepancy_k({2: 40.0, 4: 9.5, 8: 8.0}, m=10, sigma=1.0)
    4
    """
    if not isinstance(residual_norms_sq, Mapping) or len(residual_norms_sq) == 0:
        raise ValueError(f"residual_norms_sq must be a non-empty dict {{k: residual}}, got {residual_norms_sq!r}")
    m = _int_k(m, "m")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    sigma = _nonnegative(sigma, "sigma")
    tau = _nonnegative(tau, "tau")
    if tau == 0:
        raise ValueError("tau must be > 0, got 0.0")
    table = {}
    for k, r in residual_norms_sq.items():
        k = _int_k(k, "every key of residual_norms_sq")
        if isinstance(r, torch.Tensor):
            if r.dim() > 1 or r.numel() == 0:
                raise ValueError(
                    f"residual for k={k} must be a float or a non-empty 1-D tensor (one entry per example), "
                    f"got shape {tuple(r.shape)}"
                )
            r = r.detach().to(torch.float64).mean()
        r = _finite_score(r, "residual", k)
        if r < 0:
            raise ValueError(f"residual for k={k} must be >= 0 (a squared norm), got {r}")
        table[k] = r
    threshold = tau * m * sigma**2
    passing = [k for k, r in table.items() if r <= threshold]
    return min(passing) if passing else _pick(table, False)


def measurement_splitting_k(
    fit: Callable[[int, torch.Tensor], torch.Tensor],
    ks: Sequence[int],
    y: torch.Tensor,
    physics,
    holdout_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> SweepResult:
    r"""Choose ``k`` from the measurements alone by fitting on part of :math:`y` and scoring the rest.

    One random set :math:`H` of entries of :math:`y` (a fraction ``holdout_fraction`` of them,
    the same for every ``k``) is held out. For each ``k``, ``fit(k, keep_mask)`` must reconstruct
    from the kept entries only; the held-out residual

    .. math::

        R(k) = \|(A \hat x_k - y)_H\|^2

    is then an honest score: as the held-out noise is independent of :math:`\hat x_k`,
    :math:`\mathbb E\, R(k) = \mathbb E \|(A \hat x_k - A x)_H\|^2 + m_H \sigma^2` with
    :math:`m_H = |H|`, i.e. the prediction error on the held-out entries plus a constant, and the
    ``k`` with the smallest :math:`R(k)` is returned. Entries of :math:`y` that are exactly zero
    (unsampled k-space, masked pixels) carry no information and are never held out;
    ``holdout_fraction`` is a fraction of the other entries.

    :param Callable fit: ``fit(k, keep_mask) -> x_hat``; ``keep_mask`` is a boolean tensor shaped
        like ``y``, and the solver is responsible for ignoring the entries where it is ``False``
        (e.g. multiply its data term by the mask).
    :param list ks: latent sizes to try (at least one, no repeats).
    :param torch.Tensor y: measurements.
    :param deepinv.physics.Physics physics: forward operator; only ``physics.A`` is used.
    :param float holdout_fraction: fraction of the entries of ``y`` held out, in (0, 1). Default 0.1.
    :param torch.Generator generator: CPU generator drawing the hold-out, for reproducibility.
        Default ``None`` (torch's global generator).
    :return: :class:`SweepResult` with ``higher_is_better=False``; ties go to the smallest ``k``.

    >>> import deepinv as dinv
    >>> y = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> fit = lambda k, keep: torch.full_like(y, 2.5) if k == 1 else torch.zeros_like(y)
    >>> measurement_splitting_k(fit, [0, 1], y, dinv.physics.Denoising(), 0.5).best
    1
    """
    ks = _ks(ks)
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if not callable(getattr(physics, "A", None)):
        raise ValueError(f"physics must be a deepinv physics with a forward operator A, got {type(physics).__name__}")
    keep_mask = holdout_mask(y, holdout_fraction, generator)

    table = {}
    for k in ks:
        x_hat = fit(k, keep_mask)
        with torch.no_grad():
            pred = physics.A(x_hat)
            if pred.shape != y.shape:
                raise ValueError(
                    f"physics.A(fit({k}, keep_mask)) has shape {tuple(pred.shape)}, expected y's shape {tuple(y.shape)}"
                )
            residual = (pred - y)[~keep_mask].abs().pow(2).sum()
        table[k] = _finite_score(residual, "held-out residual", k)
    return SweepResult(best=_pick(table, False), table=table, higher_is_better=False)


def one_standard_error_k(split_scores: Mapping[int, torch.Tensor], se_factor: float = 1.0) -> torch.Tensor:
    r"""Per example, the smallest ``k`` whose held-out score is not worse than the best one's by
    more than ``se_factor`` standard errors: the one-standard-error rule of cross-validation
    (:footcite:t:`hastie2009elements`, Sec. 7.10), applied to paired per-split differences.

    With :math:`s_{k,j}` the held-out residual of ``k`` on hold-out :math:`j = 1..J` and
    :math:`k_0 = \arg\min_k \sum_j s_{k,j}`, let :math:`d_{k,j} = s_{k,j} - s_{k_0,j}`; choose

    .. math::

        \hat k = \min \{\, k : \bar d_k \le c\, \mathrm{sd}_j(d_{k,j}) / \sqrt{J} \,\}.

    Pairing removes what every ``k`` shares on a hold-out (which views or lines it holds out
    weighs far more than the choice of ``k``), so the standard error is that of the comparison.
    Held-out scores of nearby ``k`` differ by less than their split-to-split spread, and the plain
    minimum then drifts to larger ``k``: on a training CT subject (flow, 60 views, three
    hold-outs of 10 % of the views) it lost 0.38 dB to the best k, this rule 0.04 dB. A smaller
    latent is the safer prior and the cheaper decode, so among ``k`` the data cannot tell apart the
    smallest wins. With one hold-out (no spread) or ``se_factor = 0`` it is the plain minimum.

    :param dict split_scores: ``k -> (J, B)`` held-out scores (lower is better), the same hold-outs
        for every ``k``.
    :param float se_factor: :math:`c \ge 0`. Default 1.
    :return: chosen ``k`` per example, ``(B,)``.

    >>> scores = {1: torch.tensor([[5.0], [3.0], [7.0]]), 2: torch.tensor([[4.0], [4.0], [4.0]])}
    >>> one_standard_error_k(scores).tolist(), one_standard_error_k(scores, se_factor=0.0).tolist()
    ([1], [2])
    """
    se_factor = _nonnegative(se_factor, "se_factor")
    if not isinstance(split_scores, Mapping) or len(split_scores) == 0:
        raise ValueError(f"split_scores must be a non-empty dict {{k: (J, B) tensor}}, got {split_scores!r}")
    ks = sorted(_ks(list(split_scores)))  # ascending: the first admissible k is the smallest
    entries = [torch.as_tensor(split_scores[k], dtype=torch.float64) for k in ks]
    shapes = {tuple(e.shape) for e in entries}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"every entry of split_scores must be a (J, B) tensor of one shape, got shapes {sorted(shapes)}"
        )
    table = torch.stack(entries)  # (n_k, J, B)
    if not torch.isfinite(table).all():
        raise ValueError("split_scores must be finite")
    n_splits = table.shape[1]
    best = table.sum(1).argmin(0)  # (B,); ties go to the smallest k
    diff = table - table.gather(0, best.expand(1, n_splits, -1))  # (n_k, J, B) minus the best k's row
    if n_splits > 1 and se_factor > 0:
        tolerance = se_factor * diff.std(1, correction=1) / math.sqrt(n_splits)
    else:
        tolerance = torch.zeros_like(diff[:, 0])
    admissible = diff.mean(1) <= tolerance  # (n_k, B); the best k always is
    return torch.tensor(ks)[admissible.to(torch.int64).argmax(0)]  # first admissible = smallest k


# ------------------------------------------------------------- the closed form as a k proposal
#: File, next to a shipped generator's weights, holding its :func:`generator_spectrum`.
SPECTRUM_FILE = "spectrum.safetensors"


def save_spectrum(folder, spectrum: torch.Tensor, **facts: str | int | float) -> Path:
    """Write ``spectrum`` (:func:`generator_spectrum`) to ``folder/``:data:`SPECTRUM_FILE`
    atomically, with ``facts`` (the subject and slices it was fitted on, ...) as metadata."""
    from safetensors.torch import save

    from .atomic import atomic_write

    tensor = torch.as_tensor(spectrum, dtype=torch.float32).flatten().contiguous()
    blob = save({"spectrum": tensor}, {key: str(value) for key, value in facts.items()})
    return atomic_write(Path(folder) / SPECTRUM_FILE, lambda p: p.write_bytes(blob))


def load_spectrum(folder) -> torch.Tensor:
    """The spectrum saved by :func:`save_spectrum` in ``folder`` (a model's checkpoint folder,
    e.g. :func:`deepinv_tunable.pretrained.path` ``("ordered_flow_mri128")``), float64."""
    from safetensors.torch import load_file

    file = Path(folder) / SPECTRUM_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"no generator spectrum at '{file}': fit one with "
            "`python benchmarks/run_k_study.py --models NAME --save-spectrum` (needs the corpus)"
        )
    return load_file(str(file))["spectrum"].to(torch.float64)


def effective_noise_sigma(physics, sigma: float) -> float:
    r"""The noise level at which the linear closed form sees an inverse problem as denoising.

    Denoising: :math:`\sigma`. Cartesian MRI with a fraction :math:`1/R` of k-space sampled:
    :math:`\sigma\sqrt{R}` (a latent direction's energy is seen in :math:`1/R` of k-space on
    average, an approximation). No other physics has a closed form here.

    >>> from deepinv_tunable.physics import build_physics
    >>> effective_noise_sigma(build_physics({"kind": "mri", "acceleration": 4, "center_fraction": 0.0}, (32, 32)), 0.01)
    0.02
    """
    sigma = _nonnegative(sigma, "sigma")
    if isinstance(physics, dinv.physics.Denoising):
        return sigma
    if isinstance(physics, dinv.physics.MRI) and not isinstance(physics, dinv.physics.MultiCoilMRI):
        sampled = float(physics.mask.float().mean())
        if not sampled > 0:
            raise ValueError("the MRI mask samples nothing: no closed form")
        return sigma / math.sqrt(sampled)
    raise ValueError(
        f"the closed form covers denoising and single-coil Cartesian MRI, got {type(physics).__name__}; "
        "choose k with rule='discrepancy' or 'splitting'"
    )


def closed_form_k(spectrum: torch.Tensor, physics, sigma: float, ks: Sequence[int] | None = None) -> int:
    r"""``k`` proposed before any solve: :func:`optimal_k_linear` on a generator's spectrum
    (in truncation order) at :func:`effective_noise_sigma`, snapped to the nearest ``k`` of
    ``ks`` in :math:`\log k` (ties to the smaller) when given.

    The latent weight is taken as :math:`\lambda = 0`: with the latent MAP of
    :class:`~deepinv_tunable.solvers.LatentMAP` (100 Adam steps from :math:`f^{-1}(y)`) the prior
    weight barely shrinks the estimate, and with :math:`\lambda = \gamma\sigma^2` the closed form
    predicted :math:`k = K` where a quarter of the flow's latent was 3.5-6.7 dB better. On the
    reserved subject (``benchmarks/run_k_study.py``, flow, :math:`\gamma = 0`) the proposal came
    within 0.16 dB of the oracle ``k`` on every denoising and MRI case, with no sweep.

    >>> from deepinv_tunable.physics import build_physics
    >>> spectrum = torch.tensor([1.0, 0.5, 0.2, 0.05], dtype=torch.float64)
    >>> closed_form_k(spectrum, build_physics({"kind": "denoising"}, (2, 2)), sigma=0.3)
    2
    """
    k = optimal_k_linear(spectrum, effective_noise_sigma(physics, sigma), 0.0, truncation_order=True)
    return k if ks is None else nearest_k(k, ks)


def nearest_k(k: int, ks: Sequence[int]) -> int:
    r"""The ``k`` of the grid ``ks`` nearest to ``k`` in :math:`\log k` (ties to the smaller).

    >>> nearest_k(2784, [1024, 2048, 4096])
    2048
    """
    return min(_ks(ks), key=lambda g: (abs(math.log(g) - math.log(max(k, 1))), g))


# ----------------------------------------------------------------- ground-truth-free k for solvers
@dataclass
class KSelection:
    """Per-example choice of ``k`` by :func:`select_k`.

    :param torch.Tensor k: chosen ``k`` per example, ``(B,)``.
    :param dict scores: ``k -> (B,)`` score tensor, lower is better: the residual
        (discrepancy), the risk estimate (SURE) or the summed held-out residual (splitting); empty
        for ``"closed_form"``.
    :param str rule: ``"discrepancy"``, ``"sure"``, ``"splitting"`` or ``"closed_form"``.
    :param reconstruction: the solver's :class:`~deepinv_tunable.solvers.Reconstruction` at the chosen ``k``.
    :param dict split_scores: splitting only: ``k -> (J, B)`` held-out score of each hold-out, from
        which :func:`one_standard_error_k` chose (``scores`` is their sum). ``None`` otherwise.
    """

    k: torch.Tensor
    scores: dict[int, torch.Tensor]
    rule: str
    reconstruction: object
    split_scores: dict[int, torch.Tensor] | None = None


#: The rules of :func:`select_k`; ``"auto"`` stands for :func:`default_k_rule` of the physics.
K_RULES = ("auto", "discrepancy", "sure", "splitting", "closed_form")


def default_k_rule(physics) -> str:
    r"""The rule :func:`select_k`'s ``"auto"`` stands for: ``"splitting"`` on CT
    (:class:`deepinv.physics.Tomography`), ``"sure"`` in denoising
    (:class:`deepinv.physics.Denoising`), ``"discrepancy"`` otherwise.

    In denoising SURE estimates the image error itself, without bias, so it needs no assumption
    on how closely the best estimate fits the data. The discrepancy principle does: it takes the
    first ``k`` that fits down to the noise, and with a latent weight (LatentMAP's
    :math:`\gamma = 1`) the best ``k`` can fit slightly less than that. On a non-reserved subject
    (flow, noise 0.1) the best k = 4096 left 1.06 :math:`m\sigma^2`, the discrepancy principle
    took 8192 (-1.6 dB), SURE took 4096.

    A generator that cannot represent a CT slice to the noise level keeps lowering its residual
    by fitting what few views leave unmeasured, so the discrepancy principle, which asks for the
    smallest ``k`` that reaches the noise, lands on large ``k``: on the training CT subject
    (flow, 60 views) it chose 12288 where 4096 was 1.1 dB better. Predicting whole held-out
    views, scored in the image-weighted norm
    (:func:`~deepinv_tunable.physics.measurement_energy`), sees that error: there it lost 0.6 dB,
    and nothing at 30 views. Elsewhere the discrepancy principle was the better rule (see
    :func:`select_k`); for a regularisation weight such as TV's, the discrepancy principle stays
    right on CT (:func:`~deepinv_tunable.autotune.default_rule`).

    >>> from deepinv_tunable.physics import build_physics
    >>> [default_k_rule(build_physics({"kind": kind}, (8, 8))) for kind in ("ct", "denoising", "mri")]
    ['splitting', 'sure', 'discrepancy']
    """
    if isinstance(physics, dinv.physics.Tomography):
        return "splitting"
    return "sure" if isinstance(physics, dinv.physics.Denoising) else "discrepancy"


def select_k(
    solver,
    y: torch.Tensor,
    physics,
    ks: Sequence[int],
    rule: str = "auto",
    holdout_fraction: float = 0.1,
    tau: float = 1.0,
    seed: int = 0,
    n_splits: int = 3,
    se_factor: float = 1.0,
    x_init: torch.Tensor | None = None,
    fits: Mapping[int, object] | None = None,
    spectrum: torch.Tensor | None = None,
    solve_kwargs: Mapping[str, object] | None = None,
) -> KSelection:
    r"""Choose ``k`` per example from the measurements alone, then reconstruct with it.

    ``solver`` is a tunable reconstructor whose ``reconstruct(y, physics, k=...)`` accepts a
    ``(B,)`` tensor of ``k`` (e.g. :class:`~deepinv_tunable.solvers.LatentMAP`).

    - ``"discrepancy"`` (Morozov): reconstruct with every ``k`` of ``ks``; per example, keep the
      smallest ``k`` with :math:`\|A\hat x_k - y\|^2 \le \tau m \sigma^2` (:math:`m` the non-zero
      entries of that example's ``y``, :math:`\sigma` the physics' noise std), or the smallest
      residual if none qualifies (see :func:`discrepancy_k`).
    - ``"sure"`` (Stein): reconstruct with every ``k``; per example, keep the ``k`` with the
      smallest :func:`~deepinv_tunable.autotune.sure_score`, whose Monte-Carlo probe re-solves
      from :math:`y + \epsilon b` exactly as the fit was made (one more solve per ``k``; the same
      probe :math:`b` for every ``k``, drawn from ``seed``). Unbiased for the prediction error
      :math:`\|A(\hat x_k - x)\|^2`: the image error in denoising, blind to the null space of
      :math:`A` elsewhere.
    - ``"splitting"``: fit every ``k`` on the measurements kept by the package's one splitting
      rule (:func:`~deepinv_tunable.autotune.split_keeps`: whole views on CT, whole sampled
      lines on Cartesian MRI, random entries elsewhere) through :func:`masked_physics`, score
      the held-out residual per example in the image-weighted norm
      (:func:`~deepinv_tunable.physics.measurement_energy`) on each of ``n_splits`` disjoint
      hold-outs, keep per example the smallest ``k`` within ``se_factor`` standard errors of the
      best (:func:`one_standard_error_k`), then reconstruct from all of ``y`` with it.
    - ``"closed_form"``: no sweep: :func:`closed_form_k` on the generator's ``spectrum`` at the
      noise level (the physics', else estimated from ``y``), then one solve. Denoising and
      single-coil Cartesian MRI only.

    :param list ks: candidate latent sizes.
    :param str rule: ``"auto"`` (default: :func:`default_k_rule`: splitting on CT, SURE in
        denoising, the discrepancy principle elsewhere), ``"discrepancy"``, ``"sure"``,
        ``"splitting"`` or ``"closed_form"``. On the reserved subjects
        (``benchmarks/run_k_study.py``: denoising at 5 noise levels, MRI at 4 accelerations, CT
        at 3 view counts; the shipped flow at :math:`\gamma = 0` and 1, the VAEs at 0) ``"auto"``
        came within 0.5 dB of the oracle k in every measured case, all 14 interior optima
        included (worst -0.39 dB; CT 30 / 60 / 120 views: +0.10 / 0.00 / -0.14 dB with the
        one-standard-error choice, against 0.00 / -0.17 / -0.32 for the plain minimum). The
        discrepancy principle alone misses the flow's interior optimum at :math:`\gamma = 1`,
        noise 0.1, by 2.94 dB (with the latent weight the best estimate fits a little less than
        the noise), and CT 60 / 120 by 0.6 / 0.4 dB; splitting alone loses up to 7 dB in
        denoising (a full-size flow fits the kept pixels and predicts nothing of the held-out
        ones); ``"closed_form"`` is within 0.16 dB on all 18 denoising and MRI cases at
        :math:`\gamma = 0`.
    :param float holdout_fraction: for ``"splitting"`` where single entries are held out. Default 0.1.
    :param float tau: for ``"discrepancy"``. Default 1.
    :param int seed: seeds the hold-out (the same seed, the same split). Default 0.
    :param int n_splits: for ``"splitting"``: the held-out scores are summed over this many
        disjoint hold-outs (as many as fit, :func:`~deepinv_tunable.autotune.max_splits`), each
        costing one solve per ``k``. At 30 CT views on a training subject, single hold-outs of 10 %
        of the views (three seeds) picked the best k on 1 to 2 of 3 slices, their summed score on
        all 3. Default 3.
    :param float se_factor: for ``"splitting"``: how many standard errors of the paired per-split
        differences a smaller ``k`` may trail the best by (:func:`one_standard_error_k`; 0: the
        plain minimum of the summed score). Default 1.
    :param torch.Tensor x_init: single-channel start image for the fits on partial data
        (default: the measurement-only estimate of the kept entries, held-out ones zeroed).
    :param dict fits: ``k -> Reconstruction`` of ``y`` already computed (e.g. by a sweep); every
        rule reuses them instead of solving again.
    :param torch.Tensor spectrum: for ``"closed_form"``: the generator's :func:`generator_spectrum`
        (shipped generators: :func:`load_spectrum` of their folder).
    :param dict solve_kwargs: passed to every ``solver.reconstruct`` call. A sampler (a solver
        with ``stochastic = True``, e.g. :class:`~deepinv_tunable.solvers.TunableLDMSolver`) needs a
        seed here (``{"seed": 0}``), and ``"sure"`` refuses it without one: the probe must draw
        the noise its fit drew, or the divergence measures the sampler's randomness. ``fits``
        must have been made with the same arguments. Default none.
    """
    ks = _ks(ks)
    solve_kwargs = dict(solve_kwargs or {})
    rule = default_k_rule(physics) if _check_k_rule(rule) == "auto" else rule
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    batch = y.shape[0]
    scores: dict[int, torch.Tensor] = {}
    if rule == "closed_form":
        if spectrum is None:
            raise ValueError("rule='closed_form' needs the generator's spectrum (load_spectrum of its folder)")
        k = closed_form_k(spectrum, physics, resolve_sigma(y, physics)[0], ks)
        chosen = torch.full((batch,), k)
        result = (fits or {}).get(k) or solver.reconstruct(y, physics, k=k, **solve_kwargs)
        return KSelection(k=chosen, scores={}, rule=rule, reconstruction=replace(result, k=chosen))
    if rule == "sure" and getattr(solver, "stochastic", False) and "seed" not in solve_kwargs:
        raise ValueError(  # before the solves, not after them
            f"rule='sure' on a stochastic solver ({type(solver).__name__}) needs solve_kwargs={{'seed': ...}}: "
            "the divergence probe must draw the noise its fit drew"
        )
    if rule in ("discrepancy", "sure"):
        fits = {k: (fits or {}).get(k) or solver.reconstruct(y, physics, k=k, **solve_kwargs) for k in ks}
        # the solver's own noise level where it records one, else the physics' (or estimated)
        sigma = fits[ks[0]].parameters.get("sigma") or resolve_sigma(y, physics)[0]
    if rule == "sure":
        # the probe re-solves exactly as the fit was made (a warm start at the fit would measure
        # the optimiser's progress, not the estimator's divergence); one probe for every k
        scores = {
            k: sure_score(
                y,
                fits[k].x,
                physics,
                sigma,
                lambda y_, physics_, k=k: solver.reconstruct(y_, physics_, k=k, **solve_kwargs).x,
                torch.Generator(device=y.device).manual_seed(seed),
            ).cpu()
            for k in ks
        }
        ordered = sorted(ks)  # argmin keeps the first of equal scores: ties go to the smaller k
        chosen = torch.tensor(ordered)[torch.stack([scores[k] for k in ordered]).argmin(0)]
        result = _from_fits(fits, chosen, {"sure": _per_example(scores, chosen)})
        return KSelection(k=chosen, scores=scores, rule=rule, reconstruction=result)
    if rule == "discrepancy":
        m = (y != 0).flatten(1).sum(1).cpu()
        scores = {k: fit.extras["residual_sq"].detach().cpu() for k, fit in fits.items()}
        chosen = torch.tensor(
            [discrepancy_k({k: float(scores[k][b]) for k in ks}, int(m[b]), sigma, tau) for b in range(batch)]
        )
        result = _from_fits(fits, chosen, {"residual_sq": _per_example(scores, chosen)})
        return KSelection(k=chosen, scores=scores, rule=rule, reconstruction=result)
    se_factor = _nonnegative(se_factor, "se_factor")  # before the solves, not after them
    per_split: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for keep in split_keeps(y, physics, seed, n_splits, holdout_fraction=holdout_fraction):
        split = masked_physics(physics, keep)
        y_keep = y * keep
        # from the kept entries only: a start computed from all of y hands the held-out entries to
        # the fit (in denoising a full-size generator keeps them where the start put them, and
        # "predicts" them perfectly; a flow's splitting score then chose k = K at every noise level)
        start = measurement_estimate(y_keep, physics) if x_init is None else x_init
        for k in ks:
            x_hat = solver.reconstruct(y_keep, split, k=k, x_init=start, **solve_kwargs).x
            per_split[k].append(residual_sq(x_hat, y, physics, ~keep, image_norm=True).detach().cpu())
    split_scores = {k: torch.stack(v) for k, v in per_split.items()}  # k -> (J, B)
    scores = {k: v.sum(0) for k, v in split_scores.items()}
    chosen = one_standard_error_k(split_scores, se_factor)
    if fits is not None and all(int(k) in fits for k in chosen):
        result = _from_fits(fits, chosen, {})
    else:
        result = solver.reconstruct(y, physics, k=chosen.to(y.device), **solve_kwargs)
    return KSelection(k=chosen, scores=scores, rule=rule, reconstruction=result, split_scores=split_scores)


def _per_example(table: Mapping[int, torch.Tensor], chosen: torch.Tensor) -> torch.Tensor:
    """Entry ``b`` of ``table[chosen[b]]`` for every example ``b``, stacked."""
    return torch.stack([table[int(k)][b] for b, k in enumerate(chosen)])


def _from_fits(fits: Mapping[int, object], chosen: torch.Tensor, extras: dict):
    """A new result holding, per example ``b``, the estimate of ``fits[chosen[b]]`` (the fits may
    belong to the caller, so none is modified)."""
    x = _per_example({k: fit.x for k, fit in fits.items()}, chosen)
    return replace(fits[int(chosen[0])], x=x, k=chosen, chi2=None, extras=extras)


def _check_k_rule(rule: str) -> str:
    if rule not in K_RULES:
        raise ValueError(f"rule must be one of {K_RULES}, got {rule!r}")
    return rule


class AutoK(TunableReconstructor):
    r"""A tunable solver whose ``k`` is chosen per example from the measurements alone
    (:func:`select_k`), as a deepinv ``Reconstructor``.

    :param solver: tunable reconstructor accepting ``k`` (e.g. :class:`~deepinv_tunable.solvers.LatentMAP`).
    :param list ks: candidate latent sizes.
    :param str rule: ``"auto"`` (default; see :func:`select_k`), ``"discrepancy"``, ``"splitting"``
        or ``"closed_form"`` (then pass ``spectrum=``).
    :param int seed: seed of the measurement split. Default 0.
    """

    def __init__(self, solver, ks: Sequence[int], rule: str = "auto", seed: int = 0, **select_kwargs):
        super().__init__()
        self.solver, self.ks, self.rule, self.seed = solver, _ks(ks), _check_k_rule(rule), int(seed)
        self.select_kwargs = select_kwargs

    def _solve(self, y, physics, **kwargs):
        sel = select_k(self.solver, y, physics, self.ks, rule=self.rule, seed=self.seed, **self.select_kwargs)
        result = sel.reconstruction
        result.extras = {**result.extras, "k_scores": sel.scores, "k_rule": sel.rule}
        return result
