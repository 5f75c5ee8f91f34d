r"""Lightning module of a blind DnCNN denoiser: mean squared error of
:math:`D(x + \sigma n)` against :math:`x`, :math:`n \sim \mathcal{N}(0, I)`, at the network's
single training noise level :math:`\sigma` (``trained_sigma``), optionally started from shipped
weights (``init``; e.g. scico's natural-image models, to measure what the corpus adds).
"""

from __future__ import annotations

import lightning as L
import torch

from ..nets.dncnn import DnCNN
from ..utils.metrics import METRICS


class DnCNNModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.DnCNN` for Gaussian noise of std ``trained_sigma``.

    :param dict dncnn: keyword arguments of :class:`~deepinv_tunable.nets.DnCNN` (its
        ``trained_sigma`` is the training noise level and is required).
    :param str init: shipped checkpoint (or ``save_pretrained`` folder) to start from; ``None``
        starts from random weights.
    :param float lr: Adam learning rate. Default ``1e-4`` (fine-tuning).
    :param bool freeze_batchnorm: keep the batch-norm statistics of the initial weights (batch-norm
        layers stay in inference mode). Default: ``True`` when ``init`` is given: normalising
        small batches with their own statistics changes a pretrained network's output so much
        that fine-tuning starts from a broken denoiser.
    """

    def __init__(
        self, dncnn: dict | None = None, init: str | None = None, lr: float = 1e-4, freeze_batchnorm: bool | None = None
    ):
        super().__init__()
        self.save_hyperparameters()
        config = dict(dncnn or {})
        if init is not None:
            from .. import pretrained

            self.net = pretrained.load(init)
            if config.get("trained_sigma") not in (None, self.net.trained_sigma):
                raise ValueError(
                    f"trained_sigma {config['trained_sigma']} differs from the initial weights' "
                    f"{self.net.trained_sigma} ('{init}')"
                )
        else:
            if not config.get("trained_sigma"):
                raise ValueError("dncnn.trained_sigma (the training noise std) is required")
            self.net = DnCNN(**config)
        self.freeze_batchnorm = init is not None if freeze_batchnorm is None else bool(freeze_batchnorm)
        self.sigma = float(self.net.trained_sigma)
        self.train()

    def train(self, mode: bool = True) -> DnCNNModule:
        super().train(mode)
        if mode and self.freeze_batchnorm:
            for m in self.net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
        return self

    def _noisy(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        gen = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
        return x + self.sigma * torch.randn(x.shape, generator=gen, device=x.device)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(self.net(self._noisy(x)), x)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        out = self.net(self._noisy(x, seed=batch_idx))
        self.log("val/psnr_denoise", METRICS["psnr"](out.clamp(0, 1), x).mean(), batch_size=x.shape[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def export(self, model_dir, datamodule) -> None:
        self.net.cpu().eval().save_pretrained(model_dir)
