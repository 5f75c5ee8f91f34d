r"""PnP-HVAE on held-out slices against grid-tuned TV, with its convergence, speed and
contraction diagnostics, and deepinv's DPS timed in the same run.

Per (dataset, task): the measurement-only baseline; TV-PGD with lambda tuned by a grid on the
evaluation slices themselves (the generous baseline) and on disjoint calibration slices;
PnP-HVAE at the default temperature (tau from the noise level, no tuning) and at the tau picked
by a grid on the calibration slices. Then on 4x MRI: iterations to a relative residual < 1e-4,
seconds per 128x128 and 256x256 slice, and DPS (deepinv, 1000 steps) with a DRUNet of about the
HVAE's parameter count (random weights: only its cost is measured). Lipschitz ratios
(ALGORITHMS 3.5) for several tau and noise levels, and figures of the ratios and the residual
history.

Writes ``results/benchmarks/pnp_hvae.json`` (atomically, after every row) and prints Markdown.
Not a test; not run in CI.

Usage::

    python -m benchmarks pnp_hvae            # full run (about 15 minutes on 2 cores)
    python -m benchmarks pnp_hvae --quick    # 2 slices, small grids
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import deepinv as dinv
import numpy as np
import torch
import torch.nn.functional as F

from deepinv_tunable import pretrained
from deepinv_tunable.audit.lipschitz import lipschitz_ratios
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import MeasurementBaseline, PnPHVAE
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import save_figure, write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import PRIOR_EVAL_DATASETS, load_dataset, task_cases
from .tasks import PNP_HVAE_TASKS

EVAL_DATASETS = PRIOR_EVAL_DATASETS
TASKS = PNP_HVAE_TASKS  # "deblur" is the table's deblur1.5
TV_GRID = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
TAU_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def image(x_physics: torch.Tensor, physics) -> torch.Tensor:
    return from_physics_domain(x_physics, physics).real.clamp(0, 1)


def mean_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in image_metrics(x_hat, x).items()}


def quality_rows(hvae, args):
    for case in task_cases(EVAL_DATASETS, args.data, TASKS, args.tasks, args.tv_grid, args.quick):
        physics, y, y_cal = case.physics, case.y, case.y_cal
        x_cal, x_eval = case.slices.calibration, case.slices.evaluation
        data_name, task, same, cal = case.data, case.task, case.tv_tuned_on_eval, case.tv_calibrated
        row: dict[str, Any] = {"data": data_name, "task": task, "slices": case.slices.evaluation_idx}
        row["baseline"] = mean_metrics(image(MeasurementBaseline()(y, physics), physics), x_eval)
        row["tv_tuned_on_eval"] = {"lambda": same.best, **mean_metrics(case.tv(same.best), x_eval)}
        row["tv_calibrated"] = {"lambda": cal.best, **mean_metrics(case.tv(cal.best), x_eval)}

        def pnp(tau, y_=y):
            return PnPHVAE(hvae, tau=tau, max_iter=args.max_iter).reconstruct(y_, physics)

        default = pnp(None)
        row["pnp_default_tau"] = {
            "tau": default.parameters["tau"],
            "iterations": default.n_iter,
            "seconds_per_slice": default.wall_time / len(x_eval),
            **mean_metrics(image(default.x, physics), x_eval),
        }
        tau_cal = grid_search(lambda t: image(pnp(t, y_cal).x, physics), x_cal, args.tau_grid, param="tau")
        tuned = pnp(tau_cal.best)
        row["pnp_calibrated_tau"] = {
            "tau": tau_cal.best,
            "iterations": tuned.n_iter,
            **mean_metrics(image(tuned.x, physics), x_eval),
        }
        print(
            f"{data_name} {task}: baseline {row['baseline']['psnr']:.2f} | TV eval-tuned "
            f"{row['tv_tuned_on_eval']['psnr']:.2f} (lambda {same.best:g}) | PnP-HVAE default tau "
            f"{row['pnp_default_tau']['psnr']:.2f} (tau {default.parameters['tau']:.2f}), cal. tau "
            f"{row['pnp_calibrated_tau']['psnr']:.2f} (tau {tau_cal.best:g})",
            file=sys.stderr,
            flush=True,
        )
        yield row


def convergence_and_speed(hvae, x: torch.Tensor, quick: bool, tau: float | None) -> dict[str, Any]:
    """Residual history on 4x MRI (max_iter 100, tol 1e-4), seconds per slice at 128 and 256,
    and DPS at 1000 steps with a DRUNet of similar size, one slice each, same process; PnP-HVAE
    at temperature ``tau`` (None: the noise-level default)."""
    out: dict[str, Any] = {"tau": tau}
    physics = build_physics(TASKS["mri4x"], tuple(x.shape[-2:]))
    y = physics(to_physics_domain(x, physics))
    rec = PnPHVAE(hvae, tau=tau, max_iter=100, tol=1e-4).reconstruct(y, physics)
    out["mri4x_convergence"] = {
        "iterations": rec.n_iter,
        "converged": rec.converged,
        "final_residual": rec.extras["residuals"][-1],
        "residuals": rec.extras["residuals"],
    }
    for size in (128, 256):
        xs = F.interpolate(x[:1], size=(size, size), mode="bilinear", align_corners=False)
        ph = build_physics(TASKS["mri4x"], (size, size))
        ys = ph(to_physics_domain(xs, ph))
        solver = PnPHVAE(hvae, tau=tau, max_iter=100, tol=1e-4)
        solver.reconstruct(ys, ph)  # warm-up
        r = solver.reconstruct(ys, ph)
        out[f"seconds_per_slice_{size}"] = r.wall_time
        out[f"iterations_{size}"] = r.n_iter
    n_hvae = sum(p.numel() for p in hvae.parameters())
    drunet = dinv.models.DRUNet(in_channels=2, out_channels=2, nc=(16, 32, 32, 48), nb=1, pretrained=None)
    steps = 100 if quick else 1000
    dps = dinv.sampling.DPS(drunet, num_steps=steps, dtype=torch.float32)
    start = time.perf_counter()
    dps(y[:1], physics)
    out["dps"] = {
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "denoiser_parameters": sum(p.numel() for p in drunet.parameters()),
        "hvae_parameters": n_hvae,
    }
    out["speedup_vs_dps"] = out["dps"]["seconds"] / out["seconds_per_slice_128"]
    return out


def lipschitz_table(hvae, x: torch.Tensor, quick: bool) -> dict[str, dict[str, list[float]]]:
    table: dict[str, dict[str, list[float]]] = {}
    for sigma in (0.0, 0.05, 0.1):
        table[f"{sigma:g}"] = {}
        for tau in (0.6, 0.8, 0.95, 1.0):
            gen = torch.Generator().manual_seed(0)
            r = lipschitz_ratios(hvae, x, tau=tau, sigma=sigma, n_pairs=8 if quick else 48, generator=gen)
            table[f"{sigma:g}"][f"{tau:g}"] = r.tolist()
    return table


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "| data | task | baseline | TV (lambda tuned on eval) | TV (cal. lambda) | PnP-HVAE default tau "
        "| PnP-HVAE cal. tau | iters | s/slice |",
        "|---|---|" + "---:|" * 7,
    ]
    for r in record["rows"]:
        d, c = r["pnp_default_tau"], r["pnp_calibrated_tau"]
        lines.append(
            f"| {r['data']} | {r['task']} | {r['baseline']['psnr']:.2f} | {r['tv_tuned_on_eval']['psnr']:.2f} "
            f"({r['tv_tuned_on_eval']['lambda']:g}) | {r['tv_calibrated']['psnr']:.2f} ({r['tv_calibrated']['lambda']:g}) "
            f"| {d['psnr']:.2f} (tau {d['tau']:.2f}) | {c['psnr']:.2f} (tau {c['tau']:g}) | {d['iterations']} "
            f"| {d['seconds_per_slice']:.2f} |"
        )
    s = record.get("speed")
    if s:
        lines.append(
            f"\n4x MRI, tau {s['tau'] or 'default'}: {s['mri4x_convergence']['iterations']} iterations to a relative residual "
            f"{s['mri4x_convergence']['final_residual']:.1e}; {s['seconds_per_slice_128']:.2f} s per 128x128 "
            f"slice, {s['seconds_per_slice_256']:.2f} s per 256x256 slice; DPS ({s['dps']['steps']} steps, "
            f"DRUNet {s['dps']['denoiser_parameters']} parameters vs HVAE {s['dps']['hvae_parameters']}): "
            f"{s['dps']['seconds']:.1f} s, {s['speedup_vs_dps']:.0f}x slower than PnP-HVAE"
        )
    lip = record.get("lipschitz")
    if lip:
        lines.append(
            "\n| noise sigma | "
            + " | ".join(f"tau {t}: max (median)" for t in next(iter(lip.values())))
            + " |\n|---|"
            + "---:|" * len(next(iter(lip.values())))
        )
        for sigma, per_tau in lip.items():
            lines.append(
                f"| {sigma} | " + " | ".join(f"{max(v):.3f} ({np.median(v):.3f})" for v in per_tau.values()) + " |"
            )
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lip = record["lipschitz"]
    fig, axes = plt.subplots(1, len(lip) + 1, figsize=(4 * (len(lip) + 1), 3.2))
    for ax, (sigma, per_tau) in zip(axes, lip.items()):
        for tau, ratios in per_tau.items():
            ax.hist(ratios, bins=20, alpha=0.6, label=f"tau {tau}")
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set(xlabel="||H(u)-H(v)|| / ||u-v||", title=f"noise sigma {sigma}")
        ax.legend(fontsize=7)
    res = record["speed"]["mri4x_convergence"]["residuals"]
    axes[-1].semilogy(range(1, len(res) + 1), res)
    axes[-1].axhline(1e-4, color="k", lw=0.8, ls="--")
    axes[-1].set(xlabel="iteration", ylabel="||x_k+1 - x_k|| / ||x_k||", title="PnP-HVAE, 4x MRI")
    fig.tight_layout()
    save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="hvae_mri64")
    parser.add_argument("--data", nargs="+", default=list(EVAL_DATASETS), choices=list(EVAL_DATASETS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--tau-grid", type=float, nargs="+", default=list(TAU_GRID))
    parser.add_argument("--tv-grid", type=float, nargs="+", default=list(TV_GRID))
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--speed-only", action="store_true", help="keep the quality rows of --out, redo the Lipschitz and speed parts"
    )
    parser.add_argument(
        "--speed-tau",
        default="calibrated",
        help="tau of the speed/convergence run: a number, 'default', or 'calibrated' "
        "(the tau calibrated for mni152 4x MRI in this run)",
    )
    parser.add_argument("--out", default="results/benchmarks/pnp_hvae.json")
    parser.add_argument("--figure", default="docs/figures/hvae_diagnostics.png")


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.tau_grid = [0.6, 0.8, 0.95]
        args.tv_grid = [0.002, 0.01, 0.05]
        args.max_iter = min(args.max_iter, 30)
    torch.manual_seed(0)
    hvae = pretrained.load(args.model)
    if args.speed_only:
        record = json.loads(Path(args.out).read_text())
    else:
        record = {"model": args.model, "rows": [], "complete": False}
        for row in quality_rows(hvae, args):
            record["rows"].append(row)
            write_json_atomic(args.out, record)
    held_out = load_dataset(EVAL_DATASETS["mni152"], args.quick).evaluation
    record["lipschitz"] = lipschitz_table(hvae, held_out, args.quick)
    write_json_atomic(args.out, record)
    if not args.skip_speed:
        if args.speed_tau == "default":
            tau = None
        elif args.speed_tau == "calibrated":
            cal = [r for r in record["rows"] if r["data"] == "mni152" and r["task"] == "mri4x"]
            tau = cal[0]["pnp_calibrated_tau"]["tau"] if cal else None
        else:
            tau = float(args.speed_tau)
        record["speed"] = convergence_and_speed(hvae, held_out[:2], args.quick, tau)
    record["complete"] = True
    write_json_atomic(args.out, record)
    print(markdown(record))
    if args.figure and "speed" in record:
        plot(record, Path(args.figure))
    return 0
