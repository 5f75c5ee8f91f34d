r"""Tunable VAE: a small :class:`diffusers.AutoencoderKL` whose latent can be truncated by
:math:`T_k` (see :mod:`deepinv_tunable.latent`) before decoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import AutoencoderKL

from ..checks import check_model_images
from ..latent import latent_size, truncate_latent
from .checkpoint import PretrainedMixin


class TunableVAE(torch.nn.Module, PretrainedMixin):
    r"""Variational autoencoder with a spatial latent :math:`z \in \mathbb{R}^{C \times h \times w}`
    and a decoder that accepts truncated latents :math:`T_k z`.

    The backbone is :class:`diffusers.AutoencoderKL` configured small (no attention, one
    ResNet block per level). The encoder gives :math:`q(z|x) = \mathcal{N}(\mu(x), \mathrm{diag}\,
    e^{\ell(x)})`; :meth:`decode` computes :math:`D(T_k z)`. Trained with nested dropout
    (:mod:`deepinv_tunable.training.vae`), the first latent coordinates carry the coarse content,
    so one model serves every :math:`k \in [1, K]`, :math:`K = C h w` (``latent_dim``).

    Images are single-channel ``(B, 1, H, W)`` in :math:`[0, 1]`, with ``H, W`` multiples of the
    downsampling factor :math:`2^{(\text{levels} - 1)}`; ``image_size`` fixes the size the latent
    ordering (and so :math:`k`) refers to.

    :param tuple image_size: ``(H, W)`` the model is trained for. Default ``(128, 128)``.
    :param tuple block_out_channels: channels per level. Default ``(16, 32, 64, 64)`` (factor 8).
    :param int latent_channels: :math:`C`. Default 8.
    :param int layers_per_block: ResNet blocks per level. Default 1.
    :param int norm_num_groups: GroupNorm groups. Default 8.
    :param float scaling_factor: latent scale used by latent diffusion (set after training to
        :math:`1/\mathrm{std}(z)`). Default 1.

    :Examples:

        >>> import torch
        >>> vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
        >>> vae.latent_shape, vae.latent_dim
        ((2, 16, 16), 512)
        >>> vae.decode(vae.encode_mean(torch.rand(1, 1, 32, 32)), k=100).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(
        self,
        image_size: Sequence[int] = (128, 128),
        block_out_channels: Sequence[int] = (16, 32, 64, 64),
        latent_channels: int = 8,
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        self.config = {
            "image_size": [int(s) for s in image_size],
            "block_out_channels": [int(c) for c in block_out_channels],
            "latent_channels": int(latent_channels),
            "layers_per_block": int(layers_per_block),
            "norm_num_groups": int(norm_num_groups),
            "scaling_factor": float(scaling_factor),
        }
        self.factor = 2 ** (len(block_out_channels) - 1)
        h, w = self.config["image_size"]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image_size {tuple(image_size)} must be a multiple of the downsampling factor {self.factor}"
            )
        levels = len(block_out_channels)
        self.autoencoder = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=max(h, w),
            mid_block_add_attention=False,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config["image_size"])

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latent of one ``image_size`` image."""
        h, w = self.image_size
        return (self.config["latent_channels"], h // self.factor, w // self.factor)

    @property
    def latent_dim(self) -> int:
        """Full latent size :math:`K`."""
        return latent_size(self.latent_shape)

    def check_images(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, 1, H, W)`` with ``(H, W) == image_size``."""
        check_model_images(x, self.image_size, "this VAE", name, " (its latent ordering and k refer to that size)")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters :math:`(\\mu, \\log\\sigma^2)` of :math:`q(z|x)`, each ``(B, C, h, w)``."""
        self.check_images(x)
        moments = self.autoencoder.quant_conv(self.autoencoder.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`E(x) = \\mu(x)`, the deterministic encoding."""
        return self.encode(x)[0]

    def decode(self, z: torch.Tensor, k: int | torch.Tensor | None = None) -> torch.Tensor:
        """:math:`D(T_k z)`; ``k=None`` decodes the full latent."""
        return self.autoencoder.decoder(self.autoencoder.post_quant_conv(truncate_latent(z, k, self.latent_shape)))

    def forward(self, x: torch.Tensor, k: int | torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic reconstruction :math:`D(T_k E(x))`."""
        return self.decode(self.encode_mean(x), k)
