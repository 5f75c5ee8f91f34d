r"""Lightning module of the hierarchical VAE (:footcite:t:`prost2023pnphvae`): ELBO, Adamax, EMA weights and a
gradient-skip guard, as the PnP-HVAE paper recommends for VDVAE-type models.

The minimised loss is the negative ELBO per pixel without its constant,

.. math::

    \mathcal{L} = \frac{1}{d}\Big(\frac{\|x - \mu_\theta(z)\|^2}{2\gamma^2}
                  + \sum_l \mathrm{KL}(q(z_l|z_{<l}, x) \,\|\, p(z_l|z_{<l}))\Big),

so it is positive and its gradients are the ELBO's. An update whose gradient norm is not finite
or exceeds ``skip_threshold`` is skipped (VDVAE's guard against rare KL spikes); smaller ones are
clipped to ``grad_clip``. The threshold is relative: ``skip_factor`` times a running average of
accepted gradient norms (after ``skip_warmup`` updates), because the norm's scale changes by
orders of magnitude between the start of training and convergence.

``input_noise`` > 0 trains with the denoising criterion (:footcite:t:`im2017denoising`): the
encoder sees :math:`\tilde x = x + \sigma n`, :math:`\sigma \sim U(0, \text{input\_noise})` per
image, and the likelihood scores the clean :math:`x`. PnP-HVAE encodes noisy iterates, never clean
images, so this trains the encoder for the inputs it meets at inference; the prior and the decoder
are still fitted by the same ELBO terms.

A model grown from ``init`` (more ``groups_per_scale`` than the saved one) starts its new groups
at :math:`q = p = \mathcal{N}(0, I)`, where the rate term holds them: a fine-tuned run leaves them
unused (their KL stayed at 0.0001 nats per pixel over 1000 updates while the old groups' was
0.01-0.25). ``new_group_rate_warmup`` weights the new groups' KL by :math:`\min(1, n/N)` at update
:math:`n` (KL annealing, :footcite:t:`bowman2016generating`, for the new groups only): free to carry
information at first, they are charged the full rate after :math:`N` updates. Validation always
scores the full ELBO.

``init`` starts from shipped weights (e.g. ``hvae_mri64``) and ``warmup_steps`` ramps the learning
rate up from zero (:mod:`~deepinv_tunable.training.warm_start`): a run whose Lightning checkpoint
was lost continues from the last release instead of from random weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch

from ..nets.hvae import HVAE
from ..utils.metrics import METRICS
from .ema import WarmupEMA
from .warm_start import load_initial_weights, with_warmup


class HVAEModule(L.LightningModule):
    r"""Trains an :class:`~deepinv_tunable.nets.HVAE` by maximising the ELBO.

    :param dict hvae: keyword arguments of :class:`~deepinv_tunable.nets.HVAE`.
    :param float lr: Adamax learning rate. Default ``2e-3``.
    :param float ema_decay: decay of the exponential moving average of the weights (the
        exported weights are the average). Default 0.998.
    :param float grad_clip: gradient-norm clipping. Default 100.
    :param float skip_factor: updates whose gradient norm exceeds this multiple of the running
        average of accepted norms are skipped. Default 10.
    :param int skip_warmup: updates accepted unconditionally at the start. Default 50.
    :param Sequence[float] val_taus: temperatures at which held-out denoising PSNR is logged.
    :param float val_sigma: noise std of that validation denoising. Default 0.03.
    :param str init: shipped checkpoint (or ``save_pretrained`` folder) to start from; its
        configuration must equal ``hvae`` wherever ``hvae`` sets a key, except ``gamma``, which no
        weight depends on (a run may fine-tune a released model at another decoder std), and
        ``groups_per_scale``, which may ask for more groups per scale (the start is then the
        function-preserving :meth:`~deepinv_tunable.nets.HVAE.grown` copy). Default ``None``
        (random weights).
    :param int warmup_steps: linear learning-rate warm-up from 0 over this many updates. Default 0.
    :param int new_group_rate_warmup: updates over which the KL weight of the groups that
        growing ``init`` added rises from 0 to 1 (above). Default 0 (full weight from the start).
    :param float input_noise: largest noise std added to the encoder's input in training (the
        denoising criterion above); 0 trains the plain ELBO. Default 0.
    """

    def __init__(
        self,
        hvae: dict | None = None,
        lr: float = 2e-3,
        ema_decay: float = 0.998,
        grad_clip: float = 100.0,
        skip_factor: float = 10.0,
        skip_warmup: int = 50,
        val_taus: Sequence[float] = (1.0, 0.8, 0.6),
        val_sigma: float = 0.03,
        init: str | None = None,
        warmup_steps: int = 0,
        input_noise: float = 0.0,
        new_group_rate_warmup: int = 0,
    ):
        super().__init__()
        if not (math.isfinite(input_noise) and input_noise >= 0):
            raise ValueError(f"input_noise must be a finite std >= 0; got {input_noise!r}")
        self.save_hyperparameters()
        #: indices of the latent groups that growing ``init`` added (their KL is warmed up)
        self.new_groups: list[int] = []
        self.hvae = HVAE(**(hvae or {})) if init is None else self._initial_hvae(init, hvae)
        self.skipped_updates = 0
        self.accepted_updates = 0
        self.norm_average = 0.0

    def _initial_hvae(self, init: str, hvae: dict | None) -> HVAE:
        """The weights at ``init``; where ``hvae`` asks for more groups per scale than they have,
        grown to that (:meth:`~deepinv_tunable.nets.HVAE.grown`)."""
        settings = dict(hvae or {})
        groups = settings.pop("groups_per_scale", None)
        model = load_initial_weights(init, HVAE, settings, "hvae", free=("gamma",))
        if groups is not None and list(groups) != model.groups_per_scale:
            self.new_groups = model.added_groups(groups)
            model = model.grown(groups)
        return model

    def rate_weights(self) -> list[float]:
        """The KL weight of each latent group at the current update (1 except for grown groups
        within ``new_group_rate_warmup`` updates, and always 1 outside training)."""
        warmup = self.hparams.new_group_rate_warmup
        ramp = min(1.0, self.global_step / warmup) if warmup > 0 and self.training else 1.0
        return [ramp if g in self.new_groups else 1.0 for g in range(self.hvae.n_groups)]

    def loss(
        self, x: torch.Tensor, encoder_input: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The per-pixel loss of the module docstring and its parts (for logging); the encoder sees
        ``encoder_input`` (default ``x``), the likelihood scores ``x``."""
        terms = self.hvae.elbo(x if encoder_input is None else encoder_input, target=x)
        d = x[0].numel()
        # ||x - mu||^2 / (2 gamma^2): the log-likelihood without its normalising constant
        distortion = -terms.log_likelihood - 0.5 * d * math.log(2 * math.pi * self.hvae.gamma**2)
        weights = self.rate_weights()
        rate = terms.kl if min(weights) == 1.0 else sum(w * kl for w, kl in zip(weights, terms.kl_per_group))
        logs = {"distortion": distortion.mean() / d, "rate": terms.kl.mean() / d}  # the true rate
        logs.update({f"rate_group{i}": kl.mean() / d for i, kl in enumerate(terms.kl_per_group)})
        return (distortion + rate).mean() / d, logs

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's training input: ``x`` plus Gaussian noise of a per-image std drawn
        uniformly in ``[0, input_noise]`` (``x`` itself when ``input_noise`` is 0)."""
        if self.hparams.input_noise == 0:
            return x
        sigma = self.hparams.input_noise * torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
        return x + sigma * torch.randn_like(x)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, logs = self.loss(x, self.corrupt(x))
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        params = [p for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.hparams.grad_clip)
        value = float(norm)
        warm = self.accepted_updates >= self.hparams.skip_warmup
        if not math.isfinite(value) or (warm and value > self.hparams.skip_factor * self.norm_average):
            for p in params:  # no gradient: the optimizer leaves these parameters and moments alone
                p.grad = None
            self.skipped_updates += 1
        else:
            self.accepted_updates += 1
            rate = 1.0 / min(self.accepted_updates, 100)
            self.norm_average += rate * (value - self.norm_average)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/skipped_updates", float(self.skipped_updates), on_step=True, on_epoch=False)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        loss, _ = self.loss(x)
        self.log("val/loss", loss, batch_size=x.shape[0], sync_dist=True)
        psnr = METRICS["psnr"]
        self.log(
            "val/psnr_autoencode",
            psnr(self.hvae.reconstruct(x, 1.0).clamp(0, 1), x).mean(),
            batch_size=x.shape[0],
            sync_dist=True,
        )
        gen = torch.Generator(device=x.device).manual_seed(batch_idx)
        noisy = x + self.hparams.val_sigma * torch.randn(x.shape, generator=gen, device=x.device)
        for tau in self.hparams.val_taus:
            out = self.hvae.reconstruct(noisy, tau).clamp(0, 1)
            self.log(f"val/psnr_denoise_tau{tau:g}", psnr(out, x).mean(), batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self):
        return with_warmup(torch.optim.Adamax(self.hvae.parameters(), lr=self.hparams.lr), self.hparams.warmup_steps)

    def configure_callbacks(self) -> list[L.Callback]:
        return [WarmupEMA(self.hparams.ema_decay)]

    def export(self, model_dir, datamodule) -> None:
        """``save_pretrained`` the (EMA-averaged) HVAE."""
        self.hvae.cpu().eval().save_pretrained(model_dir)
