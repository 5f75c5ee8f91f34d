r"""Tunable VAE: a small :class:`diffusers.AutoencoderKL` whose latent can be truncated by
:math:`T_k` (see :mod:`deepinv_tunable.nets.truncation`) before decoding, optionally around a fixed linear
code (principal components of the image's :math:`f \times f` patches) that the network refines."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ..utils.checks import check_model_images
from .checkpoint import PretrainedMixin
from .truncation import latent_size, truncate_latent


class PatchPCA(torch.nn.Module):
    r"""Whitened principal components of non-overlapping :math:`f \times f` image patches: the
    linear part of a :class:`TunableVAE` with ``linear_path=True``.

    With :math:`p = \mathrm{vec}(x_{\text{patch}}) \in \mathbb{R}^{f^2}`, patch mean :math:`\mu` and
    the leading eigenpairs :math:`(\lambda_c, v_c)` of the patch covariance,

    .. math::

        z_c = v_c^\top (p - \mu) / \sqrt{\lambda_c}, \qquad
        \hat p = \mu + \textstyle\sum_c \sqrt{\lambda_c}\, z_c\, v_c .

    Channel :math:`c` is the :math:`c`-th component, with unit variance on the fitting images: the
    order nested dropout asks for (a linear autoencoder trained with nested dropout recovers the
    principal components, :footcite:t:`rippel2014nested`), and a latent already scaled for
    diffusion. The buffers are zero until :meth:`fit` (or a checkpoint) sets them.

    :param int factor: patch side :math:`f`.
    :param int channels: number of components :math:`C \le f^2`.

    :Examples:

        >>> import torch
        >>> pca = PatchPCA(factor=2, channels=4)
        >>> x = torch.rand(3, 1, 8, 8)
        >>> _ = pca.fit(x)
        >>> torch.allclose(pca.decode(pca.encode(x)), x, atol=1e-4)  # all f^2 components: exact
        True
    """

    def __init__(self, factor: int, channels: int):
        super().__init__()
        if not 1 <= channels <= factor**2:
            raise ValueError(f"a {factor}x{factor} patch code has at most {factor**2} components, got {channels}")
        self.factor = int(factor)
        self.register_buffer("mean", torch.zeros(factor**2))
        self.register_buffer("analysis", torch.zeros(factor**2, channels))
        self.register_buffer("synthesis", torch.zeros(channels, factor**2))

    @property
    def fitted(self) -> bool:
        return bool(self.synthesis.abs().sum() > 0)

    @torch.no_grad()
    def fit(self, images: torch.Tensor | Sequence[torch.Tensor]) -> PatchPCA:
        r"""Set :math:`\mu, v_c, \lambda_c` from the patches of ``images`` (tensors ``(..., H, W)``
        with ``H, W`` multiples of :math:`f`; any other border is cropped)."""
        f = self.factor
        patches = []
        for x in [images] if isinstance(images, torch.Tensor) else images:
            x = x.reshape(-1, 1, *x.shape[-2:]).double()
            x = x[..., : x.shape[-2] // f * f, : x.shape[-1] // f * f]
            patches.append(F.pixel_unshuffle(x, f).movedim(1, -1).reshape(-1, f * f))
        p = torch.cat(patches)
        mean = p.mean(0)
        eigenvalues, vectors = torch.linalg.eigh(torch.cov((p - mean).T))
        c = self.analysis.shape[1]
        eigenvalues, vectors = eigenvalues.flip(0)[:c].clamp_min(1e-12), vectors.flip(1)[:, :c]
        self.mean.copy_(mean)
        self.analysis.copy_(vectors / eigenvalues.sqrt())
        self.synthesis.copy_((vectors * eigenvalues.sqrt()).T)
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images to ``(B, C, H/f, W/f)`` component maps."""
        p = F.pixel_unshuffle(x, self.factor) - self.mean.to(x.dtype)[:, None, None]
        return torch.einsum("bphw,pc->bchw", p, self.analysis.to(x.dtype))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` component maps to ``(B, 1, f h, f w)`` images."""
        p = torch.einsum("bchw,cp->bphw", z, self.synthesis.to(z.dtype)) + self.mean.to(z.dtype)[:, None, None]
        return F.pixel_shuffle(p, self.factor)


def vae_moments(
    x: torch.Tensor,
    encoder: torch.nn.Module,
    quant_conv: torch.nn.Module,
    space_to_depth: int = 1,
    patch_code: PatchPCA | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and log-variance of a :class:`TunableVAE`'s encoder path (shared with the
    severity encoder, which copies that path)."""
    h = F.pixel_unshuffle(x, space_to_depth) if space_to_depth > 1 else x
    mean, logvar = quant_conv(encoder(h)).chunk(2, dim=1)
    if patch_code is not None:
        mean = mean + patch_code.encode(x)
    return mean, logvar.clamp(-30.0, 20.0)


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
    :param int space_to_depth: the image is rearranged into ``space_to_depth**2`` channels
        (:func:`torch.nn.functional.pixel_unshuffle`) before the autoencoder, so that every
        convolution runs at the reduced resolution; the downsampling factor becomes
        ``space_to_depth * 2**(levels - 1)``. Default 1 (off).
    :param bool linear_path: add a :class:`~deepinv_tunable.nets.tunable_vae.PatchPCA` code of the factor's patches:
        :math:`E(x) = P(x) + E_\theta(x)` and :math:`D(z) = P^{-1}(z) + D_\theta(z)`, with the
        network's output layers starting at zero, so that an untrained model is the principal
        components code and training only adds what the linear code misses. Needs
        ``latent_channels <= factor**2``; the code is fitted by the training module. Default ``False``.

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
        space_to_depth: int = 1,
        linear_path: bool = False,
    ):
        super().__init__()
        self.config = {
            "image_size": [int(s) for s in image_size],
            "block_out_channels": [int(c) for c in block_out_channels],
            "latent_channels": int(latent_channels),
            "layers_per_block": int(layers_per_block),
            "norm_num_groups": int(norm_num_groups),
            "scaling_factor": float(scaling_factor),
            "space_to_depth": int(space_to_depth),
            "linear_path": bool(linear_path),
        }
        if space_to_depth < 1:
            raise ValueError(f"space_to_depth must be a positive integer, got {space_to_depth}")
        self.space_to_depth = int(space_to_depth)
        self.factor = self.space_to_depth * 2 ** (len(block_out_channels) - 1)
        h, w = self.config["image_size"]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"image_size {tuple(image_size)} must be a multiple of the downsampling factor {self.factor}"
            )
        levels = len(block_out_channels)
        depth = self.space_to_depth**2
        self.autoencoder = AutoencoderKL(
            in_channels=depth,
            out_channels=depth,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=max(h, w),
            mid_block_add_attention=False,
        )
        self.patch_code = PatchPCA(self.factor, latent_channels) if linear_path else None
        if linear_path:
            # the residual network starts silent (its posterior narrow) so the model starts as the linear code
            moments = self.autoencoder.quant_conv
            torch.nn.init.zeros_(moments.weight)
            torch.nn.init.zeros_(moments.bias)
            torch.nn.init.constant_(moments.bias[latent_channels:], -10.0)
            torch.nn.init.zeros_(self.autoencoder.decoder.conv_out.weight)
            torch.nn.init.zeros_(self.autoencoder.decoder.conv_out.bias)

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
        return vae_moments(
            x, self.autoencoder.encoder, self.autoencoder.quant_conv, self.space_to_depth, self.patch_code
        )

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`E(x) = \\mu(x)`, the deterministic encoding."""
        return self.encode(x)[0]

    def decode(self, z: torch.Tensor, k: int | torch.Tensor | None = None) -> torch.Tensor:
        """:math:`D(T_k z)`; ``k=None`` decodes the full latent."""
        z = truncate_latent(z, k, self.latent_shape)
        x = self.autoencoder.decoder(self.autoencoder.post_quant_conv(z))
        if self.space_to_depth > 1:
            x = F.pixel_shuffle(x, self.space_to_depth)
        return x if self.patch_code is None else x + self.patch_code.decode(z)

    def forward(self, x: torch.Tensor, k: int | torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic reconstruction :math:`D(T_k E(x))`."""
        return self.decode(self.encode_mean(x), k)
