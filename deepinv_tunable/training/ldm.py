r"""Lightning module of the tunable latent diffusion prior (:footcite:t:`tunable_complexity`, eq. 7).

On latents :math:`z_0 = c\,E(x)` of a frozen tunable VAE (:math:`c` its scaling factor), with
:math:`t \sim \mathcal{U}\{0, \dots, T-1\}`, :math:`\epsilon \sim \mathcal{N}(0, I)`,
:math:`z_t = \sqrt{\bar\alpha_t} z_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon` and :math:`k \sim P(k)`:

.. math::

    \mathcal{L} = (1 - a)\, \frac{1}{K}\|\epsilon - \epsilon_\theta(z_t, t)\|^2
                + a\, \frac{1}{k}\|T_k(\epsilon - \epsilon_\theta(T_k z_t, t))\|^2 ,

the truncated term averaged over the :math:`k` kept coordinates (the :math:`/(k/K)`
normalisation of eq. 7 on a per-coordinate scale).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from .. import pretrained
from ..diffusion.schedule import add_noise, tweedie_z0
from ..nets import LatentUNet
from ..nets.truncation import KDistribution, truncate
from ..utils.metrics import METRICS
from .ema import WarmupEMA

#: diffusion steps at which validation scores the decoded one-step estimate (of T = 1000)
VAL_STEPS = (100, 300, 600)


class TunableLDMModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.LatentUNet` on the latents of a frozen tunable VAE.

    :param str vae: shipped VAE name or checkpoint folder. Default ``"tunable_vae_mri128"``.
    :param dict unet: extra keyword arguments of :class:`~deepinv_tunable.nets.LatentUNet`
        (latent channels and size are taken from the VAE).
    :param float a: weight of the truncated objective, in ``[0, 1]``. Default 0.5.
    :param float lr: AdamW learning rate. Default ``2e-4``.
    :param int k_min: smallest kept latent size. Default 1.
    :param str k_kind: ``"geometric"`` or ``"uniform"``. Default ``"geometric"``.
    :param float k_p: geometric parameter. Default ``2e-3``.
    :param float ema_decay: decay of the moving average of the UNet's weights, which is what
        validation sees and what is exported (diffusion samplers are markedly better on the
        average than on the last weights). ``None`` turns it off. Default 0.999.
    """

    def __init__(
        self,
        vae: str = "tunable_vae_mri128",
        unet: dict | None = None,
        a: float = 0.5,
        lr: float = 2e-4,
        k_min: int = 1,
        k_kind: str = "geometric",
        k_p: float = 2e-3,
        ema_decay: float | None = 0.999,
    ):
        super().__init__()
        if not 0 <= a <= 1:
            raise ValueError(f"a must be in [0, 1], got {a}")
        self.save_hyperparameters()
        self.vae = pretrained.load(vae).requires_grad_(False)
        c, h, _ = self.vae.latent_shape
        self.unet = LatentUNet(latent_channels=c, latent_size=h, **(unet or {}))
        self.register_buffer("alphas_cumprod", self.unet.training_scheduler().alphas_cumprod.clone(), persistent=False)
        self.k_dist = KDistribution(K=self.vae.latent_dim, k_min=k_min, kind=k_kind, p=k_p)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vae.config["scaling_factor"] * self.vae.encode_mean(x)

    def loss_terms(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(full, truncated) noise-prediction errors of eq. 7 for a batch of clean latents."""
        b = z0.shape[0]
        t = torch.randint(0, len(self.alphas_cumprod), (b,), device=z0.device)
        eps = torch.randn_like(z0)
        z_t = add_noise(z0, eps, self.alphas_cumprod[t])
        full = (eps - self.unet(z_t, t)).pow(2).mean()
        k = self.k_dist.sample(b, device=z0.device)
        err = truncate(eps - self.unet(truncate(z_t, k), t), k).flatten(1).pow(2).sum(1)
        return full, (err / k).mean()

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        full, trunc = self.loss_terms(self.latents(x))
        a = self.hparams.a
        loss = (1 - a) * full + a * trunc
        self.log_dict(
            {"train/eps_full": full, "train/eps_trunc": trunc}, on_step=True, on_epoch=True, batch_size=x.shape[0]
        )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        r"""``val/eps_mse`` at random steps, and ``val/psnr_t{t}``: the PSNR of the decoded
        one-step (Tweedie) estimate :math:`D(\hat z_0(z_t))` of the clean images at the fixed
        steps :data:`~deepinv_tunable.training.ldm.VAL_STEPS`, a selection score that needs no sample statistics (FID-free)
        and reads in the units of the solvers' results."""
        g = torch.Generator(device="cpu").manual_seed(batch_idx)  # same t and noise every epoch
        z0 = self.latents(x)
        t = torch.randint(0, len(self.alphas_cumprod), (z0.shape[0],), generator=g).to(z0.device)
        eps = torch.randn(z0.shape, generator=g).to(z0)
        err = (eps - self.unet(add_noise(z0, eps, self.alphas_cumprod[t]), t)).pow(2).mean()
        self.log("val/eps_mse", err, batch_size=x.shape[0], sync_dist=True)
        scale = self.vae.config["scaling_factor"]
        for step in VAL_STEPS:
            alpha_bar = float(self.alphas_cumprod[step])
            z_t = add_noise(z0, eps, alpha_bar)
            steps = torch.full((z0.shape[0],), step, device=z0.device)
            x_hat = self.vae.decode(tweedie_z0(z_t, self.unet(z_t, steps), alpha_bar) / scale).clamp(0, 1)
            psnr = METRICS["psnr"](x_hat.float(), x.float()).mean()
            self.log(f"val/psnr_t{step}", psnr, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self):
        return [] if self.hparams.ema_decay is None else [WarmupEMA(self.hparams.ema_decay)]

    def export(self, model_dir: Path, datamodule) -> None:
        """``save_pretrained`` the UNet with the autoencoder it was trained on recorded (``vae``)."""
        self.unet.config["vae"] = str(self.hparams.vae)
        self.unet.cpu().eval().save_pretrained(model_dir)
