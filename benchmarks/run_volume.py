r"""Whole-volume reconstruction through the command line, as a user runs it.

The bundled MNI template is resampled to 1 mm and cropped/padded to 256x256 axial slices, which
gives 189 slices. The run is 4x MRI with TV-PGD (lambda 0.02, ``--n-iter`` iterations), with
``deepinv-tunable run --full-volume``, in fresh processes:

1. slices in batches of 16, then one slice at a time (``data.batch_size: 1``). Wall time and
   peak resident memory (``ru_maxrss`` of the child) of each run;
2. a batch-16 run killed with SIGKILL once a third of the slices are finished, then re-run with
   ``--resume``. Its volumes are compared bit for bit with those of the uninterrupted run.

Writes ``results/benchmarks/volume.json`` (atomically) and prints a Markdown table. Not a test;
not run in CI.

Usage::

    python -m benchmarks volume              # about 6 minutes on 2 cores
    python -m benchmarks volume --n-iter 100 # the demo's TV setting (slower)
    python -m benchmarks volume --solver pnp_hvae --slices 60 140 16 --out results/benchmarks/volume_pnp_hvae.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "volume.json"
CLI = Path(sys.executable).with_name("deepinv-tunable")


#: --solver -> the recipe's solver section (TV at a fixed weight; DPIR and PnP-HVAE at their defaults)
SOLVERS = {
    "tv_pgd": lambda n_iter: {"name": "tv_pgd", "params": {"lambda_tv": 0.02, "n_iter": n_iter}},
    "dpir": lambda n_iter: {"name": "dpir", "params": {}},
    "pnp_hvae": lambda n_iter: {"name": "pnp_hvae", "params": {}},
}


def recipe(out: Path, batch_size: int, n_iter: int, solver: str = "tv_pgd", slices: list | None = None) -> dict:
    """The study's recipe; ``slices`` (start, stop, count) evaluates those slices of the volume
    instead of all of them (the volume is loaded, prepared and written whole either way)."""
    data = {} if slices is None else {"slices": dict(zip(("start", "stop", "count"), slices))}
    return {
        "name": f"volume_mri4x_{solver}",
        "description": f"whole MNI volume at 1 mm, 256x256 axial slices, 4x MRI, {solver}",
        "data": {
            "input": "sample:mni152_t1",
            "plane": "axial",
            "spacing": 1.0,
            "size": [256, 256],
            "batch_size": batch_size,
            **data,
        },
        "physics": {
            "kind": "mri",
            "acceleration": 4,
            "center_fraction": 0.08,
            "mask": "gaussian",
            "noise_sigma": 0.01,
            "seed": 0,
        },
        "solver": SOLVERS[solver](n_iter),
        "output": {"dir": str(out), "figures": 2},
    }


def launch(path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(
        [str(CLI), "run", str(path), "--full-volume", "--quiet", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peak_rss_mb(path: Path, *extra: str, full_volume: bool = True) -> dict:
    """Run once in a child and read its peak RSS; ru_maxrss of RUSAGE_CHILDREN is the largest
    child so far, so each measurement runs in its own intermediate process."""
    code = (
        "import resource, subprocess, sys, time, os\n"
        f"start = time.perf_counter()\n"
        f"rc = subprocess.run({[str(CLI), 'run', str(path), *(['--full-volume'] * full_volume), '--quiet', *extra]!r}, "
        "env={**os.environ, 'OMP_NUM_THREADS': '2'}, capture_output=True).returncode\n"
        "print(rc, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    rc, seconds, rss = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if rc != "0":
        raise RuntimeError(f"run of {path} failed with exit code {rc}")
    return {"seconds": float(seconds), "peak_rss_mb": float(rss)}


def kill_and_resume(path: Path, out: Path, fraction: float = 1 / 3) -> dict:
    """SIGKILL a run once ``fraction`` of its slices are finished, then ``--resume`` it."""
    proc = launch(path)
    metrics = out / "metrics.json"
    finished = 0
    while proc.poll() is None:
        if metrics.is_file():
            record = json.loads(metrics.read_text())
            finished = len(record.get("slices", []))
            if finished >= fraction * record["n_evaluated"]:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
        time.sleep(0.2)
    killed_at = finished
    resumed = peak_rss_mb(path, "--resume")
    return {"killed_after_slices": killed_at, "resume_seconds": resumed["seconds"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-iter", type=int, default=10, help="TV-PGD iterations")
    parser.add_argument("--solver", choices=sorted(SOLVERS), default="tv_pgd")
    parser.add_argument(
        "--batched-only", action="store_true", help="only the batches-of-16 run (time and peak RSS), no resume check"
    )
    parser.add_argument(
        "--slices",
        type=int,
        nargs=3,
        metavar=("START", "STOP", "COUNT"),
        help="evaluate these slices only (a slow solver's memory on the whole volume's data; implies --batched-only)",
    )
    parser.add_argument("--out", default=str(OUT))


def run(args: argparse.Namespace) -> int:
    from deepinv_tunable.utils.atomic import write_json_atomic

    tmp = Path(tempfile.mkdtemp(prefix="volume_bench_"))
    rows, paths = {}, {}
    batched_only = args.batched_only or args.slices is not None
    runs = (("batched_16", 16),) if batched_only else (("batched_16", 16), ("per_slice", 1))
    for name, batch in (*runs, ("killed_then_resumed", 16)):
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(recipe(tmp / name, batch, args.n_iter, args.solver, args.slices)))
    for name, _ in runs:
        rows[name] = peak_rss_mb(paths[name], full_volume=args.slices is None)
        print(name, rows[name], flush=True)
    shape = nib.load(str(tmp / "batched_16" / "reconstruction.nii.gz")).shape
    record = {"volume_shape": list(shape), "solver": args.solver, "tv_iterations": args.n_iter, "rows": rows}
    record["evaluated_slices"] = "all" if args.slices is None else list(args.slices)
    if not batched_only:
        rows["killed_then_resumed"] = kill_and_resume(paths["killed_then_resumed"], tmp / "killed_then_resumed")
        identical = {}
        for vol in ("reconstruction", "baseline", "reference"):
            a = np.asarray(nib.load(str(tmp / "batched_16" / f"{vol}.nii.gz")).dataobj)
            b = np.asarray(nib.load(str(tmp / "killed_then_resumed" / f"{vol}.nii.gz")).dataobj)
            identical[vol] = bool(np.array_equal(a, b))
        rows["killed_then_resumed"]["identical_to_uninterrupted"] = identical
        record["batched_speedup"] = rows["per_slice"]["seconds"] / rows["batched_16"]["seconds"]
    record["cpu_threads"] = 2
    write_json_atomic(Path(args.out), record)
    print("| run | seconds | peak RSS (MB) |\n|---|---:|---:|")
    for name, _ in runs:
        print(f"| {name} | {rows[name]['seconds']:.1f} | {rows[name]['peak_rss_mb']:.0f} |")
    print(json.dumps(record, indent=1))
    return 0
