"""The methods of the reserved-subject table (``run_reserved.py``; its docstring describes each
row), registered in the benchmarks' method registry (:mod:`benchmarks.methods`) on import, after
the classical baselines and the learned priors of the earlier table (``run.py``).

The builders read this module's settings (the pixel denoiser, the DPIR and PnP-HVAE grids),
which a run sets with :func:`configure`.
"""

from __future__ import annotations

import warnings
from typing import Any

import deepinv as dinv
import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import noise_sigma
from deepinv_tunable.priors import DnCNNDenoiser, load_pixel_denoiser
from deepinv_tunable.priors.pixel_denoiser import CORPUS_DNCNN
from deepinv_tunable.solvers import (
    DPIR,
    FlashDiffusion,
    LatentMAP,
    MeasurementBaseline,
    PixelDPS,
    PixelFlash,
    PnPHVAE,
    TunableLDMSolver,
)
from deepinv_tunable.solvers.pnp_hvae import resolve_schedule
from deepinv_tunable.solvers.tunable_ldm import DEFAULT_LDM
from deepinv_tunable.tuning import AutoK, grid_search

from . import common
from . import run as _table  # noqa: F401  (registers the learned-prior methods of the earlier table: latent_map_tv, ...)

TAU_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
#: DPIR's final sigmas (the annealed PnP-HVAE's too). Until 2026-12-07 (0.007, 0.01, 0.015, 0.02): its
#: edges bound the tuned DPIR on MRI 4x (0.007, on ``itk_t1``) and on denoising at 0.05 (0.02), so
#: the rows of tables measured before then are the baseline at a grid edge, a weaker one
DPIR_SIGMA_GRID = (0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07)
DPIR_ITER = 24
#: the pixel denoiser of the DPIR / DiffPIR / DPS / DDRM / pixel-Flash rows (--pixel-denoiser; load_pixel_denoiser)
PIXEL_DENOISER = "dncnn-corpus"
DIFFPIR_ITER = 50
DIFFPIR_LAMBDA_GRID = (0.1, 0.3, 1.0)
DPS_STEPS = 100
#: the configured DPS row runs PixelDPS at its own default number of steps
DPS_CONFIGURED_STEPS = 100
DDRM_STEPS = 100
#: the latent UNet of the tunable-LDM rows (--ldm; a shipped name or a save_pretrained folder)
LDM = DEFAULT_LDM
#: the tunable LDM's latent sizes, as fractions of its K, for the rows that choose k
LDM_K_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def configure(
    pixel_denoiser: str, dpir_grid=None, tau_grid=None, dps_steps: int | None = None, ldm: str | None = None
) -> None:
    """Set the settings the method builders read: the pixel denoiser of the diffusion rows, the
    DPIR final sigmas and PnP-HVAE temperatures (``None`` or empty: keep the current grid),
    the steps of both DPS rows and the latent UNet of the tunable-LDM rows (``None``: keep them)."""
    global DPIR_SIGMA_GRID, TAU_GRID, PIXEL_DENOISER, DPS_STEPS, DPS_CONFIGURED_STEPS, LDM
    PIXEL_DENOISER = pixel_denoiser
    LDM = ldm or LDM
    DPIR_SIGMA_GRID = tuple(dpir_grid) if dpir_grid else DPIR_SIGMA_GRID
    TAU_GRID = tuple(tau_grid) if tau_grid else TAU_GRID
    if dps_steps:
        DPS_STEPS = DPS_CONFIGURED_STEPS = int(dps_steps)


@common.register_method("baseline")
def _baseline(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    return MeasurementBaseline()


def _tuned(ctx: common.BenchContext, build, grid, param: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = grid_search(lambda v: ctx.estimate(build(v), ctx.y_cal).real.clamp(0, 1), ctx.x_cal, grid, param=param)
    ctx.notes.update(
        {
            param: result.best,
            f"{param}_at_grid_edge": result.best in (min(grid), max(grid)),
            "tuning_table": {str(k): v for k, v in result.table.items()},
        }
    )
    return build(result.best)


@common.register_method("dpir dncnn")
def _dpir(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    denoiser = DnCNNDenoiser.from_pretrained(device=ctx.device)
    return _tuned(ctx, lambda s: DPIR(sigma=s, denoiser=denoiser, max_iter=DPIR_ITER), DPIR_SIGMA_GRID, "sigma")


@common.register_method("dpir dncnn corpus")
def _dpir_corpus(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    denoiser = DnCNNDenoiser.from_pretrained(CORPUS_DNCNN, device=ctx.device)
    return _tuned(ctx, lambda s: DPIR(sigma=s, denoiser=denoiser, max_iter=DPIR_ITER), DPIR_SIGMA_GRID, "sigma")


def _pnp(ctx: common.BenchContext, name: str, schedule: str = "fixed") -> dinv.models.Reconstructor:
    """PnP-HVAE on the shipped ``name``: the fixed point with tau tuned on the reference slices,
    or the annealed schedule with its final level tuned there (as for DPIR)."""
    hvae = pretrained.load(name, device=ctx.device)
    ctx.notes["schedule"] = schedule
    if schedule == "anneal":
        return _tuned(ctx, lambda s: PnPHVAE(hvae, schedule="anneal", anneal_sigma=s), DPIR_SIGMA_GRID, "sigma")
    return _tuned(ctx, lambda t: PnPHVAE(hvae, tau=t), TAU_GRID, "tau")


@common.register_method("pnp_hvae")
def _pnp_hvae(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The shipped ``hvae_mri64`` in the schedule :class:`~deepinv_tunable.solvers.PnPHVAE` runs
    by default for this physics (:func:`~deepinv_tunable.solvers.pnp_hvae.resolve_schedule`:
    annealed for CT and deblurring, the fixed point for MRI), its parameter tuned on the
    reference slices."""
    return _pnp(ctx, "hvae_mri64", resolve_schedule("auto", "auto", ctx.physics))


@common.register_method("pnp_hvae fixed")
def _pnp_hvae_fixed(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """PnP-HVAE's fixed-point iteration on every task (the ``pnp_hvae`` row before the annealed
    schedule): on 60-view CT it keeps the streaks of its first iterate."""
    return _pnp(ctx, "hvae_mri64", "fixed")


@common.register_method("pnp_hvae annealed")
def _pnp_hvae_annealed(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The annealed schedule on every task (MRI included, where it is not the default):
    8 HQS iterations, denoiser level falling from 0.19 to the final sigma, each level's
    temperature from :func:`~deepinv_tunable.priors.corpus_tau_for_sigma`; final sigma tuned on the reference slices."""
    return _pnp(ctx, "hvae_mri64", "anneal")


@common.register_method("pnp_hvae default")
def _pnp_hvae_default(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """``PnPHVAE(pretrained.load("hvae_mri64"))`` with nothing set: no reference slices, every
    parameter chosen per call from the measurements alone (what a user gets)."""
    ctx.notes["schedule"] = resolve_schedule("auto", "auto", ctx.physics)
    return PnPHVAE(pretrained.load("hvae_mri64", device=ctx.device))


@common.register_method("pnp_hvae template")
def _pnp_hvae_template(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    return _pnp(ctx, "hvae_mni152_mri64")


class FlashWithDiagnostics(dinv.models.Reconstructor):
    """A guarded sampler (latent Flash by default, PixelFlash, the tunable LDM) that counts, in
    ``notes``, the slices its measurement guard sent back to the baseline and the network
    evaluations it spent."""

    def __init__(self, notes: dict[str, Any], flash=None):
        super().__init__()
        self.flash = flash if flash is not None else FlashDiffusion.from_pretrained(seed=0)
        self.notes = notes

    def forward(self, y, physics, **kwargs):
        out = self.flash.reconstruct(y, physics)
        nfe = out.nfe.sum() if torch.is_tensor(out.nfe) else out.nfe * y.shape[0]  # per slice, or one for all
        self.notes["fallback"] = self.notes.get("fallback", 0) + int(out.fallback.sum())
        self.notes["nfe"] = self.notes.get("nfe", 0) + int(nfe)
        self.notes["slices"] = self.notes.get("slices", 0) + y.shape[0]
        return out.x


@common.register_method("flash")
def _flash(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """Latent Flash at its defaults: the shipped f4c12 set, each slice started at its severity."""
    return FlashWithDiagnostics(ctx.notes)


@common.register_method("flash full")
def _flash_full(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The same sampler over the whole 50-step schedule from noise (``start="noise"``): what the
    adaptive start saves, same code, same networks."""
    return FlashWithDiagnostics(ctx.notes, FlashDiffusion.from_pretrained(seed=0, start="noise"))


def _ldm_solver(ctx: common.BenchContext, k=None, like: TunableLDMSolver | None = None, **options) -> TunableLDMSolver:
    """The LDM rows' solver (``options``: further keywords of the solver); ``like``: another one
    whose networks it shares (loaded once)."""
    if like is not None:
        return TunableLDMSolver(like.vae, like.unet, k=k, seed=0, **options)
    return TunableLDMSolver.from_pretrained(LDM, device=ctx.device, k=k, seed=0, **options)


def _ldm_ks(solver: TunableLDMSolver) -> list[int]:
    return [round(f * solver.vae.latent_dim) for f in LDM_K_FRACTIONS]


@common.register_method("tunable_ldm")
def _tunable_ldm(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The tunable LDM at its defaults (full k, 50 steps, the scheduled local MAP), guarded."""
    return FlashWithDiagnostics(ctx.notes, _ldm_solver(ctx))


def _latent_posterior(ctx: common.BenchContext, step: str) -> dinv.models.Reconstructor:
    """The same networks and 50-step schedule with a latent-gradient data step and DDIM (eta 0.1)
    instead of the local MAP: latent DPS (the paper's LDPS, step 1.5) or PSLD, without a final
    correction (the papers' setting, and the one ``docs/flash_f4c12_table.rst`` was measured in)."""
    from deepinv_tunable.diffusion.consistency import consistency_step

    solver = _ldm_solver(ctx, consistency=consistency_step(step), zeta=None, final_consistency=False)
    return FlashWithDiagnostics(ctx.notes, solver)


@common.register_method("latent_dps")
def _latent_dps(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    return _latent_posterior(ctx, "ldps")


@common.register_method("latent_psld")
def _latent_psld(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    return _latent_posterior(ctx, "psld")


@common.register_method("tunable_ldm tuned_k")
def _tunable_ldm_tuned_k(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The tunable LDM at the k of :data:`LDM_K_FRACTIONS` best on the reference slices."""
    base = _ldm_solver(ctx)
    solver = _tuned(ctx, lambda k: FlashWithDiagnostics(ctx.notes, _ldm_solver(ctx, k, like=base)), _ldm_ks(base), "k")
    _forget_tuning_counts(ctx.notes)
    return solver


class AutoKWithDiagnostics(dinv.models.Reconstructor):
    """:class:`~deepinv_tunable.tuning.latent_size.AutoK` recording, in ``notes``, every slice's chosen ``k``
    and the rule that chose it."""

    def __init__(self, notes: dict[str, Any], auto):
        super().__init__()
        self.auto, self.notes = auto, notes

    def forward(self, y, physics, **kwargs):
        out = self.auto.reconstruct(y, physics)
        self.notes.setdefault("k_chosen", []).extend(int(k) for k in out.k)
        self.notes["k_rule"] = out.extras["k_rule"]
        return out.x


@common.register_method("tunable_ldm auto_k")
def _tunable_ldm_auto_k(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The tunable LDM with k chosen per slice from the measurements alone (AutoK's default rule)."""
    solver = _ldm_solver(ctx)
    return AutoKWithDiagnostics(ctx.notes, AutoK(solver, _ldm_ks(solver)))


#: The flow's k grid (as in ``run_k_study.py``) and its solver: gamma 0, 100 Adam steps.
FLOW_KS = (1024, 2048, 4096, 8192, 12288, 16384)


@common.register_method("latent_map flow")
def _latent_map_flow(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The shipped ordered flow, k chosen per slice from the measurements alone (``select_k``'s
    default rule; no reference slices used)."""
    flow = pretrained.load("ordered_flow_mri128", device=ctx.device)
    return AutoKWithDiagnostics(ctx.notes, AutoK(LatentMAP(flow, gamma=0.0, max_iter=100), FLOW_KS))


class SkipMethod(Exception):
    """A method that does not apply to a task (the row is left out, with the reason printed)."""


def _forget_tuning_counts(notes: dict[str, Any]) -> None:
    for key in ("fallback", "nfe", "slices"):  # the counts reported are the evaluation's, not the tuning's
        notes.pop(key, None)


def _pixel_denoiser(ctx: common.BenchContext) -> dinv.models.Denoiser:
    """The pixel denoiser of the diffusion rows (:func:`~deepinv_tunable.priors.load_pixel_denoiser`)."""
    return load_pixel_denoiser(PIXEL_DENOISER, device=ctx.device)


@common.register_method("dpir pixel")
def _dpir_drunet(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    denoiser = _pixel_denoiser(ctx)
    return _tuned(ctx, lambda s: DPIR(sigma=s, denoiser=denoiser, max_iter=DPIR_ITER), DPIR_SIGMA_GRID, "sigma")


class OneShotDenoiser(dinv.models.Reconstructor):
    """A denoiser applied once at the physics' noise level (denoising tasks only)."""

    def __init__(self, denoiser: dinv.models.Denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, y, physics, **kwargs):
        with torch.no_grad():
            return self.denoiser(y, noise_sigma(physics))


def _denoising_only(ctx: common.BenchContext) -> None:
    if not isinstance(ctx.physics, dinv.physics.Denoising):
        raise SkipMethod(f"a plain denoiser row needs a denoising task, not {type(ctx.physics).__name__}")


@common.register_method("denoise pixel")
def _denoise_pixel(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The pixel denoiser of ``--pixel-denoiser`` once at the noise level (denoising tasks)."""
    _denoising_only(ctx)
    return OneShotDenoiser(_pixel_denoiser(ctx))


@common.register_method("denoise dncnn corpus")
def _denoise_dncnn_corpus(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The corpus DnCNN family (scaled to the level) once at the noise level (denoising tasks)."""
    _denoising_only(ctx)
    return OneShotDenoiser(DnCNNDenoiser.from_pretrained(CORPUS_DNCNN, device=ctx.device))


class CountedSampler(dinv.models.Reconstructor):
    """A deepinv sampler (``sampler(y, physics)``) whose network evaluations per slice are known
    (``nfe``), counted in ``notes`` like Flash's."""

    def __init__(self, sampler, nfe: int, notes: dict[str, Any]):
        super().__init__()
        self.sampler, self.nfe, self.notes = sampler, nfe, notes

    def forward(self, y, physics, **kwargs):
        out = self.sampler(y, physics)
        self.notes["nfe"] = self.notes.get("nfe", 0) + self.nfe * y.shape[0]
        self.notes["slices"] = self.notes.get("slices", 0) + y.shape[0]
        return out.to(y.dtype)


@common.register_method("diffpir pixel")
def _diffpir(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """deepinv's DiffPIR as shipped by deepinv, lambda picked on the reference slices."""
    denoiser, sigma = _pixel_denoiser(ctx), noise_sigma(ctx.physics)

    def build(lam):
        sampler = dinv.sampling.DiffPIR(
            denoiser, dinv.optim.data_fidelity.L2(), sigma=sigma, max_iter=DIFFPIR_ITER, lambda_=lam, device=ctx.device
        )
        return CountedSampler(sampler, DIFFPIR_ITER, ctx.notes)

    solver = _tuned(ctx, build, DIFFPIR_LAMBDA_GRID, "lambda_")
    _forget_tuning_counts(ctx.notes)
    return solver


def _pixel_flash(ctx: common.BenchContext, start: str) -> dinv.models.Reconstructor:
    denoiser = _pixel_denoiser(ctx)

    def build(lam):
        return FlashWithDiagnostics(
            ctx.notes, PixelFlash(denoiser, max_iter=DIFFPIR_ITER, lambda_=lam, start=start, seed=0)
        )

    solver = _tuned(ctx, build, DIFFPIR_LAMBDA_GRID, "lambda_")
    _forget_tuning_counts(ctx.notes)
    return solver


@common.register_method("pixel_flash")
def _pixel_flash_adaptive(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """:class:`~deepinv_tunable.solvers.PixelFlash`: DiffPIR started at each slice's severity."""
    return _pixel_flash(ctx, "severity")


@common.register_method("pixel_flash fixed")
def _pixel_flash_fixed(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """The same sampler over the whole schedule (its fixed-NFE reference)."""
    return _pixel_flash(ctx, "noise")


@common.register_method("ddrm pixel")
def _ddrm(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """deepinv's DDRM (decomposable physics only: MRI and FFT blur), deepinv's example schedule
    (noise levels evenly from 1 to 0)."""
    if not isinstance(ctx.physics, dinv.physics.DecomposablePhysics):
        raise SkipMethod(f"DDRM needs a decomposable physics, not {type(ctx.physics).__name__}")
    sampler = dinv.sampling.DDRM(_pixel_denoiser(ctx), sigmas=np.linspace(1, 0, DDRM_STEPS))
    return CountedSampler(sampler, DDRM_STEPS, ctx.notes)


@common.register_method("dps pixel")
def _dps(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """deepinv's DPS (DDPM solver, 'norm' guidance, weight 1), ``DPS_STEPS`` steps: each step
    back-propagates through the denoiser, so it is run on few slices (see the docs)."""
    sampler = dinv.sampling.DPS(
        _pixel_denoiser(ctx),
        num_steps=DPS_STEPS,
        device=ctx.device,
        rng=torch.Generator(device=ctx.device).manual_seed(0),
    )
    return CountedSampler(sampler, DPS_STEPS, ctx.notes)


@common.register_method("dps pixel configured")
def _dps_configured(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    """:class:`~deepinv_tunable.solvers.PixelDPS`: deepinv's DPS with the settings measured for the
    diffusion pixel prior (annealed guidance, weight 2, 100 steps, a real image as the state)."""
    sampler = PixelDPS(
        _pixel_denoiser(ctx),
        num_steps=DPS_CONFIGURED_STEPS,
        device=ctx.device,
        rng=torch.Generator(device=ctx.device).manual_seed(0),
    )
    return CountedSampler(sampler, DPS_CONFIGURED_STEPS, ctx.notes)
