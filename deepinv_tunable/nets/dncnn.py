r"""DnCNN (Zhang et al., 2017) in the layout of scico's flax models, so scico's pretrained weights
load without change of meaning.

``depth`` layers: a 3x3 convolution with ReLU, ``depth - 2`` blocks of 3x3 convolution, batch
normalisation (inference statistics, eps ``1e-5``) and ReLU, and a final 3x3 convolution that
predicts the noise; the output is the input minus that prediction. Every convolution has no bias
and circular padding. The network is blind: it was trained at one noise level
(``trained_sigma``, images in [0, 1]); :class:`~deepinv_tunable.priors.DnCNNDenoiser` maps other
noise levels onto it.

Reference: K. Zhang, W. Zuo, Y. Chen, D. Meng and L. Zhang, "Beyond a Gaussian denoiser:
residual learning of deep CNN for image denoising", IEEE TIP 26(7), 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import PretrainedMixin


class DnCNN(PretrainedMixin, nn.Module):
    r"""Residual DnCNN :math:`D(x) = x - R(x)`.

    :param int depth: number of convolution layers. Default 17.
    :param int channels: image channels. Default 1.
    :param int num_filters: feature channels. Default 64.
    :param float trained_sigma: noise std the weights were trained for (images in [0, 1]);
        ``None`` when unknown.

    :Examples:

        >>> net = DnCNN(depth=3, num_filters=4)
        >>> net(torch.zeros(1, 1, 8, 8)).abs().max().item()
        0.0
    """

    def __init__(self, depth: int = 17, channels: int = 1, num_filters: int = 64, trained_sigma: float | None = None):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        self.config = {"depth": depth, "channels": channels, "num_filters": num_filters, "trained_sigma": trained_sigma}
        self.trained_sigma = trained_sigma

        def conv(c_in: int, c_out: int) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular", bias=False)

        layers: list[nn.Module] = [conv(channels, num_filters), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [conv(num_filters, num_filters), nn.BatchNorm2d(num_filters, eps=1e-5), nn.ReLU()]
        layers.append(conv(num_filters, channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)
