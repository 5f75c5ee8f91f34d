r"""Diagnostics of generative priors: the empirical Lipschitz ratio of the tempered HVAE
reconstruction (:footcite:t:`prost2023pnphvae`, Fig. 1).

PnP-HVAE converges to a unique fixed point when :math:`x \mapsto \mathrm{HVAE}(x, \tau)` is a
contraction (paper Corollary 1). The ratios

.. math::

    r = \frac{\|\mathrm{HVAE}(u, \tau) - \mathrm{HVAE}(v, \tau)\|}{\|u - v\|},
    \qquad u = x_i + \sigma n_1,\; v = x_j + \sigma n_2,

over pairs of noisy images are lower bounds of its Lipschitz constant: ratios below 1 on the
inputs the algorithm meets are the evidence that the hypothesis holds there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..nets.hvae import HVAE


@torch.no_grad()
def lipschitz_ratios(
    hvae: HVAE,
    images: torch.Tensor,
    tau: float | Sequence[float],
    sigma: float,
    n_pairs: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Ratios :math:`\|H(u) - H(v)\| / \|u - v\|` for ``n_pairs`` random pairs.

    :param ~deepinv_tunable.nets.HVAE hvae: the hierarchical VAE.
    :param torch.Tensor images: ``(N, C, H, W)`` clean images, ``N >= 2``; each pair takes two
        different images.
    :param tau: temperature of :meth:`~deepinv_tunable.nets.HVAE.reconstruct`.
    :param float sigma: std of the Gaussian noise added independently to both inputs of a pair.
    :param int n_pairs: number of pairs. Default 64.
    :param torch.Generator generator: for reproducible pairs and noise.
    :return: ``(n_pairs,)`` ratios.

    :Examples:

        >>> hvae = HVAE(width=8, groups_per_scale=(1, 1))
        >>> lipschitz_ratios(hvae, torch.rand(4, 1, 16, 16), tau=0.8, sigma=0.1, n_pairs=3).shape
        torch.Size([3])
    """
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be (N, C, H, W) with N >= 2, got shape {tuple(images.shape)}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    n = images.shape[0]
    first = torch.randint(0, n, (n_pairs,), generator=generator)
    second = (first + torch.randint(1, n, (n_pairs,), generator=generator)) % n  # never the same image
    ratios = []
    for i, j in zip(first.tolist(), second.tolist()):
        pair = images[[i, j]]
        noisy = pair + sigma * torch.randn(pair.shape, generator=generator).to(pair)
        out = hvae.reconstruct(noisy, tau)
        ratios.append((out[0] - out[1]).norm() / (noisy[0] - noisy[1]).norm())
    return torch.stack(ratios)
