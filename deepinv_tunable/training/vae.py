r"""Lightning module of the tunable VAE (:footcite:t:`tunable_complexity`, eq. 6).

Per batch, with :math:`z \sim q(z|x)` (reparameterised) and one :math:`k \sim P(k)` per example,

.. math::

    \mathcal{L} = \ell(x, D(z)) + \ell(x, D(T_k z))
                  + \beta\, \overline{\mathrm{KL}}(q(z|x) \,\|\, \mathcal{N}(0, I))
                  + \sum_j w_j\, \mathcal{L}_j(x, D(T_k z)),

:math:`\ell = \mathrm{L1} + w_\mathrm{ssim} (1 - \mathrm{SSIM})`, :math:`\overline{\mathrm{KL}}`
the KL divergence averaged over latent coordinates, and :math:`\mathcal{L}_j` optional plug-in
terms (perceptual, adversarial, ...) given as :class:`LossTerm` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import deepinv as dinv
import lightning as L
import torch

from ..nets import TunableVAE
from ..nets.truncation import KDistribution
from ..utils.metrics import METRICS
from .warm_start import load_initial_weights, with_warmup


@dataclass
class LossTerm:
    """A plug-in loss ``weight * fn(x, x_hat)`` added to the objective (logged as ``name``)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    weight: float = 1.0


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""Mean over coordinates of :math:`\mathrm{KL}(\mathcal{N}(\mu, e^{\ell}) \| \mathcal{N}(0, 1))
    = \tfrac12 (\mu^2 + e^{\ell} - 1 - \ell)`.

    >>> float(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)))
    0.0
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


class TunableVAEModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.TunableVAE` with nested dropout.

    :param dict vae: keyword arguments of :class:`~deepinv_tunable.nets.TunableVAE`.
    :param float lr: Adam learning rate. Default ``1e-3``.
    :param float beta: KL weight :math:`\beta`. Default ``1e-3``.
    :param float ssim_weight: weight of :math:`1 - \mathrm{SSIM}` in :math:`\ell`. Default 0.
    :param int k_min: smallest kept latent size. Default 1.
    :param str k_kind: ``"geometric"`` or ``"uniform"`` (see :class:`~deepinv_tunable.nets.truncation.KDistribution`).
    :param float k_p: geometric parameter. Default ``2e-3``.
    :param list extra_losses: :class:`LossTerm` plug-ins (not saved in hyperparameters).
    :param list val_ks: latent sizes at which validation PSNR is logged. Default: ``K/16, K/4, K``.
    :param str init: shipped checkpoint (or ``save_pretrained`` folder) to start from, e.g. a
        candidate exported by an earlier session; its configuration must equal ``vae`` wherever
        ``vae`` sets a key (:func:`~deepinv_tunable.training.warm_start.load_initial_weights`).
        Default ``None`` (random weights).
    :param int warmup_steps: linear learning-rate warm-up from 0 over this many updates (use it
        with ``init``: Adam's first steps from fresh moments move every weight by the full rate).
        Default 0.
    """

    def __init__(
        self,
        vae: dict | None = None,
        lr: float = 1e-3,
        beta: float = 1e-3,
        ssim_weight: float = 0.0,
        k_min: int = 1,
        k_kind: str = "geometric",
        k_p: float = 2e-3,
        extra_losses: Sequence[LossTerm] = (),
        val_ks: Sequence[int] | None = None,
        init: str | None = None,
        warmup_steps: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["extra_losses"])
        self.vae = TunableVAE(**(vae or {})) if init is None else load_initial_weights(init, TunableVAE, vae, "vae")
        K = self.vae.latent_dim
        self.k_dist = KDistribution(K=K, k_min=k_min, kind=k_kind, p=k_p)
        self.extra_losses = list(extra_losses)
        self.val_ks = list(val_ks) if val_ks else sorted({max(1, K // 16), max(1, K // 4), K})
        self.ssim = dinv.loss.metric.SSIM() if ssim_weight > 0 else None

    def setup(self, stage: str) -> None:
        """Fit the VAE's linear patch code (``linear_path``) on the training images, once: a
        resumed run or an ``init`` checkpoint brings its fitted code along."""
        code = self.vae.patch_code
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if code is not None and not code.fitted and datamodule is not None:
            code.fit(datamodule.train_slices)

    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        loss = (x_hat - x).abs().mean()
        if self.ssim is not None:
            loss = loss + self.hparams.ssim_weight * (1 - self.ssim(x_hat, x).mean())
        return loss

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        mean, logvar = self.vae.encode(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        k = self.k_dist.sample(x.shape[0], device=x.device)
        x_full, x_trunc = self.vae.decode(z), self.vae.decode(z, k)
        rec_full, rec_trunc = self.reconstruction_loss(x, x_full), self.reconstruction_loss(x, x_trunc)
        kl = gaussian_kl(mean, logvar)
        loss = rec_full + rec_trunc + self.hparams.beta * kl
        logs = {"train/rec_full": rec_full, "train/rec_trunc": rec_trunc, "train/kl": kl}
        for term in self.extra_losses:
            value = term.fn(x, x_trunc)
            loss = loss + term.weight * value
            logs[f"train/{term.name}"] = value
        self.log_dict(logs, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        z = self.vae.encode_mean(x)
        for k in self.val_ks:
            psnr = METRICS["psnr"](self.vae.decode(z, k).clamp(0, 1), x).mean()
            self.log(f"val/psnr_k{k}", psnr, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return with_warmup(torch.optim.Adam(self.vae.parameters(), lr=self.hparams.lr), self.hparams.warmup_steps)

    def export(self, model_dir, datamodule) -> None:
        r"""Set the latent scaling factor :math:`1/\mathrm{std}(E(x))` on the training slices and
        ``save_pretrained`` the VAE."""
        vae = self.vae.cpu().eval()
        with torch.no_grad():
            datamodule.setup()
            z = torch.cat([vae.encode_mean(b) for b in datamodule.train_images().split(32)])
        vae.config["scaling_factor"] = float(1.0 / z.std())
        vae.save_pretrained(model_dir)

    def on_train_start(self) -> None:
        if self.logger is not None:
            self.logger.log_hyperparams({"k_mean": self.k_dist.mean(), "latent_dim": self.vae.latent_dim})
