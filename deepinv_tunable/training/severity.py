r"""Lightning module of the Flash-Diffusion severity encoder (:footcite:t:`fabian2023adapt`).

Per example a degradation is drawn over the configured severity range
(:func:`~deepinv_tunable.diffusion.severity.sample_degradations`), the encoder sees the measurement-only
estimate :math:`\tilde x` and is trained on

.. math::

    \mathcal{L} = \frac{1}{d}\|z_0 - \hat z\|^2
                + \lambda_\sigma \big(\mathrm{var}_i(\hat z - z_0) - \hat\sigma^2\big)^2
                + \lambda_\mathrm{im} \frac{1}{n}\|x_0 - D(\hat z)\|^2 ,

:math:`z_0 = E_0(x_0)` from the frozen tunable VAE, :math:`D` its decoder. The variance target
:math:`\mathrm{var}_i(\hat z - z_0)` is not differentiated: the second term teaches the encoder to
*report* its error, not to shape its error to match the report.

With ``sigma_loss="log"`` the second term compares logarithms,
:math:`\lambda_\sigma (\log \mathrm{var}_i(\hat z - z_0) - \log \hat\sigma^2)^2`: a relative error,
so mild degradations weigh as much as harsh ones. In the squared form the largest variances
dominate: a corpus-trained encoder ranked MRI accelerations (true error variance 0.13-1.0) but
reported about 0.09 for every blur up to 3 px (true 0.10-0.24; Spearman -0.57 on a reserved
subject).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from .. import pretrained
from ..diffusion.severity import Degradation, SeverityRanges, degrade, sample_degradations
from ..nets import SeverityEncoder

#: form of the variance term (:class:`SeverityEncoderModule`'s ``sigma_loss``) -> its entry in ``loss_terms``
SIGMA_TERMS = {"squared": "sigma", "log": "sigma_log"}


class SeverityEncoderModule(L.LightningModule):
    r"""Trains a :class:`~deepinv_tunable.nets.SeverityEncoder` initialised from a tunable VAE's encoder.

    :param str vae: shipped VAE name or checkpoint folder. Default ``"tunable_vae_mri128"``.
    :param dict degradations: :class:`~deepinv_tunable.diffusion.severity.SeverityRanges` keys. Default:
        MRI 2x-12x, CT 20-180 views, blur std 0-3 px, noise 0-0.03.
    :param float lambda_sigma: weight :math:`\lambda_\sigma` of the error-variance term. Default 10 (paper).
    :param float lambda_im: weight :math:`\lambda_\mathrm{im}` of the image term. Default 0.
    :param str sigma_loss: ``"squared"`` (default, the paper's) or ``"log"``: the variance term on
        the variances or on their logarithms.
    :param float lr: Adam learning rate. Default ``1e-4``.
    :param str unet: latent diffusion model recorded in the exported encoder's config, so
        :meth:`~deepinv_tunable.solvers.FlashDiffusion.from_pretrained` can find it. Default ``None``.
    """

    def __init__(
        self,
        vae: str = "tunable_vae_mri128",
        degradations: dict | None = None,
        lambda_sigma: float = 10.0,
        lambda_im: float = 0.0,
        lr: float = 1e-4,
        unet: str | None = None,
        sigma_loss: str = "squared",
    ):
        super().__init__()
        if lambda_sigma < 0 or lambda_im < 0:
            raise ValueError(f"lambda_sigma and lambda_im must be >= 0, got {lambda_sigma}, {lambda_im}")
        if sigma_loss not in SIGMA_TERMS:
            raise ValueError(f"sigma_loss must be one of {tuple(SIGMA_TERMS)}, got {sigma_loss!r}")
        self.save_hyperparameters()
        self.vae = pretrained.load(vae).requires_grad_(False)
        self.encoder = SeverityEncoder.from_vae(self.vae, source=str(vae))
        self.encoder.config["unet"] = unet
        self.ranges = SeverityRanges(**(degradations or {}))

    def loss_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Latent, variance and image terms (unweighted) for clean images ``x`` degraded at random."""
        x_tilde = degrade(x, sample_degradations(x.shape[0], self.ranges, generator))
        with torch.no_grad():
            z0 = self.vae.encode_mean(x)
        z_hat, sigma2 = self.encoder(x_tilde)
        err = z_hat - z0
        target = err.detach().flatten(1).var(1)
        terms = {
            "latent": err.pow(2).mean(),
            "sigma": (target - sigma2).pow(2).mean(),
            "sigma_rel": ((sigma2 - target).abs() / target.clamp_min(1e-12)).mean(),
            # floors keep the log finite where an error or a report is exactly 0 (clean inputs)
            "sigma_log": (target.clamp_min(1e-8).log() - sigma2.clamp_min(1e-8).log()).pow(2).mean(),
        }
        terms["image"] = (self.vae.decode(z_hat) - x).pow(2).mean() if self.hparams.lambda_im > 0 else err.new_zeros(())
        return terms

    def _loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        sigma = terms[SIGMA_TERMS[self.hparams.sigma_loss]]
        return terms["latent"] + self.hparams.lambda_sigma * sigma + self.hparams.lambda_im * terms["image"]

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(x)
        loss = self._loss(terms)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        terms = self.loss_terms(x, torch.Generator().manual_seed(batch_idx))  # same degradations every epoch
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.encoder.parameters(), lr=self.hparams.lr)

    def trained_range(self, images: torch.Tensor) -> list[float]:
        r"""``[low, high]``: the span of :math:`\hat\sigma^2` on ``images`` at the mildest and the
        harshest degradation of every kind in the training range (the span of both, so that an
        encoder that does not rank a kind, whose mild estimates exceed its harsh ones, still gets
        an ordered range and its export does not fail)."""
        r = self.ranges
        mild, harsh = [], []
        for kind in r.kinds:
            low, high = r.level_range(kind)
            easy_level, hard_level = (high, low) if kind == "ct" else (low, high)
            mild += [Degradation(kind, float(easy_level), r.noise_sigma[0], seed=i) for i in range(len(images))]
            harsh += [Degradation(kind, float(hard_level), r.noise_sigma[1], seed=i) for i in range(len(images))]
        reps = len(r.kinds)
        with torch.no_grad():
            s_mild = self.encoder(degrade(images.repeat(reps, 1, 1, 1), mild))[1]
            s_harsh = self.encoder(degrade(images.repeat(reps, 1, 1, 1), harsh))[1]
        both = torch.cat([s_mild, s_harsh])
        return [float(both.min()), float(both.max())]

    def variance_calibration(self, images: torch.Tensor, draws: int = 4) -> float:
        r"""The median, over ``images`` each degraded ``draws`` times over the training range (seeded),
        of the true squared error of :math:`\hat z`, :math:`\frac1d\|\hat z - E_0(x_0)\|^2`, over the
        encoder's uncalibrated :math:`\hat\sigma^2`. The samplers match their start to
        :math:`\hat\sigma^2` as the error of :math:`\hat z`; the variance term, fitted on logarithms
        to an error spread over many severities, reports about half of it (the f4c12 encoder: 2.1 on
        the validation subject's MRI, 3.8 on blur, 1.1 on CT)."""
        scale = self.encoder.config["variance_scale"]
        x = images.repeat(draws, 1, 1, 1)
        degradations = sample_degradations(x.shape[0], self.ranges, torch.Generator().manual_seed(0))
        with torch.no_grad():
            z0 = self.vae.encode_mean(x)
            z_hat, sigma2 = self.encoder(degrade(x, degradations))
        ratio = (z_hat - z0).pow(2).flatten(1).mean(1) / (sigma2 / scale).clamp_min(1e-12)
        return float(ratio.median())

    def export(self, model_dir: Path, datamodule) -> None:
        """Calibrate the reported variance and record the trained severity range on the held-out
        slices, then ``save_pretrained`` the encoder."""
        encoder = self.encoder.cpu().eval()
        self.vae.cpu()
        datamodule.setup()
        encoder.config["variance_scale"] = self.variance_calibration(datamodule.val_slices)
        encoder.config["sigma2_range"] = self.trained_range(datamodule.val_slices)
        encoder.save_pretrained(model_dir)
