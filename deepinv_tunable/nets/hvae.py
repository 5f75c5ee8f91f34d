r"""Fully convolutional hierarchical VAE (VDVAE blocks with a spatial top latent, as in
PatchVDVAE) with tempered hierarchical encoding (:footcite:t:`prost2023pnphvae`, Algorithm 1; VDVAE blocks :footcite:p:`child2021vdvae`).

Latent groups :math:`z_0, \dots, z_{L-1}` run coarse to fine. Each group has a diagonal
Gaussian prior :math:`p(z_l | z_{<l}) = \mathcal{N}(\mu_{p,l}, s_{p,l}^2)` and posterior
:math:`q(z_l | z_{<l}, x) = \mathcal{N}(\mu_{q,l}, s_{q,l}^2)`; the decoder is
:math:`\mathcal{N}(\mu_\theta(z), \gamma^2 I)` with a fixed :math:`\gamma`. The top-down pass
starts from a zero feature map of the image's size divided by the stride instead of VDVAE's
learned constant, so the model runs on every image size that is a multiple of the HVAE's
``stride`` (other sizes are padded and cropped back).

Tempered encoding (paper Algorithm 1) picks, group by group and elementwise, with
:math:`\lambda_l = 1/\tau_l^2 - 1`,

.. math::

    z_l = \frac{\mu_{q,l}/s_{q,l}^2 + \lambda_l\, \mu_{p,l}/s_{p,l}^2}{1/s_{q,l}^2 + \lambda_l/s_{p,l}^2},

the mode of :math:`q(z_l|\cdot)\, p(z_l|\cdot)^{\lambda_l}`: :math:`\tau_l = 1` is the encoder
mean, :math:`\tau_l \to 0` the prior mean. :math:`\mathrm{HVAE}(x, \tau) = \mu_\theta(E_\tau(x))`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import PretrainedMixin

#: bound of the soft clamp on log standard deviations (std in about [7e-3, 150]).
_LOGSTD_BOUND = 5.0


def _conv(c_in: int, c_out: int, size: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, size, padding=size // 2)


class _Block(nn.Module):
    """VDVAE bottleneck block: GELU then 1x1, 3x3, 3x3, 1x1 convolutions; residual when the
    widths agree. ``zero_out`` starts the last convolution at zero (identity residual, or a
    standard-normal prior head)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, residual: bool = True, zero_out: bool = False):
        super().__init__()
        self.residual = residual and c_in == c_out
        self.convs = nn.ModuleList(
            [_conv(c_in, c_mid, 1), _conv(c_mid, c_mid, 3), _conv(c_mid, c_mid, 3), _conv(c_mid, c_out, 1)]
        )
        if zero_out:
            nn.init.zeros_(self.convs[-1].weight)
            nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = conv(F.gelu(h))
        return x + h if self.residual else h


def _split_gaussian(t: torch.Tensor, z_channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, raw_logstd, rest = t[:, :z_channels], t[:, z_channels : 2 * z_channels], t[:, 2 * z_channels :]
    return mean, _LOGSTD_BOUND * torch.tanh(raw_logstd / _LOGSTD_BOUND), rest


def gaussian_kl_diag(mq: torch.Tensor, lq: torch.Tensor, mp: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal{N}(m_q, e^{2 l_q}) \| \mathcal{N}(m_p, e^{2 l_p}))
    = l_p - l_q + \frac{e^{2 l_q} + (m_q - m_p)^2}{2 e^{2 l_p}} - \frac12` (``l`` are log stds).

    >>> z = torch.zeros(3)
    >>> gaussian_kl_diag(z, z, z, z).tolist()
    [0.0, 0.0, 0.0]
    """
    return lp - lq + 0.5 * ((2 * lq).exp() + (mq - mp).pow(2)) / (2 * lp).exp() - 0.5


def tempered_gaussian(
    mq: torch.Tensor, lq: torch.Tensor, mp: torch.Tensor, lp: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean and std of the tempered distribution of one group, :math:`q \cdot p^{\lambda}` with
    :math:`\lambda = 1/\tau^2 - 1` (:footcite:t:`prost2023pnphvae`, Algorithm 1): a Gaussian of precision
    :math:`1/s_q^2 + \lambda/s_p^2`; ``l`` are log standard deviations.

    >>> m = torch.tensor([1.0]); zero = torch.zeros(1)
    >>> [t.item() for t in tempered_gaussian(m, zero, -m, zero, 1 / 2 ** 0.5)]
    [0.0, 0.7071067690849304]
    """
    lam = 1.0 / tau**2 - 1.0
    wq, wp = (-2 * lq).exp(), lam * (-2 * lp).exp()
    return (wq * mq + wp * mp) / (wq + wp), (wq + wp).rsqrt()


def tempered_mode(mq: torch.Tensor, lq: torch.Tensor, mp: torch.Tensor, lp: torch.Tensor, tau: float) -> torch.Tensor:
    r"""The tempered encoding of one group: the mode of :math:`q \cdot p^{\lambda}`,
    :math:`\lambda = 1/\tau^2 - 1` (:footcite:t:`prost2023pnphvae`, Algorithm 1); ``l`` are log standard deviations.

    >>> m = torch.tensor([1.0]); zero = torch.zeros(1)
    >>> tempered_mode(m, zero, -m, zero, 1.0).item(), tempered_mode(m, zero, -m, zero, 1 / 2 ** 0.5).item()
    (1.0, 0.0)
    """
    return tempered_gaussian(mq, lq, mp, lp, tau)[0]


class _TopDownGroup(nn.Module):
    """One stochastic group: prior and posterior heads, latent projection, residual block."""

    def __init__(self, width: int, mid: int, z_channels: int):
        super().__init__()
        self.z_channels = z_channels
        self.posterior = _Block(2 * width, mid, 2 * z_channels, residual=False)
        self.prior = _Block(width, mid, 2 * z_channels + width, residual=False, zero_out=True)
        self.z_proj = _conv(z_channels, width, 1)
        self.res = _Block(width, mid, width)

    def forward(
        self, h: torch.Tensor, act: torch.Tensor | None, mode: str, tau: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        mp, lp, features = _split_gaussian(self.prior(h), self.z_channels)
        kl = None
        if mode == "prior":
            noise = torch.randn(mp.shape, generator=generator, device=mp.device, dtype=mp.dtype)
            z = mp + tau * lp.exp() * noise
        else:
            mq, lq, _ = _split_gaussian(self.posterior(torch.cat([h, act], dim=1)), self.z_channels)
            if mode == "sample":
                noise = torch.randn(mq.shape, generator=generator, device=mq.device, dtype=mq.dtype)
                z = mq + lq.exp() * noise
                kl = gaussian_kl_diag(mq, lq, mp, lp)
            elif mode == "tempered_sample":
                mean, std = tempered_gaussian(mq, lq, mp, lp, tau)
                z = mean + std * torch.randn(mq.shape, generator=generator, device=mq.device, dtype=mq.dtype)
            else:
                z = tempered_mode(mq, lq, mp, lp, tau)
        h = h + features + self.z_proj(z)
        return self.res(h), kl, z


@dataclass
class ELBO:
    """Evidence lower bound of a batch, in nats per image (each a ``(B,)`` tensor)."""

    log_likelihood: torch.Tensor
    kl: torch.Tensor
    kl_per_group: list[torch.Tensor]

    @property
    def elbo(self) -> torch.Tensor:
        return self.log_likelihood - self.kl


class HVAE(PretrainedMixin, nn.Module):
    r"""Fully convolutional hierarchical VAE (PatchVDVAE-style) with tempered encoding.

    :param int in_channels: image channels. Default 1.
    :param int width: feature channels at every scale. Default 32.
    :param int mid_channels: bottleneck width inside blocks. Default ``width // 2``.
    :param int z_channels: channels of each latent group. Default 4.
    :param Sequence[int] groups_per_scale: stochastic groups at each scale, coarse to fine;
        ``n`` scales give a stride of :math:`2^{n-1}`. Default ``(2, 2, 1, 1)`` (L = 6, stride 8).
    :param int blocks_per_scale: bottom-up residual blocks per scale. Default 1.
    :param float gamma: fixed standard deviation :math:`\gamma` of the Gaussian decoder, in image
        units (images in [0, 1]). Default 0.03.
    :param tuple image_size: training image size, recorded for model cards (any multiple of
        the stride runs). Default ``(64, 64)``.

    :Examples:

        >>> hvae = HVAE(width=8, groups_per_scale=(1, 1))
        >>> x = torch.rand(2, 1, 16, 16)
        >>> hvae.reconstruct(x, tau=0.8).shape, hvae.stride, hvae.n_groups
        (torch.Size([2, 1, 16, 16]), 2, 2)
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        mid_channels: int | None = None,
        z_channels: int = 4,
        groups_per_scale: Sequence[int] = (2, 2, 1, 1),
        blocks_per_scale: int = 1,
        gamma: float = 0.03,
        image_size: Sequence[int] = (64, 64),
    ):
        super().__init__()
        if not groups_per_scale or min(groups_per_scale) < 1:
            raise ValueError(
                f"groups_per_scale must be a non-empty list of positive counts, got {list(groups_per_scale)}"
            )
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        mid = mid_channels or max(1, width // 2)
        self.config = {
            "in_channels": in_channels,
            "width": width,
            "mid_channels": mid,
            "z_channels": z_channels,
            "groups_per_scale": list(groups_per_scale),
            "blocks_per_scale": blocks_per_scale,
            "gamma": gamma,
            "image_size": list(image_size),
        }
        self.gamma = gamma
        self.groups_per_scale = list(groups_per_scale)
        #: image size over top-latent size (a power of 2): image sizes must be multiples of it
        self.stride = 2 ** (len(groups_per_scale) - 1)
        self.n_groups = sum(groups_per_scale)
        self.in_conv = _conv(in_channels, width, 3)
        self.bottom_up = nn.ModuleList(  # fine to coarse
            nn.Sequential(*[_Block(width, mid, width) for _ in range(blocks_per_scale)]) for _ in groups_per_scale
        )
        self.groups = nn.ModuleList(_TopDownGroup(width, mid, z_channels) for _ in range(self.n_groups))
        self.out_conv = _conv(width, in_channels, 3)

    # -- helpers -------------------------------------------------------------------------
    def temperatures(self, tau: float | Sequence[float]) -> list[float]:
        """``tau`` as one temperature per group, each checked to lie in (0, 1]."""
        taus = [float(tau)] * self.n_groups if isinstance(tau, (int, float)) else [float(t) for t in tau]
        if len(taus) != self.n_groups:
            raise ValueError(f"tau has {len(taus)} values; this HVAE has {self.n_groups} latent groups")
        bad = [t for t in taus if not 0.0 < t <= 1.0]
        if bad:
            raise ValueError(f"temperature tau must lie in (0, 1], got {bad[0]}")
        return taus

    def _check(self, x: torch.Tensor, pad: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.dim() != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"expected images (B, {self.config['in_channels']}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            if not pad:
                raise ValueError(
                    f"image size {h}x{w} is not a multiple of the HVAE stride {self.stride}; "
                    "pass pad=True to pad and crop back"
                )
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, (h, w)

    def _bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.in_conv(x)
        acts = []
        for i, blocks in enumerate(self.bottom_up):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = blocks(h)
            acts.append(h)
        return acts[::-1]  # coarse to fine

    def _top_down(
        self,
        acts: list[torch.Tensor] | None,
        top_shape: tuple[int, ...],
        mode: str,
        taus: list[float],
        generator: torch.Generator | None,
        device,
        dtype,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        h = torch.zeros(top_shape, device=device, dtype=dtype)
        kls, zs, g = [], [], 0
        for s, n in enumerate(self.groups_per_scale):
            if s > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            for _ in range(n):
                h, kl, z = self.groups[g](h, None if acts is None else acts[s], mode, taus[g], generator)
                if kl is not None:
                    kls.append(kl)
                zs.append(z)
                g += 1
        return self.out_conv(F.gelu(h)), kls, zs

    # -- public API ----------------------------------------------------------------------
    def elbo(
        self, x: torch.Tensor, generator: torch.Generator | None = None, target: torch.Tensor | None = None
    ) -> ELBO:
        r"""One-sample ELBO :math:`\log \mathcal{N}(x; \mu_\theta(z), \gamma^2 I) - \sum_l
        \mathrm{KL}(q(z_l|\cdot) \| p(z_l|\cdot))`, per image, in nats (the size must be a
        multiple of the stride).

        ``target`` (default ``x``) is the image the likelihood scores while the encoder sees ``x``:
        with ``x`` a corrupted copy of ``target`` this is the denoising criterion of
        :footcite:t:`im2017denoising` (:math:`z \sim q(z|\tilde x)`, likelihood of the clean image).
        """
        x, _ = self._check(x, pad=False)
        if target is None:
            target = x
        elif target.shape != x.shape:
            raise ValueError(f"target has shape {tuple(target.shape)}; expected the input's {tuple(x.shape)}")
        acts = self._bottom_up(x)
        mean, kls, _ = self._top_down(
            acts, acts[0].shape, "sample", [1.0] * self.n_groups, generator, x.device, x.dtype
        )
        d = x[0].numel()
        log_lik = -0.5 * (target - mean).pow(2).flatten(1).sum(1) / self.gamma**2 - 0.5 * d * math.log(
            2 * math.pi * self.gamma**2
        )
        per_group = [kl.flatten(1).sum(1) for kl in kls]
        return ELBO(log_likelihood=log_lik, kl=torch.stack(per_group).sum(0), kl_per_group=per_group)

    def reconstruct(
        self,
        x: torch.Tensor,
        tau: float | Sequence[float] = 1.0,
        pad: bool = True,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r""":math:`\mathrm{HVAE}(x, \tau) = \mu_\theta(E_\tau(x))`.

        :param torch.Tensor x: images ``(B, C, H, W)``.
        :param tau: temperature in (0, 1], one float or one per group. Default 1 (encoder means).
        :param bool pad: pad sizes that are not a multiple of :attr:`stride` (replicate) and
            crop back; with ``False`` such sizes raise ``ValueError``. Default True.
        :param bool sample: draw each group from the tempered distribution
            (:func:`~deepinv_tunable.nets.hvae.tempered_gaussian`) instead of taking its mode, so
            the output is a random decoder mean given ``x``. Default False (deterministic).
        :param torch.Generator generator: noise source when ``sample`` (default: torch's global RNG).
        """
        taus = self.temperatures(tau)
        xp, (h, w) = self._check(x, pad)
        acts = self._bottom_up(xp)
        mode = "tempered_sample" if sample else "tempered"
        mean, _, _ = self._top_down(acts, acts[0].shape, mode, taus, generator, xp.device, xp.dtype)
        return mean[..., :h, :w]

    def added_groups(self, groups_per_scale: Sequence[int]) -> list[int]:
        """Indices (coarse to fine) of the groups :meth:`grown` adds for ``groups_per_scale``:
        each scale's new groups come after its existing ones.

        :raises ValueError: another number of scales, or fewer groups at some scale.

        >>> HVAE(width=8, groups_per_scale=(1, 1)).added_groups((2, 2))
        [1, 3]
        """
        new, old = [int(n) for n in groups_per_scale], self.groups_per_scale
        if len(new) != len(old) or any(n < o for n, o in zip(new, old)):
            raise ValueError(
                f"groups_per_scale {new} cannot grow this HVAE's {old}: same number of scales, "
                "at least as many groups at each"
            )
        added, start = [], 0
        for n_old, n_new in zip(old, new):
            added += range(start + n_old, start + n_new)
            start += n_new
        return added

    def grown(self, groups_per_scale: Sequence[int], proj_scale: float = 0.1) -> HVAE:
        r"""A copy with more latent groups per scale that computes the same reconstructions.

        Each existing group keeps its weights and its order within its scale; each new group is
        appended after them and starts as the identity: its prior and posterior heads output
        :math:`\mathcal{N}(0, I)` (so its KL is 0 and its tempered code is 0), its residual block
        is the identity, and its latent projection is ``proj_scale`` times a default initialisation
        (small but not zero, so a sampled code carries a gradient to the posterior). Training from
        the copy adds capacity where the new groups sit (function-preserving growth, as in
        Net2Net) instead of starting a larger model from random weights.

        :param Sequence[int] groups_per_scale: the new groups per scale, coarse to fine; as many
            scales as this model, none with fewer groups.
        :param float proj_scale: scale of the new groups' latent projections. Default 0.1.
        :raises ValueError: another number of scales, or fewer groups at some scale.

        >>> small = HVAE(width=8, groups_per_scale=(1, 1)).eval()
        >>> big = small.grown((1, 2)).eval()
        >>> x = torch.rand(1, 1, 8, 8)
        >>> big.n_groups, bool(torch.allclose(big.reconstruct(x, 0.9), small.reconstruct(x, 0.9)))
        (3, True)
        """
        new = [int(n) for n in groups_per_scale]
        added = set(self.added_groups(new))
        model = HVAE(**{**self.config, "groups_per_scale": new}).to(self.in_conv.weight.device)
        for name in ("in_conv", "bottom_up", "out_conv"):
            getattr(model, name).load_state_dict(getattr(self, name).state_dict())
        source = iter(self.groups)
        for j, group in enumerate(model.groups):
            if j not in added:
                group.load_state_dict(next(source).state_dict())
                continue
            with torch.no_grad():
                for block in (group.posterior, group.res):
                    block.convs[-1].weight.zero_()
                    block.convs[-1].bias.zero_()
                group.z_proj.weight.mul_(proj_scale)
                group.z_proj.bias.zero_()
        model.gamma = self.gamma
        model.train(self.training)
        return model

    def encode_tempered(
        self, x: torch.Tensor, tau: float | Sequence[float] = 1.0, pad: bool = True
    ) -> list[torch.Tensor]:
        """The latents :math:`E_\\tau(x) = (z_0, \\dots, z_{L-1})` of tempered encoding."""
        taus = self.temperatures(tau)
        xp, _ = self._check(x, pad)
        acts = self._bottom_up(xp)
        return self._top_down(acts, acts[0].shape, "tempered", taus, None, xp.device, xp.dtype)[2]

    def sample(
        self, shape: Sequence[int], tau: float | Sequence[float] = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decoder means of latents drawn from the tempered prior (std scaled by ``tau``);
        ``shape`` is ``(B, C, H, W)`` with H and W multiples of the stride."""
        taus = self.temperatures(tau)
        b, c, h, w = shape
        if h % self.stride or w % self.stride:
            raise ValueError(f"sample size {h}x{w} is not a multiple of the HVAE stride {self.stride}")
        p = next(self.parameters())
        top = (b, self.config["width"], h // self.stride, w // self.stride)
        return self._top_down(None, top, "prior", taus, generator, p.device, p.dtype)[0]
