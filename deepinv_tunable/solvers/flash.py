r"""Severity-adaptive latent diffusion (Flash-Diffusion, :footcite:t:`fabian2023adapt`): each sample starts the
reverse process at the step its own degradation calls for."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import deepinv as dinv
import torch

from ..diffusion.consistency import DataConsistency, LatentProblem, consistency_step
from ..diffusion.schedule import add_noise, snr
from ..nets.truncation import truncate
from ..physics import measurement_estimate
from ..utils.checks import renamed_keyword
from .guard import DEFAULT_MAX_CHI2, GuardedReconstruction, verify_and_correct
from .latent_diffusion import LatentDiffusionSolver

#: the shipped severity encoder :meth:`FlashDiffusion.from_pretrained` loads by default (it records
#: its autoencoder and latent diffusion model: the f4c12 pair)
DEFAULT_SEVERITY_ENCODER = "severity_encoder_f4c12_mri128"
START_RULES = ("snr", "noise")


@dataclass
class FlashReconstruction(GuardedReconstruction):
    """A :class:`~deepinv_tunable.solvers.guard.GuardedReconstruction` with the per-sample quantities of
    severity-adaptive sampling.

    :param torch.Tensor sigma_hat: estimated latent error std :math:`\\hat\\sigma` per sample
        (the severity encoder's units, i.e. the VAE latent's), ``(B,)``.
    :param torch.Tensor start_step: diffusion timestep :math:`t` each sample started from, ``(B,)``.
    :param torch.Tensor out_of_range: ``(B,)`` booleans: the severity lies outside the range the
        encoder was trained on, or its matched SNR lies beyond the schedule's ends (the start step
        was clamped). Such samples are reconstructed but should not be trusted silently.

    With ``return_iterates=True``, ``iterates`` holds one ``(rows, z0_hat)`` pair per step: the
    indices of the samples that ran that step and their clean-latent estimates (diffusion units).
    """

    sigma_hat: torch.Tensor | None = None
    start_step: torch.Tensor | None = None
    out_of_range: torch.Tensor | None = None

    def per_example(self) -> dict[str, torch.Tensor]:
        """Per-sample severity, start step, data fit of the estimate and fallback flags."""
        return {
            "sigma_hat": self.sigma_hat,
            "start_step": self.start_step,
            "out_of_range": self.out_of_range,
            **super().per_example(),
        }


class FlashDiffusion(LatentDiffusionSolver):
    r"""Latent diffusion posterior sampling that starts where each sample's degradation is matched.

    .. code-block:: text

        x~               = measurement-only estimate of y (zero-filled MRI, CT FBP, blurred image)
        z^, sigma^2      = severity_encoder(x~)                           # severity encoder
        i_start          = argmin_i | abar_i / (1 - abar_i) - 1 / sigma^2 |   over the DDIM sub-schedule
        z'               = sqrt(1 - c sigma^2) z^ + sqrt(c sigma^2) eps        # noise correction
        z_{i_start}      = sqrt(abar_{i_start}) z'
        for i = i_start ... last:  latent_reverse_step with the data-consistency step
        return consistency.finish(D(z_0)), verified against y

    The data-consistency step is any :class:`~deepinv_tunable.diffusion.consistency.DataConsistency`
    or its name in :data:`~deepinv_tunable.diffusion.consistency.CONSISTENCY_STEPS`. The default is
    the tunable LDM's (:class:`~deepinv_tunable.solvers.TunableLDMSolver`): the image-space local
    MAP with DiffPIR's weight (:class:`~deepinv_tunable.diffusion.consistency.ScheduledLocalMAP`)
    and DiffPIR's transition ``zeta = 1``. The paper's LDPS guidance with DDIM is
    ``consistency="ldps", zeta=None`` (step ``eta``); on the shipped f4c12 networks it cannot pull
    the estimate to the data (validation subject, MRI 4x: 27.8 dB and a reduced chi-square of 9.5,
    against 30.8 dB and 0.4; ``docs/flash_results``).

    Latents and :math:`\sigma^2` are in diffusion units: the VAE's latents times its
    ``scaling_factor`` :math:`s`, variances times :math:`s^2`.
    A batch is processed in one pass over the schedule: at each step only the samples that have
    already started go through the networks (no per-sample loop), so a sample's network
    evaluations (NFE) are the steps from its own start. With ``start="snr"`` (default) that is
    Flash-Diffusion; the baselines share every line but the start rule:

    * ``start=N`` (an int): every sample starts ``N`` steps before the end, from its encoder
      estimate diffused to that step's marginal (CCDF-L style, fixed NFE ``N``);
    * ``start="noise"``: the sampler from pure noise over the whole schedule (NFE ``max_iter``).

    An optional latent size ``k`` (tunable prior) truncates the start latent and every step.

    :param vae: tunable autoencoder (``decode(z, k)``, ``encode_mean``, ``latent_shape``, ``config["scaling_factor"]``).
    :param unet: noise network (:class:`~deepinv_tunable.nets.LatentUNet`) on that VAE's latents.
    :param severity_encoder: :class:`~deepinv_tunable.nets.SeverityEncoder` for that VAE.
    :param int max_iter: length of the full DDIM schedule. Default 50 (``n_steps``: its former
        name, deprecated).
    :param float eta: LDPS step :math:`\eta` (normalised), used by ``consistency="ldps"``. Default
        1.5 (paper).
    :param float ddim_eta: DDIM stochasticity in ``[0, 1]``. Default 0.1.
    :param float noise_correction: :math:`c` (paper: tuned in [0.5, 1.5]; 0 starts from :math:`\hat z`
        itself, scaled). Default 1.
    :param start: ``"snr"``, ``"noise"`` or a number of steps. Default ``"snr"``.
    :param int k: latent size (``None``: full). Default ``None``.
    :param int seed: seeds the solver's generator (a call's ``seed=`` overrides it). Default ``None``.
    :param float max_chi2: estimate, then verify: a sample whose reduced chi-square exceeds both
        this and the measurement baseline's is replaced by the baseline, with a warning
        (:func:`~deepinv_tunable.solvers.guard.measurement_guard`). Default 2.
    :param bool final_consistency: end with the residual-weighted data-consistency step
        (:func:`~deepinv_tunable.diffusion.consistency.weighted_data_consistency`) on the samples that passed
        the guard, so that the returned image agrees with the measured components. Default ``None``:
        for a linear physics (the step is its proximal map), not for a nonlinear one.
    :param consistency: data-consistency step, or its name. Default ``"local_map"``.
    :param float zeta: DiffPIR's fresh-noise fraction of each transition (``None``: DDIM with
        ``ddim_eta``). Default 1.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.nets import LatentUNet, SeverityEncoder, TunableVAE
        >>> from deepinv_tunable.physics import build_physics
        >>> vae = TunableVAE(image_size=(16, 16), block_out_channels=(8, 8), latent_channels=2)
        >>> unet = LatentUNet(latent_channels=2, latent_size=8, block_out_channels=(8, 16))
        >>> solver = FlashDiffusion(vae, unet, SeverityEncoder.from_vae(vae), max_iter=10)
        >>> physics = build_physics({"kind": "blur", "noise_sigma": 0.05}, (16, 16))
        >>> out = solver.reconstruct(physics(torch.rand(3, 1, 16, 16)), physics, seed=0)
        >>> out.x.shape, out.nfe.shape, bool((out.nfe >= 1).all() and (out.nfe <= 10).all())
        (torch.Size([3, 1, 16, 16]), torch.Size([3]), True)
    """

    def __init__(
        self,
        vae,
        unet,
        severity_encoder,
        max_iter: int = 50,
        eta: float = 1.5,
        ddim_eta: float = 0.1,
        noise_correction: float = 1.0,
        start: str | int = "snr",
        k: int | None = None,
        seed: int | None = None,
        max_chi2: float = DEFAULT_MAX_CHI2,
        final_consistency: bool | None = None,
        n_steps: int | None = None,
        consistency: DataConsistency | str = "local_map",
        zeta: float | None = 1.0,
    ):
        max_iter = renamed_keyword("FlashDiffusion", "n_steps", n_steps, "max_iter", max_iter)
        if eta < 0 or noise_correction < 0:
            raise ValueError(f"eta (LDPS step) and noise_correction must be >= 0, got {eta}, {noise_correction}")
        super().__init__(
            vae,
            unet,
            consistency_step(consistency, eta),
            k=k,
            max_iter=max_iter,
            ddim_eta=ddim_eta,
            seed=seed,
            other_latent_shapes={"severity encoder": tuple(severity_encoder.latent_shape)},
            zeta=zeta,
        )
        self._check_start(start, self.max_iter)
        self.severity_encoder = severity_encoder.eval().requires_grad_(False)
        self.noise_correction, self.start = float(noise_correction), start
        self.max_chi2 = float(max_chi2)
        self.final_consistency = None if final_consistency is None else bool(final_consistency)

    @staticmethod
    def _check_start(start, max_iter: int) -> None:
        if isinstance(start, bool) or not (start in START_RULES or (isinstance(start, int) and 1 <= start <= max_iter)):
            raise ValueError(
                f"start must be one of {START_RULES} or a number of steps in [1, {max_iter}], got {start!r}"
            )

    @classmethod
    def from_pretrained(
        cls, name: str | Path = DEFAULT_SEVERITY_ENCODER, device: torch.device | str = "cpu", **kwargs
    ) -> FlashDiffusion:
        """Build the solver from a severity-encoder checkpoint (a shipped name, which contains
        ``severity``, or a folder written by ``save_pretrained``, e.g. a training run's ``model/``),
        loading the VAE and UNet its config records. ``kwargs`` go to the constructor."""
        from .. import pretrained
        from ..nets import SeverityEncoder

        encoder = pretrained.load(name, device=device)
        if not isinstance(encoder, SeverityEncoder):
            raise ValueError(
                f"'{name}' holds a {type(encoder).__name__}, not a SeverityEncoder; give a severity "
                f"encoder checkpoint (shipped: {[n for n in pretrained.available() if 'severity' in n]}) "
                "or a folder a severity-encoder training run wrote"
            )
        if not encoder.config.get("source") or not encoder.config.get("unet"):
            raise ValueError(
                f"severity encoder '{name}' does not record its VAE ('source') and UNet ('unet'); "
                "build FlashDiffusion(vae, unet, encoder) yourself"
            )
        vae = pretrained.load(encoder.config["source"], device=device)
        unet = pretrained.load(encoder.config["unet"], device=device)
        return cls(vae, unet, encoder, **kwargs)

    def start_indices(self, sigma2: torch.Tensor, steps) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Per sample, the index into ``steps`` whose SNR :math:`\bar\alpha/(1-\bar\alpha)` is closest to
        :math:`1/\sigma^2` (``sigma2`` in diffusion units), and whether that match was clamped to
        the schedule's first (noisiest) or last step."""
        step_snr = torch.tensor([snr(s.alpha_bar) for s in steps], dtype=torch.float64)
        target = 1.0 / sigma2.double().cpu().clamp_min(1e-12)
        index = (step_snr[None, :] - target[:, None]).abs().argmin(1)
        clamped = (target < step_snr.min()) | (target > step_snr.max())
        return index, clamped

    def start_latents(
        self,
        z_hat: torch.Tensor,
        sigma2: torch.Tensor,
        index: torch.Tensor,
        matched: torch.Tensor,
        steps,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        r"""The latent each sample starts from, at step ``steps[index[i]]`` (diffusion units).

        Where the step's SNR matches :math:`1/\sigma^2` (``matched``), the paper's SNR-matched start :footcite:p:`fabian2023adapt`:
        :math:`\sqrt{\bar\alpha}\,(\sqrt{1 - c\sigma^2}\,\hat z + \sqrt{c\sigma^2}\,\epsilon)`,
        :math:`c\sigma^2` clamped to 1. Elsewhere (a fixed start, or a severity beyond the schedule's
        ends) the estimate is diffused to the step's marginal, CCDF-style:
        :math:`\sqrt{\bar\alpha}\,\hat z + \sqrt{1 - \bar\alpha}\,\epsilon`.
        """
        shape = (-1, 1, 1, 1)
        alpha_bar = torch.tensor([steps[i].alpha_bar for i in index.tolist()], dtype=z_hat.dtype).to(z_hat.device)
        var = (self.noise_correction * sigma2.to(z_hat)).clamp(max=1.0)
        corrected = alpha_bar.sqrt().reshape(shape) * (
            (1 - var).sqrt().reshape(shape) * z_hat + var.sqrt().reshape(shape) * noise
        )
        diffused = add_noise(z_hat, noise, alpha_bar)
        return torch.where(matched.to(z_hat.device).reshape(shape), corrected, diffused)

    def _solve(
        self,
        y,
        physics: dinv.physics.Physics,
        k=None,
        start=None,
        max_iter: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        return_iterates: bool = False,
        n_steps: int | None = None,
        **kwargs,
    ):
        k = self.call_k(k)
        max_iter = int(renamed_keyword("FlashDiffusion", "n_steps", n_steps, "max_iter", max_iter) or self.max_iter)
        start = self.start if start is None else start
        self._check_start(start, max_iter)
        generator = self.noise.generator("cpu", seed, generator)  # CPU noise, moved to the latent's device
        y = y.detach()
        b, c = y.shape[0], self.scale
        steps = self.steps(max_iter)
        with torch.no_grad():
            z_hat, sigma2_vae = self.severity_encoder(measurement_estimate(y, physics, fbp=True))
        sigma2 = c**2 * sigma2_vae
        out_of_range = ~self.severity_encoder.in_trained_range(sigma2_vae).cpu()
        clamped = torch.zeros(b, dtype=torch.bool)
        if start == "snr":
            index, clamped = self.start_indices(sigma2, steps)
            out_of_range = out_of_range | clamped
        else:
            index = torch.full((b,), 0 if start == "noise" else max_iter - int(start), dtype=torch.long)
        noise = torch.randn(z_hat.shape, generator=generator, dtype=z_hat.dtype).to(z_hat.device)
        if start == "noise":
            z = noise
        else:
            matched = torch.full((b,), start == "snr", dtype=torch.bool) & ~clamped
            z = self.start_latents(c * z_hat, sigma2, index, matched, steps, noise)
        z = truncate(z, k)
        problem = LatentProblem(self.vae, physics, y, k, scale=c)
        z, iterates = self.reverse(z, steps, problem, generator, index, return_iterates)
        with torch.no_grad():
            x = self.consistency.finish(problem.image(z), steps[-1], problem)
        verified = verify_and_correct(x, y, physics, self.max_chi2, self.final_consistency, who="FlashDiffusion")
        nfe = (max_iter - index).cpu()
        if out_of_range.any():
            bad = out_of_range.nonzero().flatten().tolist()
            warnings.warn(
                f"FlashDiffusion: samples {bad} of the batch have an estimated severity (sigma_hat "
                f"{[round(float(v), 4) for v in sigma2_vae.sqrt()[bad]]}) outside the encoder's trained range "
                f"{self.severity_encoder.config.get('sigma2_range')} (as variances) or beyond the schedule's "
                "ends; out_of_range flags them",
                RuntimeWarning,
                stacklevel=3,
            )
        return FlashReconstruction(
            x=verified.x,
            wall_time=0.0,
            n_iter=int(nfe.max()),
            k=self.vae.latent_dim if k is None else k,
            nfe=nfe,
            iterates=iterates,
            extras={"start_rule": start, "sigma2_diffusion_units": sigma2.cpu(), "latent": z},
            sigma_hat=sigma2_vae.sqrt().cpu(),
            start_step=torch.tensor([steps[i].t for i in index.tolist()]),
            out_of_range=out_of_range.cpu(),
            chi2_estimate=verified.chi2,
            fallback=verified.fallback,
            dc_weight=verified.dc_weight,
            chi2=verified.chi2_final,
        )
