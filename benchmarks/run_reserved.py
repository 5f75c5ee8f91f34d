r"""The benchmark that decides: every method on the corpus' **reserved** subjects, which no
shipped model was trained or tuned on, with each method's parameter chosen on reference slices
of the same subject (disjoint from the evaluation slices), in one run, on the same measurements.

Subjects (``make corpus``, split ``eval``): ``itk_t1`` (real head T1, axial), ``pyradiomics_brain2``
(contrast-enhanced T1 brain patient, axial), ``pyradiomics_lung2`` (chest CT, HU window). Slices
are padded to a square and, when larger, resized (antialiased) to 128x128. Reference slices and
evaluation slices interleave through the volume (3 and 6 by default) and never coincide.

Tasks (:data:`benchmarks.tasks.RESERVED_TASKS`; noise std 0.01 on images in [0, 1]): ``mri4x`` /
``mri8x`` (single-coil Cartesian, Gaussian mask) and ``deblur`` (the table's ``deblur2.0``:
Gaussian, std 2 px) on the MR subjects, with the plain denoising rows ``denoise0.02`` /
``denoise0.05``; ``ct60`` (60 parallel-beam views) on the CT subject.

Methods (registry of ``common.py``, extended in ``reserved_methods.py``):

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
* ``flash``: latent Flash, :class:`~deepinv_tunable.solvers.FlashDiffusion` at its defaults (the shipped
  ``severity_encoder_f4c12_mri128`` set, each slice started at its estimated severity); ``flash full``:
  the same sampler over the whole schedule from noise;
* ``latent_dps`` / ``latent_psld``: the tunable LDM's networks and schedule with the latent-gradient
  data steps (:class:`~deepinv_tunable.diffusion.consistency.LDPS`, :class:`~deepinv_tunable.diffusion.consistency.PSLD`) and DDIM;
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
CPU thread by default). Writes ``results/benchmarks/reserved.json`` (after every row); the docs'
tables (``docs/reserved_table.rst`` and the others of :mod:`benchmarks.collate`) are generated from
the result files kept in ``benchmarks/results`` by ``python -m benchmarks tables``.

Usage::

    python -m benchmarks reserved                  # full run
    python -m benchmarks reserved --quick          # 2 + 2 slices, small grids
    python -m benchmarks reserved --subjects itk_t1 --tasks mri4x --methods "dpir dncnn"
    python -m benchmarks reserved --combine a.json b.json --out benchmarks/results/reserved_results.json
    python -m benchmarks tables --only reserved_table.rst
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable.physics import build_physics
from deepinv_tunable.utils.atomic import write_json_atomic

from . import common, reserved_methods
from .reserved_data import ROOT, SIZE, SUBJECTS, Subject, fit_square, load_subject, measure
from .reserved_methods import DIFFPIR_ITER, DIFFPIR_LAMBDA_GRID, SkipMethod
from .tasks import RESERVED_TASKS as TASKS
from .tasks import RESERVED_TASKS_OF as TASKS_OF

__all__ = [
    "DEFAULT_METHODS",
    "DIFFPIR_ITER",
    "DIFFPIR_LAMBDA_GRID",
    "ROOT",
    "SIZE",
    "SUBJECTS",
    "TASKS",
    "TASKS_OF",
    "Subject",
    "add_arguments",
    "collect",
    "combine",
    "fit_square",
    "load_subject",
    "markdown",
    "measure",
    "rst",
    "run",
]

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


# ------------------------------------------------------------------------------------- running
def _summary(values) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def collect(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    n_cal, n_eval = (2, 2) if args.quick else (args.n_cal, args.n_eval)
    tv_grid = tuple(args.tv_grid) if args.tv_grid else (common.QUICK_TV_GRID if args.quick else common.TV_GRID)
    # the method builders read reserved_methods' settings
    reserved_methods.configure(args.pixel_denoiser, args.dpir_grid, args.tau_grid, args.dps_steps, args.ldm)
    record: dict[str, Any] = {
        "command": sys.argv,
        "quick": args.quick,
        "threads": args.threads,
        "tasks": TASKS,
        "grids": {
            "tv": list(tv_grid),
            "dpir_sigma": list(reserved_methods.DPIR_SIGMA_GRID),
            "tau": list(reserved_methods.TAU_GRID),
            "diffpir_lambda": list(DIFFPIR_LAMBDA_GRID),
        },
        "pixel_denoiser": str(reserved_methods.PIXEL_DENOISER),
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
            for method in args.methods or DEFAULT_METHODS:
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


def combine(paths: list[str], methods: list[str] | None = None) -> dict[str, Any]:
    """Rows of several runs (e.g. one process per subject) in one record, ordered by subject,
    task and method; a later file's row replaces an earlier one of the same (subject, task, method).
    ``methods``: keep only these methods' rows (``None``: all)."""
    import json

    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    record: dict[str, Any] = {"combined": paths, "subjects": {}, "rows": [], "complete": True}
    for path in paths:
        part = json.loads(Path(path).read_text(encoding="utf-8"))
        record["subjects"].update(part["subjects"])
        record["complete"] &= part.get("complete", False)
        rows.update(
            {(r["data"], r["task"], r["method"]): r for r in part["rows"] if methods is None or r["method"] in methods}
        )
    methods = list(DEFAULT_METHODS) + sorted({m for _, _, m in rows} - set(DEFAULT_METHODS))
    key = lambda k: (list(SUBJECTS).index(k[0]), list(TASKS).index(k[1]), methods.index(k[2]))  # noqa: E731
    record["rows"] = [rows[k] for k in sorted(rows, key=key)]
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS))
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[*common.METHODS, "tv_pgd oracle"],
        default=None,
        help="methods to run (default: the table's); with --combine, the methods whose rows are kept (default: all)",
    )
    parser.add_argument("--n-cal", type=int, default=3, help="reference slices per subject (default 3)")
    parser.add_argument("--n-eval", type=int, default=6, help="evaluation slices per subject (default 6)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tv-grid", type=float, nargs="+", help=f"TV weights (default {common.TV_GRID})")
    parser.add_argument(
        "--dpir-grid", type=float, nargs="+", help=f"DPIR final sigmas (default {reserved_methods.DPIR_SIGMA_GRID})"
    )
    parser.add_argument(
        "--tau-grid", type=float, nargs="+", help=f"PnP-HVAE temperatures (default {reserved_methods.TAU_GRID})"
    )
    parser.add_argument(
        "--pixel-denoiser",
        default=reserved_methods.PIXEL_DENOISER,
        help="shipped name or save_pretrained folder of the pixel denoiser (default %(default)s)",
    )
    parser.add_argument(
        "--ldm",
        default=reserved_methods.LDM,
        help="shipped name or save_pretrained folder of the tunable-LDM rows' latent UNet (default %(default)s)",
    )
    parser.add_argument(
        "--dps-steps", type=int, default=None, help=f"steps of both DPS rows (default {reserved_methods.DPS_STEPS})"
    )
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "reserved.json"))
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON",
        help="do not run: merge the rows of these result files into --out and print the table",
    )


def run(args: argparse.Namespace) -> int:
    if args.combine:
        record = combine(args.combine, args.methods)
        write_json_atomic(args.out, record)
    else:
        record = collect(args)
    print(markdown(record))
    return 0
