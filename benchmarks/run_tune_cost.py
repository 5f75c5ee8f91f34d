r"""What an automatic parameter costs, per 128 x 128 slice, against one solve with a fixed value.

For each solver and task: one slice of a *training* subject (the figure is about time, not
quality, so no reserved subject is touched), its simulated measurements, then

* **one solve**: the solver with the parameter fixed at the value the automatic choice picked
  (same iterations, same start), the fastest of ``--repeats`` runs;
* **auto**: the solver with ``"auto"``, choice and final estimate included, the fastest of
  ``--repeats`` runs.

The ratio is the issue's cost target (at most 5). Run it alone on the machine: a second job on
the same cores distorts both timings. Writes ``results/benchmarks/tune_cost.json``; the table shown in
``docs/autotune.rst`` is generated from ``benchmarks/results/tune_cost_results.json`` by
``python -m benchmarks tables``.

Usage::

    python -m benchmarks tune_cost --out benchmarks/results/tune_cost_results.json   # about 15 minutes, 1 thread
    python -m benchmarks tune_cost --solvers tv --repeats 3
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.utils.atomic import write_json_atomic

from . import common
from .reserved_data import load_subject
from .run_autotune import _solvers
from .tasks import RESERVED_TASKS as TASKS

ROOT = Path(__file__).resolve().parents[1]
#: a training subject per modality (``run_reserved.load_subject`` reads the training split for these)
SUBJECT_OF = {"mri4x": "pyradiomics_brain1", "mri8x": "pyradiomics_brain1", "deblur": "pyradiomics_brain1"}
SUBJECT_OF["ct60"] = "pyradiomics_lung1"
#: the single-parameter solvers of ``run_autotune.py`` (built by its ``_solvers``)
SOLVERS = ("tv", "pnp_hvae")


def _fastest(run, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def collect(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    warnings.simplefilter("ignore", RuntimeWarning)
    hvae = pretrained.load("hvae_mri64").eval() if "pnp_hvae" in args.solvers else None
    rows = []
    for task in args.tasks:
        x = load_subject(SUBJECT_OF[task], 0, 1, args.corpus).evaluation
        physics = build_physics(TASKS[task], tuple(x.shape[-2:]))
        y = physics(to_physics_domain(x, physics))
        for solver in args.solvers:
            build, build_auto, (param,), _ = _solvers(hvae, None)[solver]
            auto_seconds, auto = _fastest(lambda: build_auto("auto").reconstruct(y, physics), args.repeats)
            choice = auto.diagnostics().choices[param]
            one_seconds, _ = _fastest(lambda: build(choice["value"]).reconstruct(y, physics), args.repeats)
            row = {
                "task": task,
                "subject": SUBJECT_OF[task],
                "solver": solver,
                "rule": choice["rule"],
                "value": choice["value"],
                "n_solves": choice["n_solves"],
                "auto_seconds": auto_seconds,
                "one_solve_seconds": one_seconds,
                "cost_x": auto_seconds / one_seconds,
            }
            rows.append(row)
            print(
                f"{task:7s} {solver:9s} {row['rule']:12s} {row['n_solves']:3d} solves  auto {auto_seconds:7.1f} s  "
                f"one {one_seconds:6.1f} s  cost {row['cost_x']:.1f}x",
                flush=True,
            )
            write_json_atomic(ROOT / args.out, {"rows": rows, "args": vars(args)})
    return {"rows": rows}


def rst(rows) -> str:
    header = ["task", "solver", "rule", "solves", "auto (s)", "one solve (s)", "cost (x one solve)"]
    body = [
        [
            r["task"],
            r["solver"],
            r["rule"],
            str(r["n_solves"]),
            f"{r['auto_seconds']:.1f}",
            f"{r['one_solve_seconds']:.1f}",
            f"{r['cost_x']:.1f}",
        ]
        for r in rows
    ]
    return common.rst_table(header, body)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(SUBJECT_OF), choices=list(SUBJECT_OF))
    parser.add_argument("--solvers", nargs="+", default=["tv", "pnp_hvae"], choices=list(SOLVERS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--out", default="results/benchmarks/tune_cost.json")


def run(args: argparse.Namespace) -> int:
    rows = collect(args)["rows"]
    print(rst(rows))
    return 0 if rows else 1
