r"""Ordered normalizing flow: a RealNVP-style coupling flow whose latent coordinates are
ordered by nested dropout (Bekasov & Murray, 2020), so :math:`f(T_k z)` is a meaningful
:math:`k`-dimensional generator for every :math:`k`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils.checks import check_model_images
from .checkpoint import PretrainedMixin
from .truncation import latent_size, truncate_latent


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``, each 2x2 block into channels (invertible)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


class AffineCoupling(nn.Module):
    r"""Affine coupling on a channel split :math:`(x_a, x_b)`:
    :math:`y_b = x_b \odot e^{s(x_a)} + t(x_a)`, :math:`y_a = x_a`, with
    :math:`s = \tanh(\cdot)` bounded for stability; :math:`\log|\det J| = \sum s`.
    ``flip`` swaps the roles of the two halves."""

    def __init__(self, channels: int, hidden: int, flip: bool):
        super().__init__()
        self.flip = flip
        self.half = channels // 2
        n_in, n_out = (channels - self.half, self.half) if flip else (self.half, channels - self.half)
        self.net = nn.Sequential(
            nn.Conv2d(n_in, hidden, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, 2 * n_out, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # starts as the identity map
        nn.init.zeros_(self.net[-1].bias)

    def _split(self, x):
        a, b = x[:, : self.half], x[:, self.half :]
        return (b, a) if self.flip else (a, b)

    def _join(self, a, b):
        return torch.cat([b, a] if self.flip else [a, b], dim=1)

    def _params(self, a):
        s, t = self.net(a).chunk(2, dim=1)
        return torch.tanh(s), t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> data direction; returns ``(y, log|det J|)`` per example."""
        a, b = self._split(x)
        s, t = self._params(a)
        return self._join(a, b * s.exp() + t), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent direction; returns ``(x, log|det J^{-1}|)`` per example."""
        a, b = self._split(y)
        s, t = self._params(a)
        return self._join(a, (b - t) * (-s).exp()), -s.flatten(1).sum(1)


class OrderedFlow(nn.Module, PretrainedMixin):
    r"""Multi-scale coupling flow :math:`x = f(z)` on ``(B, 1, H, W)`` images, latent ``(4^L, H/2^L, W/2^L)``.

    Each of the ``levels`` squeezes and applies ``couplings_per_level`` affine couplings
    (alternating halves). The latent has as many coordinates as the image, flattened
    channel-major like every latent of the package; nested-dropout training
    (:class:`~deepinv_tunable.training.flow.OrderedFlowModule`) orders them so that
    :meth:`decode` with a small ``k`` gives a coarse image.

    :param tuple image_size: ``(H, W)``, multiples of :math:`2^L`. Default ``(128, 128)``.
    :param int levels: squeeze levels :math:`L`. Default 3.
    :param int couplings_per_level: couplings per level. Default 4.
    :param int hidden: channels of the coupling networks. Default 32.

    :Examples:

        >>> flow = OrderedFlow(image_size=(8, 8), levels=1, couplings_per_level=2, hidden=8)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> torch.allclose(flow.decode(flow.encode_mean(x)), x, atol=1e-5)
        True
    """

    def __init__(
        self, image_size: Sequence[int] = (128, 128), levels: int = 3, couplings_per_level: int = 4, hidden: int = 32
    ):
        super().__init__()
        self.config = {
            "image_size": [int(s) for s in image_size],
            "levels": int(levels),
            "couplings_per_level": int(couplings_per_level),
            "hidden": int(hidden),
        }
        h, w = self.config["image_size"]
        if h % 2**levels or w % 2**levels:
            raise ValueError(f"image_size {tuple(image_size)} must be a multiple of 2^levels = {2**levels}")
        self.levels = nn.ModuleList(
            nn.ModuleList(AffineCoupling(4 ** (lvl + 1), hidden, flip=bool(i % 2)) for i in range(couplings_per_level))
            for lvl in range(levels)
        )

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config["image_size"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        n, (h, w) = self.config["levels"], self.image_size
        return (4**n, h // 2**n, w // 2**n)

    @property
    def latent_dim(self) -> int:
        return latent_size(self.latent_shape)

    def check_images(self, x: torch.Tensor, name: str = "x") -> None:
        check_model_images(x, self.image_size, "this flow", name)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`z = f^{-1}(x)` and :math:`\\log|\\det \\partial f^{-1}/\\partial x|` per example."""
        self.check_images(x)
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for level in self.levels:
            x = squeeze(x)
            for coupling in reversed(level):
                x, ld = coupling.inverse(x)
                logdet = logdet + ld
        return x, logdet

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`x = f(z)`."""
        for level in reversed(self.levels):
            for coupling in level:
                z, _ = coupling(z)
            z = unsqueeze(z)
        return z

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`f^{-1}(x)` (the same interface as a VAE's deterministic encoder)."""
        return self.inverse(x)[0]

    def decode(self, z: torch.Tensor, k: int | torch.Tensor | None = None) -> torch.Tensor:
        """:math:`f(T_k z)`."""
        return self.generate(truncate_latent(z, k, self.latent_shape))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per dimension (nats) under a standard normal latent."""
        z, logdet = self.inverse(x)
        d = z[0].numel()
        log_pz = -0.5 * (z.flatten(1).pow(2).sum(1) + d * torch.log(torch.tensor(2 * torch.pi)))
        return -(log_pz + logdet) / d
