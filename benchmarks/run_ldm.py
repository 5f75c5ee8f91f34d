r"""Tunable latent diffusion on held-out slices: the four data-consistency steps side by side.

For each task, ``TunableLDMSolver`` (shipped ``tunable_vae_mri128`` + the UNet trained by
``recipes/train_tunable_ldm.yaml``, DDIM, eta 0.1) with every data-consistency step of ``CONSISTENCY_STEPS`` (the scheduled local MAP with
DiffPIR's re-noising; Adam-DC (Algorithm 2), LDPS, PSLD and the DDS local MAP with DDIM), at the full k
and at a smaller k, against TV-PGD with lambda grid-tuned on the evaluation slices themselves
(generous) and the measurement-only baseline; PSNR/SSIM, seconds per slice and NFE, one run.
Writes ``results/benchmarks/ldm.json`` and prints a Markdown table. Not a test; not run in CI.

Usage::

    python -m benchmarks ldm                       # 4 held-out slices, 50 steps
    python -m benchmarks ldm --quick               # 2 slices, 5 steps
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.diffusion.consistency import CONSISTENCY_STEPS
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import TVPGD, MeasurementBaseline, TunableLDMSolver
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import DATASETS, SliceRange, load_dataset
from .tasks import LDM_TASKS

TASKS = LDM_TASKS
TV_GRID = (0.002, 0.005, 0.01, 0.02, 0.05)


def metrics(x_phys: torch.Tensor, x: torch.Tensor, physics) -> dict[str, float]:
    m = image_metrics(from_physics_domain(x_phys, physics).detach().cpu().real.clamp(0, 1), x)
    return {name: float(np.mean(v)) for name, v in m.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--ks", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--vae", default="tunable_vae_mri128", help="shipped name or save_pretrained folder")
    parser.add_argument(
        "--unet", default="results/train_tunable_ldm/model", help="shipped name or save_pretrained folder"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/benchmarks/ldm.json")


def run(args: argparse.Namespace) -> int:
    vae, unet = pretrained.load(args.vae), pretrained.load(args.unet)
    steps = 5 if args.quick else args.steps
    base = DATASETS["mni152"]
    n = 2 if args.quick else args.slices
    spec = replace(
        base, calibration=SliceRange(60, 100, 1), evaluation=SliceRange(base.evaluation.start, base.evaluation.stop, n)
    )
    data = load_dataset(spec, quick=False)
    x = data.evaluation
    record: dict[str, Any] = {"slices": data.evaluation_idx, "steps": steps, "rows": [], "complete": False}

    def add(row: dict[str, Any]) -> None:
        record["rows"].append(row)
        write_json_atomic(args.out, record)
        print(f"{row['task']} {row['method']} {row.get('k', '')}: PSNR {row['psnr']:.2f}", file=sys.stderr, flush=True)

    for task in args.tasks:
        physics = build_physics(TASKS[task], (128, 128))
        y = physics(to_physics_domain(x, physics))
        add({"task": task, "method": "baseline", **metrics(MeasurementBaseline()(y, physics), x, physics)})
        tv = grid_search(
            lambda lam: from_physics_domain(TVPGD(lambda_tv=lam)(y, physics), physics).clamp(0, 1),
            x,
            TV_GRID,
            param="lambda_tv",
        )
        add(
            {
                "task": task,
                "method": f"tv_pgd (lambda {tv.best:g}, tuned on these slices)",
                **metrics(TVPGD(lambda_tv=tv.best)(y, physics), x, physics),
            }
        )
        for name, cls in CONSISTENCY_STEPS.items():
            # DDIM (eta 0.1) for the latent steps as in the paper; DiffPIR's re-noising for the local MAP
            zeta = 1.0 if name == "local_map" else None
            solver = TunableLDMSolver(vae, unet, max_iter=steps, eta=0.1, consistency=cls(), zeta=zeta)
            for k in args.ks:
                out = solver.reconstruct(y, physics, k=k, seed=0)
                add(
                    {
                        "task": task,
                        "method": f"tunable_ldm + {name}",
                        "k": k,
                        "nfe": out.nfe,
                        "seconds_per_slice": out.wall_time / len(x),
                        **metrics(out.x, x, physics),
                    }
                )
    record["complete"] = True
    write_json_atomic(args.out, record)
    print("| task | method | k | PSNR | SSIM | NFE | s/slice |\n|---|---|---:|---:|---:|---:|---:|")
    for r in record["rows"]:
        print(
            f"| {r['task']} | {r['method']} | {r.get('k', '')} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{r.get('nfe', '')} | {r.get('seconds_per_slice', float('nan')):.1f} |"
        )
    return 0
