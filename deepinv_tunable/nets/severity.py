r"""Severity encoder (Flash-Diffusion :footcite:p:`fabian2023adapt`): from a degraded image, the clean latent
and how wrong that estimate is.

.. math::

    \hat z = E_\psi(\tilde x), \qquad
    \hat\sigma^2 = \frac{1}{d} \sum_i \big[W \hat z\big]_i^2 ,

with :math:`\tilde x` the measurement-only estimate (:math:`A^\dagger y`, zero-filled MRI, FBP,
the blurred image), :math:`E_\psi` a copy of the tunable VAE's encoder (mean branch) and
:math:`W` a learned :math:`1 \times 1` convolution on the :math:`C` latent channels.
:math:`\hat z` estimates the VAE latent of the clean image :math:`E_0(x_0)` and
:math:`\hat\sigma^2` the per-coordinate variance of :math:`\hat z - E_0(x_0)`, both in the VAE's
own latent units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .checkpoint import PretrainedMixin
from .tunable_vae import TunableVAE, vae_moments


class SeverityEncoder(torch.nn.Module, PretrainedMixin):
    r"""Predicts the clean latent :math:`\hat z` and the error variance :math:`\hat\sigma^2` of a
    degraded image.

    :param dict vae: the :class:`~deepinv_tunable.nets.TunableVAE` config whose encoder architecture is copied (its
        ``config``); only the encoder and its moment convolution are kept, not the decoder.
    :param str source: name or path of the VAE the weights were initialised from (recorded so a
        solver can find the matching decoder and diffusion model). Default ``None``.
    :param list sigma2_range: ``[low, high]`` of :math:`\hat\sigma^2` over the severities the encoder
        was trained on (set when a training run exports it); values outside are flagged by
        :meth:`in_trained_range`. Default ``None`` (no range known: nothing is flagged).
    :param str unet: name or path of the latent diffusion model trained on the same VAE. Default ``None``.
    :param float variance_scale: calibration :math:`s` of the reported variance, :math:`\hat\sigma^2 = s\,
        \overline{(W\hat z)^2}`, measured when a training run exports the encoder (the median ratio of
        the true squared error of :math:`\hat z` to the head's report on held-out slices). Default 1
        (uncalibrated; what training uses).

    :Examples:

        >>> import torch
        >>> vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
        >>> enc = SeverityEncoder.from_vae(vae)
        >>> x = torch.rand(3, 1, 32, 32)
        >>> z_hat, sigma2 = enc(x)
        >>> z_hat.shape, sigma2.shape
        (torch.Size([3, 2, 16, 16]), torch.Size([3]))
        >>> torch.allclose(z_hat, vae.encode_mean(x))  # starts as the VAE's encoder
        True
    """

    def __init__(
        self,
        vae: dict,
        source: str | None = None,
        sigma2_range: Sequence[float] | None = None,
        unet: str | None = None,
        variance_scale: float = 1.0,
    ):
        super().__init__()
        if sigma2_range is not None:
            sigma2_range = [float(v) for v in sigma2_range]
            if len(sigma2_range) != 2 or not 0 <= sigma2_range[0] <= sigma2_range[1]:
                raise ValueError(f"sigma2_range must be [low, high] with 0 <= low <= high, got {sigma2_range}")
        if not variance_scale > 0:
            raise ValueError(f"variance_scale must be > 0, got {variance_scale}")
        self.config = {
            "vae": dict(vae),
            "source": source,
            "sigma2_range": sigma2_range,
            "unet": unet,
            "variance_scale": float(variance_scale),
        }
        backbone = TunableVAE(**vae)
        self.image_size = backbone.image_size
        self.latent_shape = backbone.latent_shape
        self.encoder = backbone.autoencoder.encoder
        self.quant_conv = backbone.autoencoder.quant_conv
        self.space_to_depth = backbone.space_to_depth
        self.patch_code = backbone.patch_code
        c = backbone.latent_shape[0]
        self.head = torch.nn.Conv2d(c, c, kernel_size=1)

    @classmethod
    def from_vae(cls, vae: TunableVAE, source: str | None = None) -> SeverityEncoder:
        """A severity encoder whose encoder starts as ``vae``'s (the head is freshly initialised)."""
        encoder = cls(vae.config, source=source)
        encoder.encoder.load_state_dict(vae.autoencoder.encoder.state_dict())
        encoder.quant_conv.load_state_dict(vae.autoencoder.quant_conv.state_dict())
        if vae.patch_code is not None:
            encoder.patch_code.load_state_dict(vae.patch_code.state_dict())
        return encoder.to(next(vae.parameters()).device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(z_hat, sigma2_hat)``: latents ``(B, C, h, w)`` and per-example variances ``(B,)``."""
        if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"degraded image has shape {tuple(x.shape)}; this severity encoder expects "
                f"(B, 1, {self.image_size[0]}, {self.image_size[1]}) images"
            )
        z_hat = vae_moments(x, self.encoder, self.quant_conv, self.space_to_depth, self.patch_code)[0]
        return z_hat, self.config["variance_scale"] * self.head(z_hat).pow(2).flatten(1).mean(1)

    def in_trained_range(self, sigma2: torch.Tensor) -> torch.Tensor:
        """Boolean ``(B,)``: whether each :math:`\\hat\\sigma^2` lies within ``sigma2_range``."""
        bounds = self.config["sigma2_range"]
        if bounds is None:
            return torch.ones_like(sigma2, dtype=torch.bool)
        return (sigma2 >= bounds[0]) & (sigma2 <= bounds[1])
