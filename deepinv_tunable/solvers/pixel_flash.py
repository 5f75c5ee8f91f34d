r"""Severity-adaptive diffusion in pixel space: deepinv's DiffPIR, started where each image's own
degradation is matched instead of from pure noise (the start rule of Fabian, Tinaz and
Soltanolkotabi, "Adapt and Diffuse: sample-adaptive reconstruction via latent diffusion
models", ICML 2024, with a pixel-space denoiser in place of the latent diffusion model)."""

from __future__ import annotations

import warnings

import deepinv as dinv
import torch

from ..physics import NOISE_FLOOR, mri_zero_filled_error, physics_rows, resolve_sigma
from ..utils.precision import at_precision, resolve_precision
from .base import NoiseStream, TunableReconstructor
from .classical import MeasurementBaseline
from .flash import FlashReconstruction
from .guard import DEFAULT_MAX_CHI2, verify_and_correct

PIXEL_START_RULES = ("severity", "noise")
SEVERITY_RULES = ("auto", "spectrum", "pilot")
#: the start constant :math:`c` of each severity rule when ``noise_correction=None``: chosen on
#: training-split subjects (see :class:`PixelFlash`), never on the reserved ones
NOISE_CORRECTION = {"spectrum": 36.0, "pilot": 16.0}


class PixelFlash(TunableReconstructor):
    r"""DiffPIR (Zhu et al., "Denoising diffusion models for plug-and-play image restoration",
    CVPR workshops 2023) with a severity-adaptive start.

    .. code-block:: text

        x~     = measurement-only estimate (zero-filled MRI, CT FBP, the blurred image)
        sigma^ = its RMS error, from the measurements:                            # severity
                   single-coil MRI: the unsampled k-space energy (mri_zero_filled_error)
                   otherwise: RMS(x~ - x_p), x_p a DPIR pilot of severity_iter iterations
        i0     = the DiffPIR step whose noise level is nearest to sqrt(c) sigma^
        x_i0   = sqrt(abar_i0) (x~ + sqrt(sigma_i0^2 - c sigma^2) eps)           # in DiffPIR's [-1, 1] units
        for i = i0 ... last:  DiffPIR step (denoise, prox of the data term, re-noise)
        return the sample at the last level; verify it (measurement guard), then the weighted
        final data-consistency step

    The severity :math:`\hat\sigma` is the RMS error of the measurement-only estimate, read
    without ground truth. For single-coil MRI (``severity="spectrum"``, chosen by ``"auto"``) it is
    the unsampled k-space energy predicted from the sampled radial spectrum
    (:func:`~deepinv_tunable.physics.noise.mri_zero_filled_error`; no network call): on the reserved
    brain subjects it is within about 20 % of the true error and ranks 2-16x with Spearman
    0.81-0.84. Elsewhere (``"pilot"``) it is the distance to a short DPIR pilot with the same
    denoiser (``severity_iter`` network calls, counted in the NFE); it ranks blur 0.5-3 px with
    Spearman 0.91 but anti-ranks MRI (-0.44: a short pilot keeps the aliasing), hence the
    spectrum there. A denoiser-only fixed point :math:`s \mapsto \mathrm{RMS}(\tilde x - D(\tilde x, s))`
    was tried first and rejected (Spearman 0.06 against the true error). The schedule, the step and
    its constants are deepinv's :class:`~deepinv.sampling.DiffPIR`; with ``start="noise"``,
    ``spacing="deepinv"`` and no final step the sampler reproduces it exactly (same seed, same
    output).

    The defaults (:math:`\zeta = 1`, :math:`c = 16`, :math:`\lambda = 1`, log spacing) were chosen
    on a training-split subject (``pyradiomics_brain1``, MRI 4x and 8x, 2 slices, corpus DnCNNs):
    :math:`(\zeta, c) = (0.5, 1)`, (0.9, 16), (1, 16), (1, 4) gave 25.1, 28.2, 28.9, 28.5 dB at
    4x and 21.0, 23.4, 24.6, 23.7 dB at 8x. MRI's :math:`c = 36` was then chosen against the full
    schedule on two more training-split subjects (``nibabel_anatomical``, ``dipy_aniso_vox``; MRI
    4x and 8x, 4 slices, 2 sampler seeds, ``benchmarks/run_flash_nfe.py``'s paired protocol): the
    loss to the full schedule was 0.11--0.34 dB at :math:`c = 16`, 0.04--0.16 dB at 36 (2 more
    network calls per slice) and -0.02--0.10 dB at 64 (3.7 more, which would take the slowest
    slices past half the full schedule's calls).

    :param deepinv.models.Denoiser denoiser: noise-conditional denoiser for images in [0, 1]
        (e.g. :class:`~deepinv_tunable.priors.PixelDenoiser`).
    :param int max_iter: length of the full DiffPIR schedule. Default 50.
    :param float lambda_: DiffPIR's data weight :math:`\lambda`. Default 1 (the paper's 7 failed
        the measurement guard on MRI 4x: the data term too weak at the last levels).
    :param float zeta: DiffPIR's stochasticity :math:`\zeta` (1: fresh noise at every step).
        Default 1 (deepinv's is 0.1).
    :param str start: ``"severity"`` (adaptive) or ``"noise"`` (the full schedule). Default ``"severity"``.
    :param str severity: ``"auto"`` (spectrum for single-coil MRI, pilot otherwise), ``"spectrum"``
        or ``"pilot"``. Default ``"auto"``.
    :param int severity_iter: iterations of the pilot reconstruction. Default 4.
    :param float noise_correction: :math:`c`: the start level is :math:`\sqrt{c}\,\hat\sigma`.
        Default ``None``: the severity rule's constant,
        :data:`~deepinv_tunable.solvers.pixel_flash.NOISE_CORRECTION` (36 for the
        spectrum, i.e. MRI; 16 for the pilot), six and four times the estimated error. The
        estimate's error is structured, not Gaussian, and a denoiser removes it only from a level
        well above its RMS; MRI's aliasing (displaced copies of the whole image) needs a higher one
        than blur's local edge error.
    :param int seed: seeds the solver's noise (a call's ``seed=`` overrides it). Default ``None``.
    :param float max_chi2: floor of the measurement guard. Default 2.
    :param bool final_consistency: end with :func:`~deepinv_tunable.diffusion.consistency.weighted_data_consistency`.
        Default True.
    :param str spacing: ``"log"`` (levels even in log-noise, default) or ``"deepinv"`` (deepinv's
        square-root spacing of the timesteps).
    :param str precision: the denoiser's precision (:mod:`deepinv_tunable.utils.precision`): ``"fp32"``,
        ``"bf16"`` or ``"auto"`` (bf16 where the hardware computes it natively). Default ``"auto"``:
        on reserved MRI 4x slices bf16 was 2.5x faster at -0.001 dB.

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> from deepinv_tunable.priors import DnCNNDenoiser
        >>> physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.02}, (32, 32))
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 0.8
        >>> denoiser = DnCNNDenoiser.from_pretrained(("dncnn_corpus_17L", "dncnn_corpus_17M", "dncnn_corpus_17H"))
        >>> import warnings; warnings.simplefilter("ignore")  # the schedule's first levels are out of range
        >>> out = PixelFlash(denoiser, max_iter=20).reconstruct(physics(x), physics, seed=0)
        >>> bool(out.nfe[0] < 19 + 4), out.x.shape
        (True, torch.Size([1, 1, 32, 32]))
    """

    unit_range = True

    stochastic = True

    def __init__(
        self,
        denoiser: dinv.models.Denoiser,
        max_iter: int = 50,
        lambda_: float = 1.0,
        zeta: float = 1.0,
        start: str = "severity",
        severity: str = "auto",
        severity_iter: int = 4,
        noise_correction: float | None = None,
        seed: int | None = None,
        max_chi2: float = DEFAULT_MAX_CHI2,
        final_consistency: bool = True,
        spacing: str = "log",
        precision: str = "auto",
    ):
        super().__init__()
        if max_iter < 2:
            raise ValueError(f"max_iter must be >= 2 (DiffPIR's schedule), got {max_iter}")
        if start not in PIXEL_START_RULES:
            raise ValueError(f"start must be one of {PIXEL_START_RULES}, got {start!r}")
        if severity not in SEVERITY_RULES:
            raise ValueError(f"severity must be one of {SEVERITY_RULES}, got {severity!r}")
        self.severity = severity
        if severity_iter < 2 or (noise_correction is not None and not noise_correction > 0):
            raise ValueError(
                f"severity_iter must be >= 2 (DPIR's pilot) and noise_correction positive or None, got "
                f"{severity_iter}, {noise_correction}"
            )
        if spacing not in ("log", "deepinv"):
            raise ValueError(f"spacing must be 'log' or 'deepinv', got {spacing!r}")
        self.spacing = spacing
        if lambda_ <= 0 or not 0 <= zeta <= 1:
            raise ValueError(f"lambda_ must be positive and zeta in [0, 1], got {lambda_}, {zeta}")
        resolve_precision(precision, "cpu")  # validates
        self.denoiser, self.precision = denoiser, precision
        self.max_iter, self.lambda_, self.zeta, self.start = int(max_iter), float(lambda_), float(zeta), start
        self.severity_iter = int(severity_iter)
        self.noise_correction = None if noise_correction is None else float(noise_correction)
        self.max_chi2 = float(max_chi2)
        self.final_consistency = bool(final_consistency)
        self.noise = NoiseStream(seed)

    def schedule(self, sigma: float) -> dinv.sampling.DiffPIR:
        """deepinv's DiffPIR for noise std ``sigma``: its schedule (``sigmas``, ``seq``, ``rhos``),
        coefficients and data-fidelity prox are the ones used here. With ``spacing="log"`` the
        ``max_iter`` visited levels are spaced evenly in log-noise between the same ends instead
        of deepinv's square-root spacing of the timesteps (which puts 2 of 50 steps below 0.05)."""
        diffpir = dinv.sampling.DiffPIR(
            self.denoiser,
            dinv.optim.data_fidelity.L2(),
            sigma=sigma,
            max_iter=self.max_iter,
            zeta=self.zeta,
            lambda_=self.lambda_,
        )
        if self.spacing == "log":
            ends = diffpir.sigmas[diffpir.seq.long()[[0, -1]]].double()
            wanted = torch.logspace(float(ends[0].log10()), float(ends[1].log10()), self.max_iter, dtype=torch.float64)
            index = (diffpir.sigmas.double()[None, :] - wanted[:, None]).abs().argmin(1)
            diffpir.seq = torch.unique_consecutive(index).to(diffpir.seq.dtype)
        return diffpir

    def severity_rule(self, physics: dinv.physics.Physics) -> str:
        """The rule ``"auto"`` resolves to for ``physics``."""
        if self.severity != "auto":
            return self.severity
        single_coil = isinstance(physics, dinv.physics.MRI) and not isinstance(physics, dinv.physics.MultiCoilMRI)
        return "spectrum" if single_coil else "pilot"

    def start_constant(self, physics: dinv.physics.Physics) -> float:
        r"""The start constant :math:`c` used for ``physics``: ``noise_correction``, or the
        severity rule's entry of :data:`~deepinv_tunable.solvers.pixel_flash.NOISE_CORRECTION`."""
        if self.noise_correction is not None:
            return self.noise_correction
        return NOISE_CORRECTION[self.severity_rule(physics)]

    @torch.no_grad()
    def estimate_severity(
        self, y: torch.Tensor, physics: dinv.physics.Physics, x_tilde: torch.Tensor, sigma: float
    ) -> torch.Tensor:
        r"""Per-image severity :math:`\hat\sigma` of the measurement-only estimate ``x_tilde``,
        ``(B,)``: the predicted zero-filled error (``"spectrum"``) or the RMS distance to the
        pilot :math:`x_p` (``"pilot"``)."""
        from .dpir import DPIR  # DPIR imports the selection module, which imports the solvers

        if self.severity_rule(physics) == "spectrum":
            return mri_zero_filled_error(y, physics, sigma).to(x_tilde)

        with warnings.catch_warnings():  # the pilot's first levels may lie outside the denoiser's range
            warnings.simplefilter("ignore", RuntimeWarning)
            pilot = DPIR(
                sigma=max(sigma, 0.01), denoiser=self.denoiser, max_iter=self.severity_iter, precision=self.precision
            )(y, physics)
        return (x_tilde - pilot).pow(2).flatten(1).mean(1).sqrt()

    def start_indices(
        self, diffpir: dinv.sampling.DiffPIR, sigma_hat: torch.Tensor, c: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Per image, the schedule index whose noise level (images in [0, 1]) is nearest to
        :math:`\sqrt{c}\,\hat\sigma`, and whether that match was clamped to an end."""
        levels = (diffpir.sigmas[diffpir.seq.long()] / 2).double().cpu()
        target = (c**0.5 * sigma_hat).double().cpu()
        # the last index has no step left (DiffPIR returns the sample at that level): at most the one before
        index = (levels[None, :-1] - target[:, None]).abs().argmin(1)
        clamped = (target > levels.max()) | (target < levels.min())
        return index, clamped

    def _run(
        self,
        diffpir,
        y,
        physics,
        x_start: torch.Tensor | None,
        sigma_hat: torch.Tensor | None,
        c: float,
        i0: int,
        sigma: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """DiffPIR's loop from schedule index ``i0`` (``x_start``: the measurement-only estimate in
        [0, 1] with severities ``sigma_hat`` and start constant ``c``, or ``None`` for deepinv's own
        start from pure noise).

        Why this is not :meth:`deepinv.sampling.DiffPIR.forward` with another start: in deepinv 0.5
        that method rebuilds the schedule from the physics' noise level on every call (which
        undoes the log spacing), always starts at the schedule's first level with pure-noise
        scaling, draws from torch's global generator and has no per-example start. The steps
        below are its steps, with its coefficients and data-fidelity prox read from the same
        :class:`~deepinv.sampling.DiffPIR` object (:meth:`schedule`); ``start="noise"`` with
        ``spacing="deepinv"`` reproduces it exactly (tested)."""
        sqrt_recip, _ = diffpir.get_alpha_prod()
        sigmas, seq = diffpir.sigmas, diffpir.seq
        network = at_precision(self.denoiser, self.precision)

        def randn(like):  # in ``like``'s memory layout, as deepinv's randn_like (MRI images are channel-last)
            return torch.empty_like(like, device="cpu").normal_(generator=generator).to(like.device)

        if x_start is None:  # deepinv's start, line for line
            x = 2 * physics.A_adjoint(y) - 1
            x = (x + (sigmas[seq[0]] ** 2 - 4.0 * sigma**2).sqrt() * randn(x)) / sqrt_recip[-1]
        else:
            level = sigmas[seq[i0]]
            t = diffpir.find_nearest(diffpir.reduced_alpha_cumprod, level)
            x0 = 2 * x_start - 1
            extra = (level**2 - 4.0 * c * sigma_hat.to(x0) ** 2).clamp_min(0).sqrt()
            x = diffpir.sqrt_alphas_cumprod[t] * (x0 + extra.reshape(-1, *[1] * (x0.dim() - 1)) * randn(x0))
        # deepinv returns the sample at the schedule's last level, not that level's denoised image
        # (its last network call is unused): the loop stops one step earlier, output unchanged
        for i in range(i0, len(seq) - 1):
            level = sigmas[seq[i]]
            t = diffpir.find_nearest(diffpir.reduced_alpha_cumprod, level)
            at = 1 / sqrt_recip[t] ** 2
            x0 = (2 * network(x / (2 * at.sqrt()) + 0.5, level / 2) - 1).clamp(-1, 1)
            x0 = diffpir.data_fidelity.prox(x0 / 2 + 0.5, y, physics, gamma=1.0 / (2 * diffpir.rhos[t])) * 2 - 1
            t_next = diffpir.find_nearest(diffpir.reduced_alpha_cumprod, sigmas[seq[i + 1]])
            eps = (x - diffpir.sqrt_alphas_cumprod[t] * x0) / diffpir.sqrt_1m_alphas_cumprod[t]
            x = (
                diffpir.sqrt_alphas_cumprod[t_next] * x0
                + diffpir.sqrt_1m_alphas_cumprod[t_next] * (1 - diffpir.zeta) ** 0.5 * eps
                + diffpir.sqrt_1m_alphas_cumprod[t_next] * diffpir.zeta**0.5 * randn(x)
            )
        return x / 2 + 0.5

    def _solve(self, y, physics: dinv.physics.Physics, seed: int | None = None, start: str | None = None, **kwargs):
        start = self.start if start is None else start
        if start not in PIXEL_START_RULES:
            raise ValueError(f"start must be one of {PIXEL_START_RULES}, got {start!r}")
        generator = self.noise.generator("cpu", seed)  # CPU noise in the image's layout, moved to its device
        # noiseless physics (ZeroNoise, GaussianNoise(0)): the level estimated from y, at least the floor
        sigma, _ = resolve_sigma(y, physics, floor=NOISE_FLOOR)
        diffpir = self.schedule(sigma)
        c = self.start_constant(physics)
        y = y.detach()
        b = y.shape[0]
        with torch.no_grad():
            if start == "noise":
                sigma_hat = torch.full((b,), float("nan"))
                index, clamped = torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.bool)
                x = self._run(diffpir, y, physics, None, None, 0.0, 0, sigma, generator)
                extra_nfe = 0
            else:
                x_tilde = MeasurementBaseline(fbp=True)(y, physics).clamp(0, 1)
                sigma_hat = self.estimate_severity(y, physics, x_tilde, sigma)
                index, clamped = self.start_indices(diffpir, sigma_hat, c)
                x = torch.empty_like(x_tilde)
                for i0 in sorted(set(index.tolist())):  # images that start together run together
                    rows = (index == i0).nonzero().flatten().to(y.device)
                    sub = physics_rows(physics, rows, b, x_tilde[rows])
                    if sub is None:  # per-example operators that cannot be cut: the whole batch runs
                        x[rows] = self._run(diffpir, y, physics, x_tilde, sigma_hat, c, i0, sigma, generator)[rows]
                    else:
                        x[rows] = self._run(
                            diffpir, y[rows], sub, x_tilde[rows], sigma_hat[rows], c, i0, sigma, generator
                        )
                extra_nfe = self.severity_iter if self.severity_rule(physics) == "pilot" else 0
        verified = verify_and_correct(
            x, y, physics, self.max_chi2, self.final_consistency, who="PixelFlash", sigma=sigma
        )
        nfe = (len(diffpir.seq) - 1 - index).clamp_min(0) + extra_nfe
        out_of_range = clamped.clone()
        sigma_range = getattr(self.denoiser, "sigma_range", None)
        if sigma_range is not None and start == "severity":
            out_of_range |= (sigma_hat.cpu() < sigma_range[0]) | (sigma_hat.cpu() > sigma_range[1])
        start_level = (diffpir.sigmas[diffpir.seq.long()[index.to(diffpir.seq.device)]] / 2).cpu()
        return FlashReconstruction(
            x=verified.x,
            wall_time=0.0,
            n_iter=int(nfe.max()),
            nfe=nfe,
            extras={"start_rule": start, "start_level": start_level, "start_constant": c},
            sigma_hat=sigma_hat.cpu(),
            start_step=index,
            out_of_range=out_of_range,
            chi2_estimate=verified.chi2,
            fallback=verified.fallback,
            dc_weight=verified.dc_weight,
            chi2=verified.chi2_final,
        )
