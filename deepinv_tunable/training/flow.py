r"""Lightning module of the ordered flow (Bekasov & Murray 2020): likelihood plus a
nested-dropout reconstruction term that orders the latent coordinates,

.. math::

    \mathcal{L} = \mathrm{NLL}(x + u) + w\, \|x - f(T_k f^{-1}(x))\|_1 / n,
    \qquad u \sim \mathcal{U}[0, 1/256)^n,\; k \sim P(k)

(uniform dequantisation noise :math:`u` keeps the likelihood of 8-bit data bounded).
"""

from __future__ import annotations

import lightning as L
import torch

from ..nets import OrderedFlow
from ..nets.truncation import KDistribution
from ..utils.metrics import METRICS


class OrderedFlowModule(L.LightningModule):
    r"""Trains an :class:`~deepinv_tunable.nets.OrderedFlow`.

    :param dict flow: keyword arguments of :class:`~deepinv_tunable.nets.OrderedFlow`.
    :param float rec_weight: weight :math:`w` of the nested-dropout reconstruction. Default 10.
    :param float lr: Adam learning rate. Default ``1e-3``.
    :param int k_min: smallest kept latent size. Default 1.
    :param str k_kind: ``"geometric"`` or ``"uniform"``. Default ``"geometric"``.
    :param float k_p: geometric parameter. Default ``1e-3``.
    """

    def __init__(
        self,
        flow: dict | None = None,
        rec_weight: float = 10.0,
        lr: float = 1e-3,
        k_min: int = 1,
        k_kind: str = "geometric",
        k_p: float = 1e-3,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.flow = OrderedFlow(**(flow or {}))
        self.k_dist = KDistribution(K=self.flow.latent_dim, k_min=k_min, kind=k_kind, p=k_p)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        nll = self.flow.nll(x + torch.rand_like(x) / 256).mean()
        k = self.k_dist.sample(x.shape[0], device=x.device)
        rec = (self.flow.decode(self.flow.encode_mean(x), k) - x).abs().mean()
        loss = nll + self.hparams.rec_weight * rec
        self.log_dict({"train/nll": nll, "train/rec_trunc": rec}, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        z = self.flow.encode_mean(x)
        K = self.flow.latent_dim
        for k in sorted({max(1, K // 64), max(1, K // 16), K // 4}):
            psnr = METRICS["psnr"](self.flow.decode(z, k).clamp(0, 1), x).mean()
            self.log(f"val/psnr_k{k}", psnr, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.flow.parameters(), lr=self.hparams.lr)

    def export(self, model_dir, datamodule) -> None:
        self.flow.cpu().eval().save_pretrained(model_dir)
