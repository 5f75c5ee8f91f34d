r"""What every benchmark script shares, so that each states only what it measures, and the run
loop of the method x task tables (``baselines``, ``table``). The pieces live in their own modules
and are importable from here as before:

* :mod:`benchmarks.tasks`: the one table of tasks and their physics (``TASKS`` here is the
  bundled-volume studies' selection, :data:`benchmarks.tasks.BUNDLED_TASKS`);
* :mod:`benchmarks.datasets`: the bundled datasets and their calibration / evaluation slices;
* :mod:`benchmarks.methods`: the method registry with the classical baselines
  (``pseudo_inverse``, ``tv_pgd default``, ``tv_pgd tuned``);
* :mod:`benchmarks.evaluation`: timing and memory, the evaluation loop, writing the rows;
* :mod:`benchmarks.tables`: the table writers.

Adding a method: register a builder in :data:`METHODS` (see :func:`register_method`). A builder
receives a :class:`BenchContext` (physics, task config, calibration data, iteration budget)
and returns a deepinv ``Reconstructor``; anything worth reporting (a chosen parameter) goes in
``ctx.notes``. Nothing else needs to change.

Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

import deepinv as dinv
import torch

from deepinv_tunable import __version__
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import DEFAULT_TV_LAMBDA

from .datasets import (
    DATASETS,
    PRIOR_EVAL_DATASETS,
    QUICK_COUNTS,
    DatasetSpec,
    SliceRange,
    SliceSet,
    TaskCase,
    load_dataset,
    task_cases,
)
from .evaluation import (
    PeakRSS,
    evaluate,
    finish,
    memory_kind,
    peak_memory_mib,
    reset_peak_memory,
    save_row,
)
from .methods import (
    METHODS,
    N_ITER,
    QUICK_N_ITER,
    QUICK_TV_GRID,
    TV_GRID,
    BenchContext,
    MethodBuilder,
    register_method,
)
from .tables import _notes_text, markdown_table, rst_table, tuning_gap_table
from .tasks import BUNDLED_TASKS as TASKS

__all__ = [
    "DATASETS",
    "METHODS",
    "N_ITER",
    "PRIOR_EVAL_DATASETS",
    "QUICK_COUNTS",
    "QUICK_N_ITER",
    "QUICK_TV_GRID",
    "TASKS",
    "TV_GRID",
    "BenchContext",
    "DatasetSpec",
    "MethodBuilder",
    "PeakRSS",
    "SliceRange",
    "SliceSet",
    "TaskCase",
    "evaluate",
    "finish",
    "load_dataset",
    "markdown_table",
    "memory_kind",
    "peak_memory_mib",
    "register_method",
    "reset_peak_memory",
    "rst_table",
    "run",
    "save_row",
    "task_cases",
    "tuning_gap_table",
]


def run(args: argparse.Namespace, specs: dict[str, DatasetSpec] | None = None) -> dict[str, Any]:
    """Every (dataset, task, method) row; ``specs`` are the datasets (default :data:`DATASETS`)."""
    specs = DATASETS if specs is None else specs
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # power iterations (step sizes) draw random vectors
    n_iter = args.n_iter or (QUICK_N_ITER if args.quick else N_ITER)
    tv_grid = tuple(args.grid) if args.grid else (QUICK_TV_GRID if args.quick else TV_GRID)

    record: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "quick": args.quick,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "deepinv_tunable": __version__,
            "deepinv": dinv.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "n_iter": n_iter,
        "tv_grid": list(tv_grid),
        "default_tv_lambda": DEFAULT_TV_LAMBDA,
        "batch_size": args.batch_size,
        "peak_memory_kind": memory_kind(device),
        "datasets": {},
        "tasks": {t: TASKS[t] for t in args.tasks},
        "rows": [],
        "complete": False,
    }
    run_start = time.perf_counter()
    for data_name in args.data:
        spec = specs[data_name]
        data = load_dataset(spec, args.quick)
        record["datasets"][data_name] = {
            "label": spec.label,
            "sample": spec.sample,
            "plane": spec.plane,
            "spacing": spec.spacing,
            "size": list(data.evaluation.shape[-2:]),
            "calibration_slices": data.calibration_idx,
            "evaluation_slices": data.evaluation_idx,
            "percentiles": list(spec.percentiles),
        }
        img_size = tuple(data.evaluation.shape[-2:])
        for task in args.tasks:
            physics = build_physics(TASKS[task], img_size, device=device)
            # Measurements are simulated once per (dataset, task): every method sees the same y.
            y_cal = physics(to_physics_domain(data.calibration.to(device), physics))
            y_eval = physics(to_physics_domain(data.evaluation.to(device), physics))
            for method in args.methods:
                ctx = BenchContext(
                    task, TASKS[task], data_name, physics, device, data.calibration, y_cal, n_iter, tv_grid
                )
                solver = METHODS[method](ctx)
                result = evaluate(solver, ctx, data.evaluation, y_eval, args.batch_size)
                row = {
                    "method": method,
                    "task": task,
                    "data": spec.label,
                    "dataset": data_name,
                    **result,
                    "notes": ctx.notes,
                }
                record["wall_seconds"] = time.perf_counter() - run_start
                message = (
                    f"[{record['wall_seconds']:7.1f}s] {data_name} {task} {method}: "
                    f"PSNR {row['psnr']['mean']:.2f} dB {_notes_text(ctx.notes)}"
                )
                save_row(record, row, args.out, None if args.no_progress else message)
    record["wall_seconds"] = time.perf_counter() - run_start
    return finish(record, args.out)
