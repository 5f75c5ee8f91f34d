r"""Lightning module of a noise-conditional denoiser (:class:`~deepinv_tunable.nets.ConditionalDRUNet`).

Each training image gets its own noise std, drawn log-uniformly from ``sigma_range``:
:math:`\sigma = \exp(u)`, :math:`u \sim \mathcal{U}[\log\sigma_{lo}, \log\sigma_{hi}]`, and the
loss is the weighted squared error

.. math::

    \mathcal{L} = \mathbb{E}\, \frac{1}{c_\mathrm{out}(\sigma)^2}\, \|D(x + \sigma n, \sigma) - x\|^2
    = \mathbb{E}\, \Big\|F - \frac{x - c_\mathrm{skip}\,(x + \sigma n)}{c_\mathrm{out}}\Big\|^2,

Karras et al.'s (EDM, NeurIPS 2022) weighting matched to the network's preconditioning: the
body's target has unit variance at every level, so no level decides the gradients alone (without
it the largest levels, whose errors are largest, would, and the smallest, where a plug-and-play
solver ends, would barely be trained).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from ..metrics import METRICS
from ..nets.drunet import ConditionalDRUNet
from .ema import WarmupEMA

#: noise stds (images in [0, 1]) at which validation PSNR is logged
VALIDATION_SIGMAS = (0.01, 0.05, 0.2)


class ConditionalDenoiserModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.ConditionalDRUNet` over a range of noise levels.

    :param dict drunet: keyword arguments of :class:`~deepinv_tunable.nets.ConditionalDRUNet`
        (its ``sigma_range`` is set from ``sigma_range``).
    :param Sequence[float] sigma_range: ``(low, high)`` training noise stds. Default ``(0.002, 1.0)``.
    :param float sigma_data: data std of the preconditioning and weighting. Default 0.25
        (images in [0, 1]).
    :param float lr: Adam learning rate. Default ``2e-4`` (``1e-3`` diverged within 600 steps).
    :param float ema_decay: decay of the weights' moving average, which is what is exported.
        Default 0.999.
    """

    def __init__(
        self,
        drunet: dict | None = None,
        sigma_range: Sequence[float] = (0.002, 1.0),
        sigma_data: float = 0.25,
        lr: float = 2e-4,
        ema_decay: float = 0.999,
    ):
        super().__init__()
        self.save_hyperparameters()
        low, high = (float(s) for s in sigma_range)
        if not 0 < low < high:
            raise ValueError(f"sigma_range must be (low, high) with 0 < low < high, got {list(sigma_range)}")
        self.net = ConditionalDRUNet(**{**(drunet or {}), "sigma_range": (low, high), "sigma_data": sigma_data})
        self.log_range = (torch.log(torch.tensor(low)).item(), torch.log(torch.tensor(high)).item())

    def _sigmas(self, n: int, device: torch.device) -> torch.Tensor:
        lo, hi = self.log_range
        return torch.exp(lo + (hi - lo) * torch.rand(n, device=device))

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        sigma = self._sigmas(x.shape[0], x.device)
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
        c_skip, c_out = self.net.coefficients(sigma)
        loss = (self.net.body(noisy, sigma) - (x - c_skip * noisy) / c_out).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        gen = torch.Generator(device=x.device).manual_seed(batch_idx)
        scores = []
        for sigma in VALIDATION_SIGMAS:
            noisy = x + sigma * torch.randn(x.shape, generator=gen, device=x.device)
            psnr = METRICS["psnr"](self.net(noisy, sigma).clamp(0, 1), x).mean()
            self.log(f"val/psnr_sigma{sigma:g}", psnr, batch_size=x.shape[0])
            scores.append(psnr)
        self.log("val/psnr_denoise", torch.stack(scores).mean(), batch_size=x.shape[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self):
        return [WarmupEMA(self.hparams.ema_decay)]

    def export(self, model_dir, datamodule) -> None:
        """``save_pretrained`` the (EMA-averaged) network."""
        self.net.cpu().eval().save_pretrained(model_dir)
