r"""Baseline table: classical reconstructions on the bundled brain volumes.

For every (dataset, task, method) the script simulates measurements of held-out evaluation
slices, reconstructs them, and reports PSNR / SSIM (mean +- std over slices), solver seconds per
slice and peak memory. It prints a Markdown table and writes the rows to a JSON file
(atomically, rewritten after each row so an interrupted run keeps what it finished).

Methods that need tuning (``tv_pgd tuned``) choose their parameter on calibration slices that
are disjoint from the evaluation slices; the choice is reported in the row.

The datasets, tasks, method registry, evaluation loop and table writers live in
``benchmarks/common.py`` (shared with the other benchmark scripts).

Usage::

    python -m benchmarks baselines                        # full table (tens of minutes on CPU)
    python -m benchmarks baselines --quick                # smoke run
    python -m benchmarks baselines --tasks mri4x --data mni152 itk --methods "tv_pgd tuned"

Not a test and not run in CI.
"""

from __future__ import annotations

import argparse

import torch

from .common import (
    DATASETS,
    METHODS,
    N_ITER,
    QUICK_COUNTS,
    QUICK_N_ITER,
    QUICK_TV_GRID,
    markdown_table,
    tuning_gap_table,
)
from .common import run as run_rows
from .tasks import BUNDLED_TASKS as TASKS


def _at_least(minimum: float, kind: type = int):
    """An argparse ``type``: ``kind`` values below ``minimum`` are usage errors."""

    def convert(text: str):
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="tasks to run (default: all)"
    )
    parser.add_argument(
        "--data",
        nargs="+",
        choices=list(DATASETS),
        default=list(DATASETS),
        help="datasets: " + ", ".join(f"{k} = {v.label}" for k, v in DATASETS.items()),
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        help="methods to run (default: all registered)",
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda if available, else cpu)",
    )
    parser.add_argument("--out", default="results/benchmarks/baselines.json", help="JSON output file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_COUNTS[0]} calibration / {QUICK_COUNTS[1]} evaluation slices, "
        f"{QUICK_N_ITER} iterations, TV grid {list(QUICK_TV_GRID)}",
    )
    parser.add_argument(
        "--n-iter", type=_at_least(1), default=None, help=f"solver iterations (default {N_ITER}, quick {QUICK_N_ITER})"
    )
    parser.add_argument(
        "--grid", type=_at_least(0, float), nargs="+", default=None, help="TV weights to tune over (default: log grid)"
    )
    parser.add_argument(
        "--batch-size", type=_at_least(1), default=8, help="evaluation slices per solver call (default 8)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on shared machines; 0 = torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global torch seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    record = run_rows(args)
    print(markdown_table(record))
    gap = tuning_gap_table(record)
    if gap:
        print("\nTV weight: package default vs tuned on calibration slices (evaluation PSNR)\n")
        print(gap)
    print(
        f"\n{len(record['rows'])} rows, device {record['device']} ({record['torch_threads']} thread(s)), "
        f"{record['n_iter']} iterations; wall time {record['wall_seconds']:.0f} s; written to {args.out}"
    )
    if not record["device"].startswith("cuda"):
        print(
            "peak memory: process-wide peak RSS (ru_maxrss) when the row finished; it never decreases, "
            "so it bounds, rather than measures, a row's own use."
        )
    return 0
