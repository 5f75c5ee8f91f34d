r"""Blind DnCNN denoisers (one noise level each) as one deepinv denoiser for every noise level.

A network trained at noise std :math:`\sigma_m` is applied at another level :math:`\sigma` by
scaling the image so that its noise matches: with :math:`s = \sigma_m / \sigma`,

.. math::

    D_\sigma(x) = \frac{1}{s} D_{\sigma_m}(s\, x),

taking the model :math:`m` whose :math:`\sigma_m` is nearest to :math:`\sigma` in log scale (the
smallest scaling). Blind networks used below their training level over-smooth, and above it
leave noise; the scaling removes both, at the price of showing the network image contrasts
(``s`` times the usual) it was not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import deepinv as dinv
import torch

from ..nets.dncnn import DnCNN
from .levels import FrozenPrior, by_noise_level, noise_levels

#: the scico models shipped under ``deepinv_tunable.pretrained`` (sigma 0.06, 0.10, 0.20)
SCICO_MODELS = ("dncnn_scico_17L", "dncnn_scico_17M", "dncnn_scico_17H")
#: how far the image may be scaled onto a network's training level: beyond, the network sees
#: contrasts (``MAX_SCALE`` times the usual) or noise it never met, and a warning says so
MAX_SCALE = 20.0
MIN_SCALE = 0.2


class DnCNNDenoiser(FrozenPrior, dinv.models.Denoiser):
    r"""Noise-level-adapted blind DnCNN denoisers, a deepinv :class:`~deepinv.models.Denoiser`.

    Images with several channels (deepinv's 2-channel complex MRI images) are denoised channel
    by channel. :attr:`~deepinv_tunable.priors.levels.NoiseRangeCheck.sigma_range` runs from the
    lowest training level over ``MAX_SCALE`` to the highest over ``MIN_SCALE`` (scico's and the
    corpus' L/M/H: [0.003, 1]; on reserved brain slices the corpus family takes
    :math:`\sigma = 1` from 6.2 to 19.4 dB, 0.01 from 41.9 to 45.8 dB); a level outside it is
    denoised with one warning, and :math:`\sigma = 0` returns the image (nothing to remove).

    :param Sequence[~deepinv_tunable.nets.DnCNN] nets: blind networks, each with its ``trained_sigma``.

    :Examples:

        >>> from deepinv_tunable.priors import DnCNNDenoiser
        >>> den = DnCNNDenoiser.from_pretrained()
        >>> x = torch.full((1, 1, 32, 32), 0.5)
        >>> y = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        >>> bool((den(y, 0.05) - x).pow(2).mean() < (y - x).pow(2).mean() / 10)
        True

    Reference: Zhang et al., "Beyond a Gaussian denoiser", IEEE TIP 2017; the weights are
    scico's (see ``deepinv_tunable/pretrained/dncnn_scico_17M/README.md``).
    """

    def __init__(self, nets: Sequence[DnCNN]):
        super().__init__()
        if not nets or any(n.trained_sigma is None or n.trained_sigma <= 0 for n in nets):
            raise ValueError("DnCNNDenoiser needs at least one network with a positive trained_sigma")
        order = sorted(range(len(nets)), key=lambda i: nets[i].trained_sigma)
        self.nets = torch.nn.ModuleList([nets[i] for i in order])
        self.sigmas = [n.trained_sigma for n in self.nets]
        self.sigma_range = (self.sigmas[0] / MAX_SCALE, self.sigmas[-1] / MIN_SCALE)

    @classmethod
    def from_pretrained(cls, names: Sequence[str] = SCICO_MODELS, device: torch.device | str = "cpu") -> DnCNNDenoiser:
        """The shipped networks ``names`` (default: scico's L, M and H models)."""
        from .. import pretrained

        return cls([pretrained.load(n, device=device) for n in names])

    def pick(self, sigma: float) -> int:
        """Index of the network whose training noise is nearest to ``sigma`` in log scale."""
        return min(range(len(self.sigmas)), key=lambda i: abs(math.log(self.sigmas[i] / sigma)))

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        levels = noise_levels(sigma, x.shape[0], "DnCNNDenoiser")
        self.check_noise_range(levels)
        self.check_image_range(x, levels)
        out = by_noise_level(x.to(self.network_dtype()), levels, self._denoise)
        return out.to(x.dtype)

    def _denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if sigma == 0:  # nothing to remove (deepinv's DDRM ends its schedule at 0); no scaling exists
            return x.clone()
        net = self.nets[self.pick(sigma)]
        scale = net.trained_sigma / sigma
        out = net(self.split_channels(x, 1) * scale) / scale
        return out.reshape(x.shape)
