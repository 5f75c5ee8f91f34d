r"""A noise-conditional DRUNet (Zhang et al., 2021) with the package's checkpoint format.

The body :math:`F` is deepinv's :class:`deepinv.models.DRUNet` (a U-Net of residual blocks fed
an image and a constant map of a noise embedding), wrapped in Karras et al.'s preconditioning
(EDM, NeurIPS 2022) with data std :math:`\sigma_d`:

.. math::

    D(x, \sigma) = c_\mathrm{skip}(\sigma)\, x + c_\mathrm{out}(\sigma)\,
    F\big(c_\mathrm{in}(\sigma)\, x,\ c_\mathrm{noise}(\sigma)\big), \qquad
    c_\mathrm{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
    c_\mathrm{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
    c_\mathrm{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
    c_\mathrm{noise} = \tfrac14 \log \sigma.

At small :math:`\sigma` the network only predicts a correction of size :math:`\sigma` (a plain
U-Net would have to learn the identity to within :math:`\sigma`, which it does poorly at the
levels where a plug-and-play solver ends); at large :math:`\sigma` it predicts the image. The
input scaling :math:`c_\mathrm{in}` and the logarithmic embedding keep the body's inputs of unit
size over the whole diffusion range (deepinv's ``DPS`` and ``DiffPIR`` start near
:math:`\sigma = 80` on images in [0, 1], where an unscaled input would be 300 times larger than
at the levels a plug-and-play solver ends on). The
class records the constructor's arguments and the noise range the weights were trained over, so
the weights ship as ``config.json`` + ``model.safetensors`` and a denoiser can warn when it is
asked for a noise level it never saw.

Reference: K. Zhang, Y. Li, W. Zuo, L. Zhang, L. Van Gool and R. Timofte, "Plug-and-play image
restoration with deep denoiser prior", IEEE TPAMI 44(10), 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import deepinv as dinv
import torch
from torch import nn

from .checkpoint import PretrainedMixin


class ConditionalDRUNet(PretrainedMixin, nn.Module):
    r"""Noise-conditional denoiser :math:`D(x, \sigma)` for images in [0, 1].

    :param int channels: image channels. Default 1 (complex images are denoised as two real
        channels by :class:`~deepinv_tunable.priors.PixelDenoiser`).
    :param Sequence[int] nc: feature channels per scale. Default ``(32, 64, 128, 256)`` (deepinv's
        pretrained DRUNet uses ``(64, 128, 256, 512)``; a quarter of its cost per pixel).
    :param int nb: residual blocks per scale. Default 2.
    :param Sequence[float] sigma_range: ``(low, high)`` noise stds the weights were trained on;
        ``None`` for untrained weights.
    :param float sigma_data: :math:`\sigma_d` of the preconditioning. Default 0.25 (images in [0, 1]).

    :Examples:

        >>> net = ConditionalDRUNet(nc=(8, 8, 8, 8), nb=1)
        >>> net(torch.zeros(2, 1, 16, 16), torch.tensor([0.1, 0.2])).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        channels: int = 1,
        nc: Sequence[int] = (32, 64, 128, 256),
        nb: int = 2,
        sigma_range: Sequence[float] | None = None,
        sigma_data: float = 0.25,
    ):
        super().__init__()
        if len(nc) != 4:
            raise ValueError(f"nc needs 4 feature counts (one per scale), got {list(nc)}")
        if sigma_range is not None and not (len(sigma_range) == 2 and 0 < sigma_range[0] < sigma_range[1]):
            raise ValueError(f"sigma_range must be (low, high) with 0 < low < high, got {sigma_range}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.config = {
            "channels": channels,
            "nc": list(nc),
            "nb": nb,
            "sigma_range": None if sigma_range is None else [float(s) for s in sigma_range],
            "sigma_data": float(sigma_data),
        }
        self.sigma_data = float(sigma_data)
        self.sigma_range = None if sigma_range is None else (float(sigma_range[0]), float(sigma_range[1]))
        self.net = dinv.models.DRUNet(in_channels=channels, out_channels=channels, nc=list(nc), nb=nb, pretrained=None)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(c_\mathrm{skip}, c_\mathrm{out})` for noise stds ``sigma``, shaped ``(B, 1, 1, 1)``."""
        s = sigma.reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        return sd2 / (s**2 + sd2), s * self.sigma_data / (s**2 + sd2).sqrt()

    def body(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        r""":math:`F(c_\mathrm{in} x, c_\mathrm{noise})`, the DRUNet alone (its training target is
        scaled by :math:`1/c_\mathrm{out}`)."""
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = (s**2 + self.sigma_data**2).rsqrt()
        # sigma = 0 (a noiseless call) has c_out = 0: the floor only keeps the unused body finite
        c_noise = sigma.clamp_min(1e-8).log().div(4).reshape(-1)
        return self.net(c_in * x, c_noise)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).flatten().expand(x.shape[0])
        c_skip, c_out = self.coefficients(sigma)
        return c_skip * x + c_out * self.body(x, sigma)
