r"""Does 2.5D consistency help? TV per slice against TV through a slab of consecutive slices.

4x MRI (1% noise) on consecutive axial slices, reconstructed in slabs of 16. Slice-by-slice
TV-PGD is compared with TV-PGD whose prior also penalises differences between neighbouring
slices (:class:`~deepinv_tunable.solvers.classical.SliceStackTVPrior`, deepinv's 3D TV on the
slab). Each method's weight is tuned by a grid on a disjoint calibration slab. The data are the
template's slab 104-119 (calibration 84-99) and the other subject's axial slices 62-77
(calibration 40-55).

Writes ``results/benchmarks/slab_tv.json`` and prints a Markdown table. Not a test; not run in CI.

Usage::

    python -m benchmarks slab_tv       # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import TVPGD
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import DATASETS, PRIOR_EVAL_DATASETS, DatasetSpec, SliceRange, load_dataset
from .tasks import TASKS

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "slab_tv.json"
GRID = (0.005, 0.01, 0.02, 0.05)
#: consecutive slices (count = stop - start): one calibration slab, one evaluation slab
SLABS: dict[str, DatasetSpec] = {
    "mni152": replace(DATASETS["mni152"], calibration=SliceRange(84, 100, 16), evaluation=SliceRange(104, 120, 16)),
    "itk_axial": DatasetSpec(
        **{
            **PRIOR_EVAL_DATASETS["itk_axial"].__dict__,
            "calibration": SliceRange(40, 56, 16),
            "evaluation": SliceRange(62, 78, 16),
        }
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(2)
    physics = build_physics(TASKS["mri4x"], (128, 128))
    record = {"task": TASKS["mri4x"], "grid": list(GRID), "rows": {}}
    print("| data | TV per slice (tuned) | TV through the slab (tuned) | gain |\n|---|---:|---:|---:|")
    for name, spec in SLABS.items():
        data = load_dataset(spec, quick=False)
        torch.manual_seed(0)
        y_cal = physics(to_physics_domain(data.calibration, physics))
        y_ev = physics(to_physics_domain(data.evaluation, physics))
        row = {}
        for method, through in (("per_slice", False), ("through_slices", True)):

            def estimate(lam: float, y: torch.Tensor, through: bool = through) -> torch.Tensor:
                x = TVPGD(lambda_tv=lam, through_slices=through)(y, physics)  # the whole slab in one batch
                return from_physics_domain(x, physics).clamp(0, 1)

            tuned = grid_search(lambda lam: estimate(lam, y_cal), data.calibration, GRID, param="lambda_tv")
            psnr = image_metrics(estimate(tuned.best, y_ev), data.evaluation)["psnr"]
            row[method] = {
                "lambda_tv": tuned.best,
                "psnr": float(np.mean(psnr)),
                "per_slice": psnr,
                "tuning": {str(k): v for k, v in tuned.table.items()},
            }
        record["rows"][name] = row
        write_json_atomic(OUT, record)
        a, b = row["per_slice"], row["through_slices"]
        print(
            f"| {spec.label} | {a['psnr']:.2f} (lambda {a['lambda_tv']:g}) | {b['psnr']:.2f} "
            f"(lambda {b['lambda_tv']:g}) | {b['psnr'] - a['psnr']:+.2f} |",
            flush=True,
        )
    return 0
