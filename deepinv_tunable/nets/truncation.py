r"""Latent truncation :math:`T_k` and nested-dropout sampling of :math:`k` (nested dropout :footcite:p:`rippel2014nested`, as the tunable-complexity priors use it :footcite:p:`tunable_complexity`).

A latent :math:`z` of shape ``(C, H, W)`` has :math:`K = CHW` coordinates, flattened in
**channel-major** order: coordinate :math:`i = c\,HW + h\,W + w`. :math:`T_k` keeps the first
:math:`k` coordinates and zeroes the rest, so small :math:`k` keeps the first channels (then a
raster-ordered part of the next one) and :math:`k = K` is the identity.

Truncation is a mask multiply: nothing is copied but the latent, and a batch may carry one
:math:`k` per example (a ``(B,)`` tensor). This module is the only place where truncation and
the nested-dropout distribution are defined; networks, training and solvers all call it.

:Examples:

    >>> import torch
    >>> z = torch.ones(2, 2, 2, 2)                   # K = 8
    >>> truncate(z, torch.tensor([3, 8])).flatten(1).sum(1)
    tensor([3., 8.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def latent_size(latent_shape: Sequence[int]) -> int:
    """Number of latent coordinates :math:`K` of a latent of shape ``(C, H, W)`` (or any shape)."""
    return math.prod(int(s) for s in latent_shape)


def check_k(k: int | torch.Tensor, K: int, name: str = "k") -> None:
    """Raise ``ValueError`` unless every value of ``k`` is an integer in ``[1, K]``."""
    values = torch.as_tensor(k)
    if values.is_floating_point() or values.is_complex():
        if not torch.equal(values, values.round()):
            raise ValueError(f"{name} must be an integer in [1, {K}], got {k}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty; expected an integer or a (B,) tensor of integers in [1, {K}]")
    lo, hi = int(values.min()), int(values.max())
    if lo < 1 or hi > K:
        bad = lo if lo < 1 else hi
        raise ValueError(f"{name} = {bad} is outside [1, {K}] (K = latent size)")


def truncation_mask(
    latent_shape: Sequence[int],
    k: int | torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Mask of :math:`T_k`: 1 on the first :math:`k` channel-major coordinates, 0 elsewhere.

    :param tuple latent_shape: ``(C, H, W)`` of one latent.
    :param k: an int (one mask, shape ``(1, C, H, W)``) or a ``(B,)`` tensor (shape ``(B, C, H, W)``).
    :param device: device of the mask (default: that of ``k`` if a tensor, else CPU).
    :param torch.dtype dtype: mask dtype. Default ``float32``.

    >>> truncation_mask((2, 1, 2), 3).flatten().tolist()
    [1.0, 1.0, 1.0, 0.0]
    """
    K = latent_size(latent_shape)
    check_k(k, K)
    if device is None:
        device = k.device if isinstance(k, torch.Tensor) else "cpu"
    ks = torch.as_tensor(k, device=device).reshape(-1, 1).long()
    index = torch.arange(K, device=device).unsqueeze(0)
    return (index < ks).to(dtype).reshape(-1, *latent_shape)


def truncate(z: torch.Tensor, k: int | torch.Tensor | None) -> torch.Tensor:
    r""":math:`T_k(z)` for a batch ``z`` of shape ``(B, C, H, W)``; ``k=None`` means :math:`k = K`.

    :param torch.Tensor z: latents.
    :param k: an int, or a ``(B,)`` tensor of per-example values, each in ``[1, K]``.
    :return: a new tensor; ``z`` is not modified.
    """
    if k is None:
        return z
    if isinstance(k, torch.Tensor) and k.ndim > 0 and k.numel() not in (1, z.shape[0]):
        raise ValueError(f"k holds {k.numel()} values for a batch of {z.shape[0]} latents; expected 1 or {z.shape[0]}")
    return z * truncation_mask(z.shape[1:], k, device=z.device, dtype=z.dtype)


def truncate_latent(z: torch.Tensor, k: int | torch.Tensor | None, latent_shape: Sequence[int]) -> torch.Tensor:
    """:func:`truncate` for a generator's input: checks that ``z`` is ``(B, *latent_shape)`` and
    that ``k`` lies in ``[1, K]`` first, with errors that name the values."""
    if tuple(z.shape[1:]) != tuple(latent_shape):
        raise ValueError(f"latent has shape {tuple(z.shape)}; expected (B, {', '.join(map(str, latent_shape))})")
    if k is not None:
        check_k(k, latent_size(latent_shape))
    return truncate(z, k)


@dataclass(frozen=True)
class KDistribution:
    r"""Distribution of the kept latent size :math:`k` on :math:`\{k_{\min}, \dots, K\}`.

    ``kind="geometric"``: truncated geometric, :math:`P(k) \propto p (1-p)^{k - k_{\min}}`
    (nested dropout; small :math:`p` spreads mass towards :math:`K`);
    ``kind="uniform"``: :math:`P(k) = 1 / (K - k_{\min} + 1)`.

    :param int K: full latent size.
    :param int k_min: smallest :math:`k`. Default 1.
    :param str kind: ``"geometric"`` (default) or ``"uniform"``.
    :param float p: geometric parameter in ``(0, 1]``; ignored for ``"uniform"``. Default ``1e-3``.

    >>> d = KDistribution(K=100, k_min=10, kind="uniform")
    >>> k = d.sample(1000, generator=torch.Generator().manual_seed(0))
    >>> int(k.min()) >= 10 and int(k.max()) <= 100
    True
    """

    K: int
    k_min: int = 1
    kind: str = "geometric"
    p: float = 1e-3

    def __post_init__(self):
        if self.K < 1:
            raise ValueError(f"K must be >= 1, got {self.K}")
        if not 1 <= self.k_min <= self.K:
            raise ValueError(f"k_min must be in [1, K={self.K}], got {self.k_min}")
        if self.kind not in ("geometric", "uniform"):
            raise ValueError(f"kind must be 'geometric' or 'uniform', got '{self.kind}'")
        if self.kind == "geometric" and not 0 < self.p <= 1:
            raise ValueError(f"p must be in (0, 1] for the geometric distribution, got {self.p}")

    @property
    def n_values(self) -> int:
        return self.K - self.k_min + 1

    def probabilities(self) -> torch.Tensor:
        """``P(k)`` for ``k = k_min ... K`` (float64, sums to 1)."""
        j = torch.arange(self.n_values, dtype=torch.float64)
        if self.kind == "uniform":
            return torch.full_like(j, 1.0 / self.n_values)
        logp = j * math.log1p(-self.p) if self.p < 1 else torch.where(j == 0, 0.0, -math.inf)
        w = torch.exp(logp - logp.max())
        return w / w.sum()

    def mean(self) -> float:
        """:math:`E[k]`, for logging and for choosing ``p``."""
        ks = torch.arange(self.k_min, self.K + 1, dtype=torch.float64)
        return float((self.probabilities() * ks).sum())

    def sample(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        r"""Draw ``n`` values of :math:`k` (``(n,)`` long tensor) by inverse-CDF sampling.

        For the geometric law with :math:`q = 1 - p` and :math:`N` values,
        :math:`j = \lfloor \log(1 - u (1 - q^N)) / \log q \rfloor`, :math:`k = k_{\min} + j`.
        """
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        if self.kind == "uniform" or self.n_values == 1:
            j = torch.floor(u * self.n_values)
        elif self.p >= 1:
            j = torch.zeros_like(u)
        else:
            log_q = math.log1p(-self.p)
            j = torch.floor(torch.log1p(u * math.expm1(self.n_values * log_q)) / log_q)
        return (self.k_min + j.clamp(0, self.n_values - 1)).long().to(device)
