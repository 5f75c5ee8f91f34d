r"""The benchmark that decides: every method on the corpus' **reserved** subjects, which no
shipped model was trained or tuned on, with each method's parameter chosen on reference slices
of the same subject (disjoint from the evaluation slices), in one run, on the same measurements.

Subjects (``make corpus``, split ``eval``): ``itk_t1`` (real head T1, axial), ``pyradiomics_brain2``
(contrast-enhanced T1 brain patient, axial), ``pyradiomics_lung2`` (chest CT, HU window). Slices
are padded to a square and, when larger, resized (antialiased) to 128x128. Reference slices and
evaluation slices interleave through the volume (3 and 6 by default) and never coincide.

Tasks (noise std 0.01 on images in [0, 1]): ``mri4x`` / ``mri8x`` (single-coil Cartesian,
Gaussian mask) and ``deblur`` (Gaussian, std 2 px) on the MR subjects; ``ct60`` (60 parallel-beam
views) on the CT subject.

Methods (registry of ``common.py``, extended here):

* ``baseline``: zero-filled MRI / least-squares CT / the observed blurred image;
* ``tv_pgd tuned``: deepinv TV-PGD, lambda picked on the reference slices; ``tv_pgd oracle``: lambda
  picked on the evaluation slices' ground truth (an **oracle**, labelled so);
* ``dpir dncnn``: :class:`~deepinv_tunable.solvers.DPIR` (24 iterations) with scico's pretrained
  DnCNN L/M/H (:class:`~deepinv_tunable.priors.DnCNNDenoiser`), final sigma picked on the
  reference slices; ``dpir dncnn corpus``: the same with the three networks fine-tuned on the
  corpus (what the corpus alone buys);
* ``pnp_hvae``: :class:`~deepinv_tunable.solvers.PnPHVAE` with the shipped ``hvae_mri64`` in its
  default schedule for the task (annealed for CT and deblurring, the fixed point for MRI), its
  parameter (final sigma, or tau) picked on the reference slices; ``pnp_hvae default``: the same
  solver with nothing set (every parameter chosen per slice from its measurements, no reference
  slices); ``pnp_hvae fixed`` / ``pnp_hvae annealed``: one schedule on every task;
  ``pnp_hvae template``: the earlier template-only HVAE (fixed point);
* ``latent_map_tv``: :class:`~deepinv_tunable.solvers.LatentMAPTV` with ``tunable_vae_f4_mri128``
  (corpus-trained), ``(lambda, beta)`` picked on the reference slices (``beta = 0`` is TV);
* ``latent_map flow``: :class:`~deepinv_tunable.solvers.LatentMAP` (gamma 0, 100 steps) with the
  shipped ``ordered_flow_mri128``, ``k`` chosen per evaluation slice from its measurements alone
  (:class:`~deepinv_tunable.tuning.latent_size.AutoK`, default rule; no reference slices);
* ``flash``: :class:`~deepinv_tunable.solvers.FlashDiffusion` from ``severity_encoder_mri128``;
* ``dpir pixel``: DPIR with the pixel denoiser of ``--pixel-denoiser`` (a
  :class:`~deepinv_tunable.priors.PixelDenoiser` checkpoint, or ``dncnn-corpus``: the corpus
  DnCNNs scaled to every level), final sigma picked on the reference slices;
* ``diffpir pixel``: deepinv's own :class:`~deepinv.sampling.DiffPIR` (50 steps) with it,
  lambda picked on the reference slices; ``pixel_flash``: the same sampler started at each
  slice's estimated severity (:class:`~deepinv_tunable.solvers.PixelFlash`), and
  ``pixel_flash fixed`` its full-schedule reference (same code, start from noise);
* ``ddrm pixel`` (deepinv's DDRM, 100 steps; MRI and blur only) and ``dps pixel`` (deepinv's
  DPS, 100 DDPM steps, back-propagating through the denoiser: slow, run on few slices).

Columns: PSNR, PSNR inside the foreground mask, SSIM, seconds per slice (solver calls only, one
CPU thread by default). Writes ``results/benchmarks/reserved.json`` (after every row) and
``docs/reserved_table.rst``.

Usage::

    python -m benchmarks reserved                  # full run
    python -m benchmarks reserved --quick          # 2 + 2 slices, small grids
    python -m benchmarks reserved --subjects itk_t1 --tasks mri4x --methods "dpir dncnn"
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepinv as dinv
import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.atomic import write_json_atomic, write_text_atomic
from deepinv_tunable.data.corpus import load_corpus
from deepinv_tunable.data.slicing import select_slices
from deepinv_tunable.physics import (
    build_physics,
    noise_sigma,
    to_physics_domain,
)
from deepinv_tunable.priors import DnCNNDenoiser, load_pixel_denoiser
from deepinv_tunable.priors.pixel_denoiser import CORPUS_DNCNN
from deepinv_tunable.solvers import DPIR, FlashDiffusion, LatentMAP, MeasurementBaseline, PixelDPS, PixelFlash, PnPHVAE
from deepinv_tunable.solvers.pnp_hvae import resolve_schedule
from deepinv_tunable.tuning import AutoK, grid_search

from . import common
from . import run as _table  # noqa: F401  (registers the learned-prior methods of the earlier table: latent_map_tv, ...)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128
SUBJECTS = {"itk_t1": "mr", "pyradiomics_brain2": "mr", "pyradiomics_lung2": "ct"}
TASKS: dict[str, dict[str, Any]] = {
    "mri4x": {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01},
    "mri8x": {"kind": "mri", "acceleration": 8, "noise_sigma": 0.01},
    "ct60": {"kind": "ct", "n_views": 60, "noise_sigma": 0.01},
    "deblur": {"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01},
    # the pixel prior against the DnCNN family as a plain denoiser (the "denoise" rows)
    "denoise0.02": {"kind": "denoising", "noise_sigma": 0.02},
    "denoise0.05": {"kind": "denoising", "noise_sigma": 0.05},
}
TASKS_OF = {"mr": ("mri4x", "mri8x", "deblur", "denoise0.02", "denoise0.05"), "ct": ("ct60",)}
TAU_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
DPIR_SIGMA_GRID = (0.007, 0.01, 0.015, 0.02)
DPIR_ITER = 24
#: the pixel denoiser of the DPIR / DiffPIR / DPS / DDRM / pixel-Flash rows (--pixel-denoiser; load_pixel_denoiser)
PIXEL_DENOISER = "dncnn-corpus"
DIFFPIR_ITER = 50
DIFFPIR_LAMBDA_GRID = (0.1, 0.3, 1.0)
DPS_STEPS = 100
#: the configured DPS row runs PixelDPS at its own default number of steps
DPS_CONFIGURED_STEPS = 100
DDRM_STEPS = 100
DEFAULT_METHODS = (
    "baseline",
    "tv_pgd tuned",
    "tv_pgd oracle",
    "dpir dncnn",
    "dpir dncnn corpus",
    "pnp_hvae",
    "pnp_hvae default",
    "pnp_hvae fixed",
    "pnp_hvae template",
    "latent_map_tv",
    "latent_map flow",
    "flash",
    "dpir pixel",
    "diffpir pixel",
    "pixel_flash",
    "pixel_flash fixed",
    "ddrm pixel",
)


def fit_square(image: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Zero-pad ``(H, W)`` to a centred square; shrink (antialiased) to ``size`` if larger."""
    h, w = image.shape
    side = max(h, w, size)
    out = torch.zeros(side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    if side > size:
        out = torch.nn.functional.interpolate(
            out[None, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0, 0]
    return out.clamp(0, 1)


@dataclass
class Subject:
    name: str
    modality: str
    calibration: torch.Tensor
    evaluation: torch.Tensor
    calibration_idx: list[int]
    evaluation_idx: list[int]


def load_subject(name: str, n_cal: int, n_eval: int, root: str) -> Subject:
    """Interleaved reference and evaluation slices of a reserved subject (disjoint); a
    training-split subject's the same way, for developing a rule before any reserved run."""
    records = load_corpus(root, split="eval" if name in SUBJECTS else "train", subjects=(name,)).images
    if not records:
        raise ValueError(f"subject {name!r} is not in the corpus at {root!r}")
    images = [c.image for c in records]
    n = len(images)
    ev = select_slices(n, 0, n, n_eval)
    gap = max(1, n // n_eval // 2)
    cal_pool = [i + gap for i in ev if i + gap < n and i + gap not in ev]
    cal = [cal_pool[j] for j in np.linspace(0, len(cal_pool) - 1, min(n_cal, len(cal_pool))).round().astype(int)]
    if set(cal) & set(ev):
        raise ValueError(f"subject {name}: reference and evaluation slices overlap")
    stack = torch.stack([fit_square(im) for im in images]).unsqueeze(1)
    return Subject(name, records[0].modality, stack[cal], stack[ev], cal, ev)


def measure(
    subject: Subject, physics: dinv.physics.Physics, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference and the evaluation measurements of ``subject`` (one generator seeded with
    ``seed``, reference slices first): every benchmark that compares with this one sees the same."""
    gen = torch.Generator(device=device).manual_seed(seed)
    y_cal = physics(to_physics_domain(subject.calibration.to(device), physics), rng=gen)
    return y_cal, physics(to_physics_domain(subject.evaluation.to(device), physics), rng=gen)


# ------------------------------------------------------------------------------------- methods
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
    """A Flash sampler (latent or pixel) that counts, in ``notes``, the slices its measurement
    guard sent back to the baseline and the network evaluations it spent."""

    def __init__(self, notes: dict[str, Any], flash=None):
        super().__init__()
        self.flash = flash if flash is not None else FlashDiffusion.from_pretrained("severity_encoder_mri128", seed=0)
        self.notes = notes

    def forward(self, y, physics, **kwargs):
        out = self.flash.reconstruct(y, physics)
        self.notes["fallback"] = self.notes.get("fallback", 0) + int(out.fallback.sum())
        self.notes["nfe"] = self.notes.get("nfe", 0) + int(out.nfe.sum())
        self.notes["slices"] = self.notes.get("slices", 0) + y.shape[0]
        return out.x


@common.register_method("flash")
def _flash(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    return FlashWithDiagnostics(ctx.notes)


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


# ------------------------------------------------------------------------------------- running
def _summary(values) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    n_cal, n_eval = (2, 2) if args.quick else (args.n_cal, args.n_eval)
    tv_grid = tuple(args.tv_grid) if args.tv_grid else (common.QUICK_TV_GRID if args.quick else common.TV_GRID)
    global DPIR_SIGMA_GRID, TAU_GRID, PIXEL_DENOISER  # the method builders read the module's settings
    PIXEL_DENOISER = args.pixel_denoiser
    DPIR_SIGMA_GRID = tuple(args.dpir_grid) if args.dpir_grid else DPIR_SIGMA_GRID
    TAU_GRID = tuple(args.tau_grid) if args.tau_grid else TAU_GRID
    record: dict[str, Any] = {
        "command": sys.argv,
        "quick": args.quick,
        "threads": args.threads,
        "tasks": TASKS,
        "grids": {
            "tv": list(tv_grid),
            "dpir_sigma": list(DPIR_SIGMA_GRID),
            "tau": list(TAU_GRID),
            "diffpir_lambda": list(DIFFPIR_LAMBDA_GRID),
        },
        "pixel_denoiser": str(PIXEL_DENOISER),
        "subjects": {},
        "rows": [],
        "complete": False,
    }
    start = time.perf_counter()
    for name in args.subjects:
        subject = load_subject(name, n_cal, n_eval, args.corpus)
        record["subjects"][name] = {
            "modality": subject.modality,
            "reference_slices": subject.calibration_idx,
            "evaluation_slices": subject.evaluation_idx,
        }
        for task in [t for t in TASKS_OF[subject.modality] if t in args.tasks]:
            physics = build_physics(TASKS[task], (SIZE, SIZE), device=device)
            y_cal, y = measure(subject, physics, args.seed, device)
            for method in args.methods:
                notes: dict[str, Any] = {}
                if method == "tv_pgd oracle":  # tuned on the evaluation slices' ground truth
                    ctx = common.BenchContext(
                        task, TASKS[task], name, physics, device, subject.evaluation, y, common.N_ITER, tv_grid, notes
                    )
                    solver = common.METHODS["tv_pgd tuned"](ctx)
                    notes["oracle"] = True
                else:
                    ctx = common.BenchContext(
                        task,
                        TASKS[task],
                        name,
                        physics,
                        device,
                        subject.calibration,
                        y_cal,
                        common.N_ITER,
                        tv_grid,
                        notes,
                    )
                    try:
                        solver = common.METHODS[method](ctx)
                    except SkipMethod as why:
                        print(f"{name} {task} {method}: skipped ({why})", file=sys.stderr, flush=True)
                        continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    result = common.evaluate(solver, ctx, subject.evaluation, y, args.batch_size)
                result["psnr_fg"] = _summary(result["per_slice"]["psnr_fg"])
                row = {"method": method, "task": task, "data": name, "dataset": name, **result, "notes": notes}
                record["wall_seconds"] = time.perf_counter() - start
                common.save_row(
                    record,
                    row,
                    args.out,
                    f"[{record['wall_seconds']:7.0f}s] {name} {task} {method}: PSNR {row['psnr']['mean']:.2f} "
                    f"(fg {row['psnr_fg']['mean']:.2f}) {_note(notes)}",
                )
    return common.finish(record, args.out)


#: deepinv's own samplers: no measurement guard, so no fallback count
UNGUARDED = ("diffpir pixel", "ddrm pixel", "dps pixel", "dps pixel configured")


def _note(notes: dict[str, Any], guarded: bool = True) -> str:
    parts = [notes["schedule"]] if "schedule" in notes else []
    parts += [f"{k}={notes[k]:g}" for k in ("lambda_tv", "sigma", "tau", "lambda_") if k in notes]
    if notes.get("k_chosen"):
        parts.append("k {} by {}".format("/".join(str(k) for k in sorted(set(notes["k_chosen"]))), notes["k_rule"]))
    if "lambda_beta" in notes:
        parts.append("lambda={:g}, beta={:g}".format(*notes["lambda_beta"]))
    if "fallback" in notes and guarded:
        parts.append(f"{notes['fallback']}/{notes['slices']} slices fell back to the baseline")
    if notes.get("slices"):
        parts.append(f"NFE {notes['nfe'] / notes['slices']:.1f}/slice")
    if any(notes.get(f"{k}_at_grid_edge") for k in ("sigma", "tau", "lambda_")) or notes.get("lambda_at_grid_edge"):
        parts.append("grid edge")
    return f"({', '.join(parts)})" if parts else ""


HEADER = ["subject", "task", "method", "PSNR (dB)", "PSNR fg (dB)", "SSIM", "s/slice"]


def _cells(r: dict[str, Any]) -> list[str]:
    label = r["method"] + (" [oracle]" if r["notes"].get("oracle") else "")
    return [
        r["data"],
        r["task"],
        f"{label} {_note(r['notes'], r['method'] not in UNGUARDED)}".strip(),
        f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}",
        f"{r['psnr_fg']['mean']:.2f}",
        f"{r['ssim']['mean']:.3f}",
        f"{r['seconds_per_slice']:.2f}",
    ]


def markdown(record: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_cells(r)) + " |" for r in record["rows"]])


def rst(record: dict[str, Any]) -> str:
    return common.rst_table(HEADER, [_cells(r) for r in record["rows"]])


def combine(paths: list[str]) -> dict[str, Any]:
    """Rows of several runs (e.g. one process per subject) in one record, ordered by subject,
    task and method; a later file's row replaces an earlier one of the same (subject, task, method)."""
    import json

    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    record: dict[str, Any] = {"combined": paths, "subjects": {}, "rows": [], "complete": True}
    for path in paths:
        part = json.loads(Path(path).read_text(encoding="utf-8"))
        record["subjects"].update(part["subjects"])
        record["complete"] &= part.get("complete", False)
        rows.update({(r["data"], r["task"], r["method"]): r for r in part["rows"]})
    methods = list(DEFAULT_METHODS) + sorted({m for _, _, m in rows} - set(DEFAULT_METHODS))
    key = lambda k: (list(SUBJECTS).index(k[0]), list(TASKS).index(k[1]), methods.index(k[2]))  # noqa: E731
    record["rows"] = [rows[k] for k in sorted(rows, key=key)]
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS))
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument(
        "--methods", nargs="+", choices=[*common.METHODS, "tv_pgd oracle"], default=list(DEFAULT_METHODS)
    )
    parser.add_argument("--n-cal", type=int, default=3, help="reference slices per subject (default 3)")
    parser.add_argument("--n-eval", type=int, default=6, help="evaluation slices per subject (default 6)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tv-grid", type=float, nargs="+", help=f"TV weights (default {common.TV_GRID})")
    parser.add_argument("--dpir-grid", type=float, nargs="+", help=f"DPIR final sigmas (default {DPIR_SIGMA_GRID})")
    parser.add_argument("--tau-grid", type=float, nargs="+", help=f"PnP-HVAE temperatures (default {TAU_GRID})")
    parser.add_argument(
        "--pixel-denoiser",
        default=PIXEL_DENOISER,
        help="shipped name or save_pretrained folder of the pixel denoiser (default %(default)s)",
    )
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "reserved.json"))
    parser.add_argument("--rst", default=None, help="also write the table as reST here (e.g. docs/reserved_table.rst)")
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON",
        help="do not run: merge the rows of these result files into --out and print the table",
    )


def run(args: argparse.Namespace) -> int:
    if args.combine:
        record = combine(args.combine)
        write_json_atomic(args.out, record)
    else:
        record = collect(args)
    print(markdown(record))
    if args.rst:
        write_text_atomic(args.rst, rst(record))
    return 0
