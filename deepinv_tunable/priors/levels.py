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


class FrozenPrior(NoiseRangeCheck):
    r"""Mixin of the package's pretrained denoisers (with :class:`deepinv.models.Denoiser`): what a
    deepinv user expects of a prior that plugs into someone else's loop.

    - **Frozen in eval mode.** ``.train()`` (called by deepinv's ``Trainer``, Lightning, or any
      parent module) leaves the networks in eval mode: a DnCNN's BatchNorm would otherwise
      replace its statistics with those of the first batch it sees, permanently (37 dB to 5 dB).
      Fine-tune the network itself with a training recipe instead.
    - **Computes in its own dtype.** An input of another dtype (deepinv's ``DPS`` runs in
      float64) is computed in the network's dtype and returned in its own.
    - **Says when the input is out of its domain**: images far outside [0, 1] (e.g. [0, 255])
      and images with more channels than the network, split channel by channel, beyond
      deepinv's 2-channel complex convention (warned once per denoiser each).
    """

    _domain_warned: bool = False
    _channels_warned: bool = False

    def train(self, mode: bool = True):
        return super().train(False)

    def network_dtype(self) -> torch.dtype:
        """dtype of the network's weights."""
        return next(self.parameters()).dtype

    def check_image_range(self, x: torch.Tensor, levels: torch.Tensor) -> None:
        r"""Warn once when ``x`` reaches far above what an image in [0, 1] with noise std
        :math:`\sigma` reaches (:math:`1 + 6\sigma + 0.5`): the networks were trained on [0, 1]."""
        if self._domain_warned or not x.numel():
            return
        limit = 1.5 + 6.0 * float(levels.max())
        peak = float(x.detach().abs().amax())
        if peak > limit:
            self._domain_warned = True
            warnings.warn(
                f"{type(self).__name__}: input reaches {peak:.4g}, beyond {limit:.3g} (an image in [0, 1] with "
                f"noise std {float(levels.max()):.3g}); the networks were trained on images in [0, 1]: rescale "
                "the image (e.g. divide by 255) and sigma alike (warned once per denoiser)",
                RuntimeWarning,
                stacklevel=4,
            )

    def split_channels(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``x`` as ``(B * C / channels, channels, H, W)``: one network input per group of
        ``channels`` channels; warns once when that is not deepinv's 1- or 2-channel (complex)
        layout, since the channels are then denoised independently."""
        b, ch, h, w = x.shape
        if ch % channels:
            raise ValueError(
                f"{type(self).__name__}: images with {ch} channels cannot be split into the network's "
                f"{channels}-channel inputs"
            )
        if ch // channels > 2 and not self._channels_warned:
            self._channels_warned = True
            warnings.warn(
                f"{type(self).__name__}: {ch}-channel images are denoised one {channels}-channel group at a "
                "time by a network trained on single images: correlations between channels (colour) are "
                "ignored (warned once per denoiser)",
                RuntimeWarning,
                stacklevel=4,
            )
        return x.reshape(b * ch // channels, channels, h, w)
