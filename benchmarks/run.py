r"""The benchmark table: every method x task on the same held-out slices, in one run.

Methods are the classical baselines of ``common.py`` (pseudo-inverse, TV-PGD with the
package default and grid-tuned on calibration slices) and the shipped learned priors, registered
here in the same method registry:

* ``latent_map``: :class:`~deepinv_tunable.solvers.LatentMAP` with ``tunable_vae_mri128`` at
  full ``k``, 100 Adam steps;
* ``latent_map_tv``: :class:`~deepinv_tunable.solvers.LatentMAPTV` with ``tunable_vae_f4_mri128``
  at full ``k`` (100 Adam steps) plus the TV deviation, ``(lambda, beta)`` picked by a grid on
  the calibration slices (``beta = 0``, plain TV, is in the grid);
* ``flash_diffusion``: :class:`~deepinv_tunable.solvers.FlashDiffusion` at its defaults (the shipped
  ``severity_encoder_f4c12_mri128`` set; the docs' table was measured with the earlier
  ``severity_encoder_mri128`` set), 50-step schedule, SNR-matched start per slice;
* ``pnp_hvae tuned``: :class:`~deepinv_tunable.solvers.PnPHVAE` with ``hvae_mri64``, ``tau``
  picked by a grid on the calibration slices;
* ``pnp_hvae posterior mean``: the mean of 8 samples of
  :class:`~deepinv_tunable.solvers.PnPHVAESampler` (same ``tau``, warm-started at the MAP).

Datasets: the learned priors' evaluation sets (the template's held-out slab, and axial slices of
another subject). Every method sees the same measurements. Columns: PSNR, SSIM, NMSE (mean ±
std over slices), seconds per slice, network evaluations (NFE) per slice, and the resident-memory
increase while the method ran. Writes ``results/benchmarks/table.json`` (after every row),
``results/benchmarks/table.md`` and ``results/benchmarks/table.rst``. The docs' copy
(``docs/benchmark_table.rst``) is the table as it was last measured: its rows were not kept, so
``python -m benchmarks tables`` does not regenerate it.

deepinv's DPS / DiffPIR are not in the table: they need a pixel-space diffusion denoiser trained
on these images, and none is shipped (deepinv's pretrained weights would be downloaded at run
time); the latent diffusion rows (``flash_diffusion``) stand in for them.

Usage::

    python -m benchmarks table                  # about 20 minutes on 2 CPU cores
    python -m benchmarks table --quick          # 2 + 2 slices, small grids
    python -m benchmarks table --methods latent_map_tv --merge   # add or redo one method's rows
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import deepinv as dinv
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.audit.uncertainty import PosteriorSampler
from deepinv_tunable.solvers import FlashDiffusion, LatentMAP, LatentMAPTV, PnPHVAE, PnPHVAESampler
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import write_json_atomic, write_text_atomic

from . import common
from .tasks import TABLE_TASKS

ROOT = Path(__file__).resolve().parents[1]
#: the default --tasks (labels of common.TASKS, the bundled-volume tasks of benchmarks.tasks)
TASKS = TABLE_TASKS
TAU_GRID = (0.5, 0.6, 0.7, 0.8)


class Counted(dinv.models.Reconstructor):
    """Calls ``solver.reconstruct`` and adds its network evaluations to ``notes``."""

    def __init__(self, solver, notes: dict[str, Any]):
        super().__init__()
        self.solver, self.notes = solver, notes

    def forward(self, y, physics, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # non-convergence shows in the NFE column
            out = self.solver.reconstruct(y, physics, **kwargs)
        nfe = out.nfe.sum().item() if isinstance(out.nfe, torch.Tensor) else (out.nfe or 0) * y.shape[0]
        self.notes["nfe_sum"] = self.notes.get("nfe_sum", 0) + nfe  # per-sample NFEs (Flash) or one per batch
        self.notes["nfe_slices"] = self.notes.get("nfe_slices", 0) + y.shape[0]
        return out.x


def _tuned_tau(ctx: common.BenchContext, hvae) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = grid_search(
            lambda t: ctx.estimate(PnPHVAE(hvae, tau=t), ctx.y_cal).clamp(0, 1), ctx.x_cal, TAU_GRID, param="tau"
        )
    ctx.notes.update(tau=result.best, tuning_table={str(k): v for k, v in result.table.items()})
    return result.best


@common.register_method("latent_map")
def _latent_map(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    ctx.notes["k"] = "full"
    return Counted(LatentMAP(pretrained.load("tunable_vae_mri128"), max_iter=100), ctx.notes)


@common.register_method("latent_map_tv")
def _latent_map_tv(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    solver = LatentMAPTV(LatentMAP(pretrained.load("tunable_vae_f4_mri128"), max_iter=100))
    result = solver.tune(ctx.y_cal, ctx.physics, ctx.x_cal)
    ctx.notes.update(k="full", lambda_beta=list(result.best))
    return Counted(solver, ctx.notes)


@common.register_method("flash_diffusion")
def _flash(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    ctx.notes["start"] = "snr"
    return Counted(FlashDiffusion.from_pretrained(seed=0), ctx.notes)


@common.register_method("pnp_hvae tuned")
def _pnp_hvae(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    hvae = pretrained.load("hvae_mri64")
    return Counted(PnPHVAE(hvae, tau=_tuned_tau(ctx, hvae)), ctx.notes)


class PosteriorMean(dinv.models.Reconstructor):
    """Mean of ``n`` PnP-HVAE Gibbs samples warm-started at the PnP-HVAE MAP (NFE counts both)."""

    def __init__(self, hvae, tau: float, notes: dict[str, Any], n: int = 8):
        super().__init__()
        self.map = Counted(PnPHVAE(hvae, tau=tau), notes)
        self.sampler = PosteriorSampler(PnPHVAESampler(hvae, tau=0.9, max_iter=5), n_samples=n, batch_size=n)
        self.notes, self.n = notes, n

    def forward(self, y, physics, **kwargs):
        outs = []
        for i in range(y.shape[0]):  # one slice at a time: a batch of n samples each
            x0 = self.map(y[i : i + 1], physics)
            outs.append(self.sampler.sample(y[i : i + 1], physics, x_init=x0).mean)
            self.notes["nfe_sum"] += self.n * 5
        return torch.cat(outs)


@common.register_method("pnp_hvae posterior mean")
def _pnp_hvae_mean(ctx: common.BenchContext) -> dinv.models.Reconstructor:
    hvae = pretrained.load("hvae_mri64")
    return PosteriorMean(hvae, _tuned_tau(ctx, hvae), ctx.notes)


def merged(record: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``previous``'s rows, with each row of ``record`` replacing the row of the same (method,
    task, dataset), or inserted after the last row of its (task, dataset)."""
    rows = list(previous["rows"])
    for row in record["rows"]:
        same = [i for i, r in enumerate(rows) if (r["task"], r["dataset"]) == (row["task"], row["dataset"])]
        match = [i for i in same if rows[i]["method"] == row["method"]]
        if match:
            rows[match[0]] = row
        else:
            rows.insert(same[-1] + 1 if same else len(rows), row)
    return {**previous, "rows": rows, "merged": previous.get("merged", []) + [record["command"]]}


def _nfe(row: dict[str, Any]) -> str:
    n = row["notes"].get("nfe_slices")
    return f"{row['notes']['nfe_sum'] / n:.0f}" if n else "–"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cells(r: dict[str, Any]) -> list[str]:
    notes = r["notes"]
    note = (
        common._notes_text(notes)
        or (f"(tau={notes['tau']:g})" if "tau" in notes else "")
        or ("(lambda={:g}, beta={:g})".format(*notes["lambda_beta"]) if "lambda_beta" in notes else "")
    )
    return [
        f"{r['method']} {note}".strip(),
        r["task"],
        r["data"],
        f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}",
        f"{r['ssim']['mean']:.3f} ± {r['ssim']['std']:.3f}",
        f"{r['nmse']['mean']:.4f}",
        _fmt(r["seconds_per_slice"], 2),
        _nfe(r),
        _fmt(r.get("rss_increase_mib"), 0),
    ]


HEADER = ["method", "task", "data", "PSNR (dB)", "SSIM", "NMSE", "s/slice", "NFE/slice", "memory (MiB)"]


def markdown(record: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 6) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in record["rows"]]
    return "\n".join(lines)


def rst(record: dict[str, Any]) -> str:
    return common.rst_table(HEADER, [_cells(r) for r in record["rows"]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", choices=list(common.TASKS), default=list(TASKS))
    parser.add_argument(
        "--data", nargs="+", choices=list(common.PRIOR_EVAL_DATASETS), default=list(common.PRIOR_EVAL_DATASETS)
    )
    parser.add_argument("--methods", nargs="+", choices=list(common.METHODS), default=list(common.METHODS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add these rows to the existing table (same slices) instead of replacing it",
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "table.json"))


def run(cli: argparse.Namespace) -> int:
    args = argparse.Namespace(
        tasks=cli.tasks,
        data=cli.data,
        methods=cli.methods,
        device="cpu",
        out=cli.out,
        quick=cli.quick,
        n_iter=None,
        grid=None,
        batch_size=8,
        threads=2,
        seed=0,
        no_progress=False,
    )
    previous = json.loads(Path(cli.out).read_text()) if cli.merge else None
    record = common.run(args, specs=common.PRIOR_EVAL_DATASETS)
    if previous is not None:
        record = merged(record, previous)
        write_json_atomic(cli.out, record)
    table = markdown(record)
    print(table)
    write_text_atomic(Path(cli.out).with_suffix(".md"), table + "\n")
    write_text_atomic(Path(cli.out).with_suffix(".rst"), rst(record) + "\n")
    return 0
