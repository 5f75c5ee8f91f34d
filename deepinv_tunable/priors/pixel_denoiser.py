r"""The shipped noise-conditional pixel denoiser as a deepinv :class:`~deepinv.models.Denoiser`,
for deepinv's plug-and-play and diffusion samplers (``DPIR``, ``DiffPIR``, ``DPS``, ``DDRM``,
``PosteriorDiffusion``) without change.
"""

from __future__ import annotations

from pathlib import Path

import deepinv as dinv
import torch

from ..nets.drunet import ConditionalDRUNet
from .levels import FrozenPrior, noise_levels


class PixelDenoiser(FrozenPrior, dinv.models.Denoiser):
    r"""Noise-conditional denoiser :math:`D(x, \sigma)` from a :class:`~deepinv_tunable.nets.ConditionalDRUNet`.

    Images with more channels than the network (deepinv's 2-channel complex MRI images with a
    single-channel network) are denoised channel by channel at the same noise level. A level
    outside the network's training range (``sigma_range``) is still denoised, with one warning.
    Inputs of another dtype (deepinv's DPS runs in float64) are computed in the network's dtype
    and returned in their own.

    :param ~deepinv_tunable.nets.ConditionalDRUNet net: trained network.

    The shipped ``drunet_edm_corpus`` (``recipes/train_drunet_corpus.yaml``, 32,768 updates over
    :math:`\sigma \in [0.002, 80]`; see its model card and ``docs/pixel_prior.rst``) loads with
    ``PixelDenoiser.from_pretrained("drunet_edm_corpus")``; ``from_pretrained`` also loads a
    training run's ``model/`` folder.

    :Examples:

        >>> from deepinv_tunable.nets import ConditionalDRUNet
        >>> den = PixelDenoiser(ConditionalDRUNet(nc=(8, 8, 8, 8), nb=1, sigma_range=(0.002, 1.0)))
        >>> den(torch.rand(2, 2, 16, 16), 0.05).shape  # complex MRI image: channel by channel
        torch.Size([2, 2, 16, 16])

    Reference: Zhang et al., "Plug-and-play image restoration with deep denoiser prior",
    IEEE TPAMI 2021 (the architecture; the weights are trained on this package's corpus).
    """

    def __init__(self, net: ConditionalDRUNet):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.sigma_range = net.sigma_range

    @classmethod
    def from_pretrained(cls, name: str | Path, device: torch.device | str = "cpu") -> PixelDenoiser:
        """A shipped network ``name`` or a folder written by ``save_pretrained`` (a training run's ``model/``)."""
        from .. import pretrained

        net = pretrained.load(name, device=device)
        if not isinstance(net, ConditionalDRUNet):
            raise ValueError(f"'{name}' holds a {type(net).__name__}, not a ConditionalDRUNet")
        return cls(net)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        levels = noise_levels(sigma, x.shape[0], "PixelDenoiser")
        self.check_noise_range(levels)
        self.check_image_range(x, levels)
        b, ch, h, w = x.shape
        c = self.net.config["channels"]
        groups = self.split_channels(x, c)
        per_image = levels.expand(b) if levels.numel() == 1 else levels
        dtype = self.network_dtype()
        sigma_rows = per_image.repeat_interleave(ch // c).to(device=x.device, dtype=dtype)
        out = self.net(groups.to(dtype), sigma_rows)
        return out.reshape(b, ch, h, w).to(x.dtype)


#: the corpus DnCNN family, mapped to every noise level by scaling
CORPUS_DNCNN = ("dncnn_corpus_17L", "dncnn_corpus_17M", "dncnn_corpus_17H")
#: the pixel prior the package's DPIR, PixelFlash and recipes use when none is named: one place
#: to change when a trained noise-conditional prior measures better than the DnCNN family
DEFAULT_PIXEL_DENOISER = "dncnn-corpus"
#: the pixel prior trained as a diffusion model over the whole noise range (sigma in [0.002, 80] on
#: [0, 1] images): the denoiser of the samplers that start from pure noise (DPS), which call it at
#: sigma of order 100 where the blind DnCNN family (trained at sigma <= 0.2) has no answer
DIFFUSION_PIXEL_DENOISER = "drunet_edm_corpus"


def load_pixel_denoiser(
    name: str | Path = DEFAULT_PIXEL_DENOISER, device: torch.device | str = "cpu"
) -> dinv.models.Denoiser:
    """The pixel denoiser of the plug-and-play and diffusion solvers by name (default
    :data:`~deepinv_tunable.priors.pixel_denoiser.DEFAULT_PIXEL_DENOISER`): ``"dncnn-corpus"`` (the corpus DnCNNs,
    :class:`~deepinv_tunable.priors.DnCNNDenoiser`), ``"dncnn-scico"`` (scico's natural-image
    DnCNNs), or a :class:`PixelDenoiser` checkpoint (shipped name or ``save_pretrained`` folder)."""
    from .dncnn_denoiser import DnCNNDenoiser

    if str(name) == "dncnn-corpus":
        return DnCNNDenoiser.from_pretrained(CORPUS_DNCNN, device=device)
    if str(name) == "dncnn-scico":
        return DnCNNDenoiser.from_pretrained(device=device)
    return PixelDenoiser.from_pretrained(name, device=device)
