r"""Tunable latent prior on held-out slices: PSNR versus k, choosing k without ground truth,
and grid-tuned TV in the same run.

For each (dataset, task): LatentMAP with the shipped tunable VAE at every k of a grid
(the U-shape; the best k there is an *oracle*, labelled so), at the full K, and at the k chosen
per slice from the measurements alone (measurement splitting and the discrepancy principle);
TV-PGD with lambda tuned by a grid (a) on disjoint calibration slices and (b) on the evaluation
slices themselves (the generous baseline); the measurement-only baseline;
:class:`~deepinv_tunable.solvers.LatentMAPTV` (latent MAP at the full K plus a TV-regularised
deviation), its ``(lambda, beta)`` tuned by a grid on the calibration slices only. Also times
LatentMAP per slice and the cost of truncation (k < K versus k = K).

Writes ``results/benchmarks/tunable.json`` (atomically, after every row) and a PSNR-vs-k figure
(``--figure``), and prints Markdown tables. Not a test; not run in CI.

Usage::

    python -m benchmarks tunable                       # all tasks, both datasets
    python -m benchmarks tunable --quick               # 2 slices, 3 ks, few steps
    python -m benchmarks tunable --model tunable_vae_f4_mri128 --n-steps 100 --ks 256 1024 2048 3072 4096 \
        --out results/benchmarks/tunable_f4.json --figure docs/figures/psnr_vs_k_f4.png
    # tuning on held-out slices only (the template's calibration slices 60-100 were trained on):
    python -m benchmarks tunable --model tunable_vae_f4_mri128 --n-steps 100 --ks 4096 --data mni152 \
        --tasks mri4x --calibration 102 132 6 --out results/benchmarks/tunable_f4_heldout_cal.json --figure ""
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import from_physics_domain
from deepinv_tunable.solvers import LatentMAP, LatentMAPTV, MeasurementBaseline
from deepinv_tunable.solvers.latent_tv import DEFAULT_TUNING_GRID
from deepinv_tunable.tuning import select_k
from deepinv_tunable.utils.atomic import save_figure, write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import PRIOR_EVAL_DATASETS, SliceRange, task_cases
from .tasks import TUNABLE_TASKS

EVAL_DATASETS = PRIOR_EVAL_DATASETS
TASKS = TUNABLE_TASKS
#: default k grid, as fractions of the model's full latent size K (64 ... 2048 for K = 2048)
K_FRACTIONS = (1 / 32, 1 / 8, 1 / 4, 1 / 2, 1)
TV_GRID = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: (lambda, beta) grid of LatentMAPTV; beta = 0 is plain TV at every lambda of TV's own grid.
HYBRID_GRID = DEFAULT_TUNING_GRID + tuple((lam, 0.0) for lam in TV_GRID if lam > 0.05)


def psnr(x_hat_physics: torch.Tensor, x: torch.Tensor, physics) -> list[float]:
    return image_metrics(from_physics_domain(x_hat_physics, physics).cpu().clamp(0, 1), x)["psnr"]


def truncation_overhead(vae, rounds: int = 15) -> dict[str, float]:
    """Median seconds per decode (batch 8, no grad) with no truncation, with the mask at k = K
    and at k = K/4, timed in interleaved rounds so load changes hit all three alike."""
    z = torch.randn(8, *vae.latent_shape)
    cases = {"no mask": None, "k=K": vae.latent_dim, "k=K/4": vae.latent_dim // 4}
    times: dict[str, list[float]] = {label: [] for label in cases}
    with torch.no_grad():
        vae.decode(z)
        for _ in range(rounds):
            for label, k in cases.items():
                start = time.perf_counter()
                vae.decode(z, k)
                times[label].append(time.perf_counter() - start)
    out = {label: float(np.median(v)) for label, v in times.items()}
    out["overhead_percent"] = 100 * (out["k=K"] / out["no mask"] - 1)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tunable_vae_mri128")
    parser.add_argument("--data", nargs="+", default=list(EVAL_DATASETS), choices=list(EVAL_DATASETS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--ks", type=int, nargs="+", default=None, help="latent sizes (default: K/32, K/8, K/4, K/2, K)"
    )
    parser.add_argument("--n-steps", type=int, default=150)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-latent", action="store_true", help="baselines only (e.g. to re-tune TV)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument(
        "--calibration",
        type=int,
        nargs=3,
        metavar=("START", "STOP", "COUNT"),
        default=None,
        help="calibration slices of every selected dataset (default: the dataset's own)",
    )
    parser.add_argument("--out", default="results/benchmarks/tunable.json")
    parser.add_argument("--figure", default="docs/figures/psnr_vs_k.png")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = pretrained.load(args.model)
    ks = args.ks or [round(f * vae.latent_dim) for f in K_FRACTIONS]
    ks = ks if not args.quick else ks[:: max(1, len(ks) // 3)]
    n_steps = 20 if args.quick else args.n_steps
    record: dict[str, Any] = {
        "model": args.model,
        "latent_dim": vae.latent_dim,
        "ks": ks,
        "n_steps": n_steps,
        "rows": [],
        "truncation": truncation_overhead(vae),
        "complete": False,
    }
    specs = (
        EVAL_DATASETS
        if args.calibration is None
        else {
            name: dataclasses.replace(spec, calibration=SliceRange(*args.calibration))
            for name, spec in EVAL_DATASETS.items()
        }
    )
    for case in task_cases(specs, args.data, TASKS, args.tasks, TV_GRID, args.quick):
        data_name, task, physics, y, x_eval = case.data, case.task, case.physics, case.y, case.slices.evaluation
        row: dict[str, Any] = {"data": data_name, "task": task, "slices": case.slices.evaluation_idx}
        row["baseline_psnr"] = float(np.mean(psnr(MeasurementBaseline()(y, physics), x_eval, physics)))
        cal, same = case.tv_calibrated, case.tv_tuned_on_eval
        row["tv_calibrated"] = {
            "lambda": cal.best,
            "psnr": float(np.mean(image_metrics(case.tv(cal.best), x_eval)["psnr"])),
        }
        row["tv_tuned_on_eval"] = {"lambda": same.best, "psnr": same.table[same.best]}

        if args.no_latent:
            record["rows"].append(row)
            write_json_atomic(args.out, record)
            continue
        solver = LatentMAP(vae, max_iter=n_steps)
        fits = {k: solver.reconstruct(y, physics, k=k) for k in ks}
        per_k = {k: psnr(fit.x, x_eval, physics) for k, fit in fits.items()}
        seconds = {k: fit.wall_time / len(x_eval) for k, fit in fits.items()}
        row["psnr_vs_k"] = {str(k): float(np.mean(v)) for k, v in per_k.items()}
        row["seconds_per_slice"] = {str(k): s for k, s in seconds.items()}
        oracle_per_slice = np.max(np.array([per_k[k] for k in ks]), axis=0)
        best_k = max(ks, key=lambda k: np.mean(per_k[k]))
        row["oracle_k"] = {
            "k": best_k,
            "psnr": float(np.mean(per_k[best_k])),
            "per_slice_oracle_psnr": float(np.mean(oracle_per_slice)),
        }
        row["full_k_psnr"] = float(np.mean(per_k[max(ks)]))
        for rule in ("splitting", "discrepancy"):
            sel = select_k(solver, y, physics, ks, rule=rule, seed=0, fits=fits)
            row[f"auto_{rule}"] = {
                "k": sel.value.tolist(),
                "psnr": float(np.mean(psnr(sel.reconstruction.x, x_eval, physics))),
            }
        row["latent_map_tv"] = latent_map_tv(solver, case, n_grid=4 if args.quick else len(HYBRID_GRID))
        record["rows"].append(row)
        write_json_atomic(args.out, record)
        print(
            f"{data_name} {task}: "
            + ", ".join(f"k={k}: {row['psnr_vs_k'][str(k)]:.2f}" for k in ks)
            + f" | TV(cal) {row['tv_calibrated']['psnr']:.2f} TV(eval-tuned) {row['tv_tuned_on_eval']['psnr']:.2f}"
            + f" | auto split {row['auto_splitting']['psnr']:.2f} discr {row['auto_discrepancy']['psnr']:.2f}"
            + f" | LatentMAP+TV {row['latent_map_tv']['psnr']:.2f} {row['latent_map_tv']['params']}",
            file=sys.stderr,
            flush=True,
        )
    record["complete"] = True
    write_json_atomic(args.out, record)
    if args.no_latent:
        for r in record["rows"]:
            print(
                f"| {r['data']} | {r['task']} | baseline {r['baseline_psnr']:.2f} | TV cal. {r['tv_calibrated']['psnr']:.2f} "
                f"({r['tv_calibrated']['lambda']:g}) | TV eval-tuned {r['tv_tuned_on_eval']['psnr']:.2f} "
                f"({r['tv_tuned_on_eval']['lambda']:g}) |"
            )
        return 0
    print(markdown(record))
    if args.figure:
        plot(record, Path(args.figure))
    return 0


def latent_map_tv(solver: LatentMAP, case, n_grid: int) -> dict[str, Any]:
    """LatentMAPTV at the full K, ``(lambda, beta)`` tuned on the calibration slices
    (:meth:`~deepinv_tunable.solvers.LatentMAPTV.tune`), scored on the evaluation slices."""
    hybrid = LatentMAPTV(solver)
    grid = hybrid.tune(case.y_cal, case.physics, case.slices.calibration, HYBRID_GRID[:n_grid])
    fit = hybrid.reconstruct(case.y, case.physics)
    return {
        "params": {"lambda_tv": grid.best[0], "beta": grid.best[1]},
        "psnr": float(np.mean(psnr(fit.x, case.slices.evaluation, case.physics))),
        "calibration_table": {f"{k[0]:g},{k[1]:g}": v for k, v in grid.table.items()},
        "seconds_per_slice": fit.wall_time / len(case.slices.evaluation),
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "| data | task | baseline | TV (cal. lambda) | TV (lambda tuned on eval) | LatentMAP k=K | oracle k (PSNR) "
        "| auto k, splitting | auto k, discrepancy | LatentMAP+TV (lambda, beta) | s/slice (k=K) |",
        "|---|---|" + "---:|" * 9,
    ]
    for r in record["rows"]:
        K, p = str(max(record["ks"])), r["latent_map_tv"]["params"]
        lines.append(
            f"| {r['data']} | {r['task']} | {r['baseline_psnr']:.2f} | {r['tv_calibrated']['psnr']:.2f} "
            f"({r['tv_calibrated']['lambda']:g}) | {r['tv_tuned_on_eval']['psnr']:.2f} ({r['tv_tuned_on_eval']['lambda']:g}) "
            f"| {r['full_k_psnr']:.2f} | {r['oracle_k']['k']} ({r['oracle_k']['psnr']:.2f}) "
            f"| {r['auto_splitting']['psnr']:.2f} | {r['auto_discrepancy']['psnr']:.2f} "
            f"| {r['latent_map_tv']['psnr']:.2f} ({p['lambda_tv']:g}, {p['beta']:g}) | {r['seconds_per_slice'][K]:.2f} |"
        )
    t = record["truncation"]
    lines.append(
        f"\ntruncation: decode {t['no mask'] * 1e3:.1f} ms without the mask, {t['k=K'] * 1e3:.1f} ms with it "
        f"(k=K, {t['overhead_percent']:+.1f}%), {t['k=K/4'] * 1e3:.1f} ms at k=K/4 (median of interleaved rounds)"
    )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in record["rows"]:
        ks = [int(k) for k in r["psnr_vs_k"]]
        ax.plot(ks, list(r["psnr_vs_k"].values()), marker="o", label=f"{r['data']} {r['task']}")
    ax.set(xscale="log", xlabel="latent size k", ylabel="PSNR (dB)", title="LatentMAP on held-out slices")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
