"""Noise levels of a deepinv ``Denoiser`` call: one for the batch, or one per image."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def noise_levels(sigma: float | torch.Tensor | None, batch: int, who: str) -> torch.Tensor:
    """``sigma`` as a flat float64 tensor of 1 or ``batch`` finite, non-negative values.

    >>> noise_levels(0.1, 4, "D").tolist()
    [0.1]
    """
    if sigma is None:
        raise ValueError(f"{who} needs the noise level sigma")
    levels = torch.as_tensor(sigma, dtype=torch.float64).flatten().cpu()
    if levels.numel() not in (1, batch):
        raise ValueError(f"sigma has {levels.numel()} values for a batch of {batch} images")
    if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any()):
        raise ValueError(f"{who}: sigma must be finite and >= 0, got {levels.tolist()}")
    return levels


def by_noise_level(
    x: torch.Tensor, levels: torch.Tensor, denoise: Callable[[torch.Tensor, float], torch.Tensor]
) -> torch.Tensor:
    """``denoise(x, level)`` on the whole batch when all levels agree, image by image otherwise."""
    if levels.numel() == 1 or bool((levels == levels[0]).all()):
        return denoise(x, float(levels[0]))
    return torch.cat([denoise(x[i : i + 1], float(s)) for i, s in enumerate(levels)])


class NoiseRangeCheck:
    r"""Mixin of the package's denoisers: the noise stds they are valid for, and one warning
    per denoiser the first time a call asks for a level outside them.

    A plug-and-play or diffusion sampler drives a denoiser through a whole schedule of noise
    levels (deepinv's DiffPIR asks for up to :math:`\sigma \approx 78` on images in [0, 1]); a
    network asked far outside what it was trained on returns confident junk, and nothing in the
    sampler would say so. The check lives in the denoiser, so every sampler gets it.
    """

    #: ``(low, high)`` noise stds (images in [0, 1]) the denoiser is valid for
    sigma_range: tuple[float, float] | None = None
    _range_warned: bool = False

    def check_noise_range(self, levels: torch.Tensor) -> None:
        """Warn once (per denoiser) when a level of ``levels`` lies outside :attr:`sigma_range`."""
        if self.sigma_range is None or self._range_warned:
            return
        low, high = self.sigma_range
        outside = levels[(levels < low) | (levels > high)]
        if outside.numel():
            self._range_warned = True
            warnings.warn(
                f"{type(self).__name__}: asked for noise std {float(outside[0]):.4g}, outside the range "
                f"[{low:g}, {high:g}] it was trained for (images in [0, 1]); its output there is an "
                "extrapolation (warned once per denoiser)",
                RuntimeWarning,
                stacklevel=4,
            )
