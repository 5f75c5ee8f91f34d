r"""The HVAE reconstruction :math:`\mathrm{HVAE}(x, \tau(\sigma))` as a deepinv denoiser
(:footcite:t:`prost2023pnphvae`), so deepinv's PnP solvers (HQS, ADMM, PGD, DRS) run with it unchanged."""

from __future__ import annotations

from collections.abc import Callable

import deepinv as dinv
import numpy as np
import torch

from ..nets.hvae import HVAE
from .levels import FrozenPrior, by_noise_level, noise_levels

#: noise std (images in [0, 1]) -> temperature of the PnP-HVAE paper: 2.55, 7.65 and 12.75 on
#: a 0-255 scale give tau = 0.95, 0.8 and 0.6.
PAPER_SIGMAS = (2.55 / 255, 7.65 / 255, 12.75 / 255)
PAPER_TAUS = (0.95, 0.8, 0.6)
#: noise stds the temperature map is calibrated for, with a factor 2 margin above the paper's
#: last point: beyond it the temperature stays at its floor and the HVAE removes no more noise
HVAE_SIGMA_RANGE = (0.0, 2 * PAPER_SIGMAS[-1])


def tau_for_sigma(sigma: float) -> float:
    r"""Temperature for noise std ``sigma`` (images in [0, 1]): piecewise linear through the
    paper's points :math:`(0.01, 0.95), (0.03, 0.8), (0.05, 0.6)`, constant outside them, so
    monotone non-increasing: more noise, stronger regularisation.

    >>> tau_for_sigma(0.0), tau_for_sigma(7.65 / 255), tau_for_sigma(1.0)
    (0.95, 0.8, 0.6)
    """
    return _interpolate_tau(sigma, PAPER_SIGMAS, PAPER_TAUS)


def _interpolate_tau(sigma: float, sigmas: tuple[float, ...], taus: tuple[float, ...]) -> float:
    """Piecewise-linear temperature through ``(sigmas, taus)``, constant outside them."""
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise level sigma must be a finite number >= 0, got {sigma}")
    return float(np.interp(sigma, sigmas, taus))


#: noise stds and the temperature at which the corpus HVAE (``hvae_mri64``) denoises best there,
#: on 16 clean slices of four training subjects (``pyradiomics_brain1``, ``pyradiomics_lung1``,
#: ``nibabel_anatomical``, ``dipy_aniso_vox``) with Gaussian noise added, tau on the grid
#: 0.2, 0.4, 0.6, ..., 1: this HVAE wants a higher temperature than the paper's model
#: (1 up to noise 0.02, where the paper's map gives 0.95-0.87).
CORPUS_HVAE_SIGMAS = (0.02, 0.04, 0.08, 0.12)
#: the best temperature at each noise std of :data:`CORPUS_HVAE_SIGMAS`
CORPUS_HVAE_TAUS = (1.0, 0.9, 0.7, 0.6)


def corpus_tau_for_sigma(sigma: float) -> float:
    r"""Temperature for noise std ``sigma`` measured for the corpus HVAE ``hvae_mri64``:
    piecewise linear through :data:`~deepinv_tunable.priors.hvae_denoiser.CORPUS_HVAE_SIGMAS` / :data:`~deepinv_tunable.priors.hvae_denoiser.CORPUS_HVAE_TAUS`, constant
    outside them (non-increasing, like :func:`tau_for_sigma`). Used where the HVAE denoises at a
    sequence of levels (DPIR's continuation, ``benchmarks/run_reserved.py``'s ``pnp_hvae annealed``).

    >>> corpus_tau_for_sigma(0.01), corpus_tau_for_sigma(0.06), corpus_tau_for_sigma(0.19)
    (1.0, 0.8, 0.6)
    """
    return _interpolate_tau(sigma, CORPUS_HVAE_SIGMAS, CORPUS_HVAE_TAUS)


class HVAEDenoiser(FrozenPrior, dinv.models.Denoiser):
    r"""Denoiser :math:`D_\sigma(x) = \mathrm{HVAE}(x, \tau(\sigma))`.

    Images with more channels than the HVAE (e.g. 2-channel complex MRI images) are denoised
    channel by channel. A noise std outside ``sigma_range`` (default
    :data:`~deepinv_tunable.priors.hvae_denoiser.HVAE_SIGMA_RANGE`)
    is denoised at the nearest temperature, with one warning.

    :param ~deepinv_tunable.nets.HVAE hvae: a trained hierarchical VAE.
    :param Callable tau_map: noise std -> temperature in (0, 1]; must be non-increasing.
        Default :func:`tau_for_sigma`.
    :param bool pad: pad image sizes that are not a multiple of the HVAE stride. Default True.
    :param tuple sigma_range: ``(low, high)`` noise stds the temperature map is valid for.
        Default :data:`~deepinv_tunable.priors.hvae_denoiser.HVAE_SIGMA_RANGE`.

    :Examples:

        >>> import deepinv as dinv
        >>> from deepinv_tunable.nets import HVAE
        >>> denoiser = HVAEDenoiser(HVAE(width=8, groups_per_scale=(1, 1)))
        >>> denoiser(torch.rand(1, 1, 16, 16), sigma=0.05).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(
        self,
        hvae: HVAE,
        tau_map: Callable[[float], float] = tau_for_sigma,
        pad: bool = True,
        sigma_range: tuple[float, float] = HVAE_SIGMA_RANGE,
    ):
        super().__init__()
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.hvae = hvae
        self.tau_map = tau_map
        self.pad = pad

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        levels = noise_levels(sigma, x.shape[0], "HVAEDenoiser (sigma sets the temperature)")
        self.check_noise_range(levels)
        self.check_image_range(x, levels)
        out = by_noise_level(x.to(self.network_dtype()), levels, lambda xs, s: self._denoise(xs, self.tau_map(s)))
        return out.to(x.dtype)

    def _denoise(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        groups = self.split_channels(x, self.hvae.config["in_channels"])
        return self.hvae.reconstruct(groups, tau, pad=self.pad).reshape(x.shape)
