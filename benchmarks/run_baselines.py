#!/usr/bin/env python
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

    python benchmarks/run_baselines.py                        # full table (tens of minutes on CPU)
    python benchmarks/run_baselines.py --quick                # smoke run
    python benchmarks/run_baselines.py --tasks mri4x --data mni152 itk --methods "tv_pgd tuned"

Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    DATASETS,
    METHODS,
    N_ITER,
    QUICK_COUNTS,
    QUICK_N_ITER,
    QUICK_TV_GRID,
    TASKS,
    markdown_table,
    run,
    tuning_gap_table,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        "--n-iter", type=int, default=None, help=f"solver iterations (default {N_ITER}, quick {QUICK_N_ITER})"
    )
    parser.add_argument(
        "--grid", type=float, nargs="+", default=None, help="TV weights to tune over (default: log grid)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="evaluation slices per solver call (default 8)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable timings on shared machines; 0 = torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global torch seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no per-row progress lines on stderr")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.n_iter is not None and args.n_iter < 1:
        parser.error("--n-iter must be >= 1")
    if args.grid is not None and any(v < 0 for v in args.grid):
        parser.error("--grid values must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    record = run(args)
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


if __name__ == "__main__":
    sys.exit(main())
