r"""Lightning module of a noise-conditional denoiser (:class:`~deepinv_tunable.nets.ConditionalDRUNet`),
trained as a diffusion model over the whole noise range.

Each training image gets its own noise std. Its logarithm is uniform on
:math:`[\log\sigma_{lo}, \log\sigma_\mathrm{knee}]` with probability :math:`1 - p_\mathrm{high}` and
on :math:`[\log\sigma_\mathrm{knee}, \log\sigma_{hi}]` with probability :math:`p_\mathrm{high}`: the
levels above the knee (where the preconditioned network predicts little more than the mean
image) are learned cheaply, and most updates go to the levels where plug-and-play solvers and the
last steps of diffusion samplers spend their time. The loss is the weighted squared error

.. math::

    \mathcal{L} = \mathbb{E}\, \frac{1}{c_\mathrm{out}(\sigma)^2}\, \|D(x + \sigma n, \sigma) - x\|^2
    = \mathbb{E}\, \Big\|F - \frac{x - c_\mathrm{skip}\,(x + \sigma n)}{c_\mathrm{out}}\Big\|^2,

Karras et al.'s (EDM, NeurIPS 2022) weighting matched to the network's preconditioning: the
body's target has unit variance at every level, so no level decides the gradients alone (without
it the largest levels, whose errors are largest, would, and the smallest, where a plug-and-play
solver ends, would barely be trained).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch

from ..nets.drunet import ConditionalDRUNet
from ..utils.metrics import METRICS
from .ema import WarmupEMA
from .warm_start import load_initial_weights

#: noise stds (images in [0, 1]) at which validation PSNR is logged
VALIDATION_SIGMAS = (0.02, 0.05, 0.1, 0.5)


def sample_noise_levels(
    n: int,
    sigma_range: Sequence[float],
    knee: float | None = None,
    high_share: float = 0.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""``n`` training noise stds, log-uniform on ``[low, knee]`` with probability
    ``1 - high_share`` and on ``[knee, high]`` with probability ``high_share``; without a knee,
    log-uniform on the whole range.

    >>> s = sample_noise_levels(10000, (0.002, 80.0), knee=1.0, high_share=0.2, generator=torch.Generator().manual_seed(0))
    >>> round(float((s > 1.0).float().mean()), 2), bool(s.min() >= 0.002), bool(s.max() <= 80.0)
    (0.2, True, True)
    """
    low, high = (float(s) for s in sigma_range)
    u = torch.rand(n, device=device, generator=generator)
    if knee is None:
        return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u)
    upper = torch.rand(n, device=device, generator=generator) < high_share
    lo = torch.where(upper, math.log(knee), math.log(low))
    hi = torch.where(upper, math.log(high), math.log(knee))
    return torch.exp(lo + (hi - lo) * u)


class ConditionalDenoiserModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.ConditionalDRUNet` over a range of noise levels.

    :param dict drunet: keyword arguments of :class:`~deepinv_tunable.nets.ConditionalDRUNet`
        (its ``sigma_range`` is set from ``sigma_range``).
    :param Sequence[float] sigma_range: ``(low, high)`` training noise stds. Default
        ``(0.002, 80.0)``, EDM's range (deepinv's ``DPS`` and ``DiffPIR`` start near 80).
    :param float sigma_knee: the level splitting the two log-uniform pieces; ``None`` for one
        log-uniform law over the range. Default 1.0.
    :param float high_share: probability of a level above the knee. Default 0.15.
    :param float sigma_data: data std of the preconditioning and weighting. Default 0.25
        (images in [0, 1]).
    :param float lr: Adam learning rate. Default ``2e-4`` (``1e-3`` diverged within 600 steps).
    :param float ema_decay: decay of the weights' moving average, which is what is exported.
        Default 0.999.
    :param bool channels_last: keep weights and batches in channels-last memory format (faster
        convolutions on some CPUs; measured in ``benchmarks/training_throughput.py``). Default False.
    :param str init: start from these weights (a shipped name or a ``save_pretrained`` folder, e.g.
        an earlier run's export, so training continues on a machine without its Lightning state);
        ``drunet`` and ``sigma_data`` must match them. Default ``None`` (random initialisation).
    """

    def __init__(
        self,
        drunet: dict | None = None,
        sigma_range: Sequence[float] = (0.002, 80.0),
        sigma_knee: float | None = 1.0,
        high_share: float = 0.15,
        sigma_data: float = 0.25,
        lr: float = 2e-4,
        ema_decay: float = 0.999,
        channels_last: bool = False,
        init: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        low, high = (float(s) for s in sigma_range)
        if not 0 < low < high:
            raise ValueError(f"sigma_range must be (low, high) with 0 < low < high, got {list(sigma_range)}")
        if sigma_knee is not None and not low < sigma_knee < high:
            raise ValueError(f"sigma_knee must lie inside sigma_range {[low, high]}, got {sigma_knee}")
        if not 0.0 <= high_share <= 1.0:
            raise ValueError(f"high_share must be a probability in [0, 1], got {high_share}")
        settings = {**(drunet or {}), "sigma_data": sigma_data}
        if init is None:
            self.net = ConditionalDRUNet(**settings, sigma_range=(low, high))
        else:
            self.net = load_initial_weights(init, ConditionalDRUNet, settings, "drunet")
            self.net.sigma_range = (low, high)  # what this run trains it on
            self.net.config["sigma_range"] = [low, high]
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The preconditioned denoising loss of a batch of clean images, each at a random level."""
        x = self._batch(x)
        h = self.hparams
        sigma = sample_noise_levels(x.shape[0], h.sigma_range, h.sigma_knee, h.high_share, x.device)
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
        c_skip, c_out = self.net.coefficients(sigma)
        return (self.net.body(noisy, sigma).float() - (x - c_skip * noisy) / c_out).pow(2).mean()

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(x)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        gen = torch.Generator(device=x.device).manual_seed(batch_idx)
        x = self._batch(x)
        scores = []
        for sigma in VALIDATION_SIGMAS:
            noisy = x + sigma * torch.randn(x.shape, generator=gen, device=x.device)
            psnr = METRICS["psnr"](self.net(noisy, sigma).float().clamp(0, 1), x).mean()
            self.log(f"val/psnr_sigma{sigma:g}", psnr, batch_size=x.shape[0])
            scores.append(psnr)
        self.log("val/psnr_denoise", torch.stack(scores).mean(), batch_size=x.shape[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def on_train_start(self) -> None:
        # Lightning's resume restores the optimizer with the learning rate it had; the recipe's
        # lr applies instead, so that a resumed run can anneal (e.g. 2e-4, then 2e-5 at the plateau)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr

    def configure_callbacks(self):
        return [WarmupEMA(self.hparams.ema_decay)]

    def export(self, model_dir, datamodule) -> None:
        """``save_pretrained`` the (EMA-averaged) network, in fp32 and the default memory format."""
        self.net.cpu().eval().float().to(memory_format=torch.contiguous_format).save_pretrained(model_dir)
