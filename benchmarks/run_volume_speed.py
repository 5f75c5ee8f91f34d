r"""Whole-volume cost against quality: one recipe run per configuration of a solver on the same
slices and measurements (``deepinv-tunable run`` as a user runs it): today's per-batch choice
from cold starts, the choice once per volume, warm starts along the volume with an early stop.

Reports per configuration the mean PSNR / SSIM, wall and solver seconds per slice, the
iterations of every batch (a warm start's first batch starts from the measurements), the network
passes per slice (tuning included: HVAE reconstructions or pixel-denoiser calls, a batch of B
slices counting B) and the cost per slice in units of one forward pass of the shipped HVAE
(wall seconds per slice over the seconds of one such pass per slice, measured in the same run: the
ratio the volume issue states its targets in, which holds across machines), and the network's
achieved GFLOP/s (passes x GFLOP per pass / wall seconds) beside the fp32 matrix-product rate of
the same thread (the attainable peak). Writes
``results/benchmarks/volume_speed.json``. Not a test; run it alone for clean timings.

Usage::

    python -m benchmarks volume_speed                                    # ITK head, TV, 24 slices
    python -m benchmarks volume_speed --input sample:mni152_t1 --slices 60 92 32
    python -m benchmarks volume_speed --solver dpir --input sample:mni152_t1 --slices 60 92 32
    python -m benchmarks volume_speed --solver pnp_hvae --slices 60 68 8 --batch-size 2
    python -m benchmarks volume_speed --solver pnp_hvae --configs volume_cold --sweep 10 20 30 50 100
    python -m benchmarks volume_speed --solver pnp_hvae --configs defaults --full-volume

``--sweep N ...`` then runs the solver at each iteration count, tolerance 0, with the parameter
the last configuration chose once for the volume held fixed, on the same slices, and reports the
fewest network passes per slice whose PSNR comes within ``--sweep-margin`` dB of the first
configuration's (the volume issue's "fewest passes that reach the same PSNR").

``--device cuda`` runs the recipes (and the HVAE-pass unit and the matrix-product peak) on the
GPU; run it at several ``--batch-size`` values for the batching speed-up.
``--full-volume`` reconstructs every slice of the volume (``deepinv-tunable run --full-volume``)
instead of ``--slices``. Each row also splits the wall time into the choice made once for the
volume, the solver (the per-batch choices included) and the rest (measurement simulation,
baseline, metrics, volumes and files), and lists every slice's PSNR, so that a full-volume row
can be compared with a row run on some of its slices.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "volume_speed.json"
WARM = {"auto_scope": "volume", "warm_start": True}
#: solver -> configuration name -> (solver params, solver section keys)
CONFIGS: dict[str, dict[str, tuple[dict, dict]]] = {
    "tv": {
        "per_batch_cold": (
            {"lambda_tv": "auto", "max_iter": 100},
            {"auto_scope": "batch"},
        ),  # the default until 2026-12-07
        "volume_cold": ({"lambda_tv": "auto", "max_iter": 100}, {"auto_scope": "volume"}),
        "volume_warm_100": ({"lambda_tv": "auto", "max_iter": 100, "tol": 3e-4}, WARM),
        "volume_warm_400": ({"lambda_tv": "auto", "max_iter": 400, "tol": 3e-4, "tune_iter": 100}, WARM),
    },
    "dpir": {
        "per_batch_auto": ({"sigma": "auto"}, {"auto_scope": "batch"}),  # the default until 2026-12-07
        "volume_auto": ({"sigma": "auto"}, {"auto_scope": "volume"}),
        "noise": ({"sigma": "noise"}, {}),  # the default since: the measurement noise std, one solve
    },
    "pnp_hvae": {
        "per_batch_cold": ({"tau": "auto", "max_iter": 100}, {"auto_scope": "batch"}),  # the default until 2026-12-07
        "volume_cold": ({"tau": "auto", "max_iter": 100}, {"auto_scope": "volume"}),
        "defaults": ({"tau": "auto"}, {}),  # since: once per volume, at most 50 iterations
        "volume_warm": ({"tau": "auto"}, WARM),
    },
    "pixel_flash": {
        "defaults": ({}, {}),  # severity-adaptive start, nothing chosen per batch
    },
}


def recipe(args: argparse.Namespace, params: dict, section: dict, out: Path) -> dict:
    base = yaml.safe_load((ROOT / "recipes" / "demo_mri_brain.yaml").read_text())
    start, stop, count = args.slices
    base["data"].update(
        {"input": args.input, "slices": {"start": start, "stop": stop, "count": count}, "batch_size": args.batch_size}
    )
    base["solver"] = {"name": "tv_pgd" if args.solver == "tv" else args.solver, "params": params, **section}
    base["output"] = {"dir": str(out), "figures": 0, "report": False}
    base["device"] = args.device
    return base


def sweep_params(solver: str, chosen: dict, n_iter: int) -> dict:
    """Solver parameters of one sweep point: the parameter ``chosen`` once for the volume, held
    fixed, and exactly ``n_iter`` iterations (no early stop; DPIR has none and runs at its
    default noise-std level)."""
    params = {**chosen, "max_iter": n_iter}
    if solver == "dpir":
        params.setdefault("sigma", "noise")
    else:
        params["tol"] = 0.0
    return params


def fewest_passes(rows: list[dict], margin: float) -> dict | None:
    """The sweep row with the fewest network passes per slice whose PSNR is within ``margin`` dB
    of the first row's (``None`` when no sweep point reaches it)."""
    target = rows[0]["psnr"] - margin
    reached = [r for r in rows if r["config"].startswith("sweep_") and r["psnr"] >= target]
    return min(reached, key=lambda r: r["network_passes_per_slice"], default=None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default="sample:itk_t1")
    parser.add_argument("--slices", type=int, nargs=3, default=(40, 100, 24), metavar=("START", "STOP", "COUNT"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--solver", choices=sorted(CONFIGS), default="tv")
    parser.add_argument("--configs", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--out", default=str(OUT), help="results JSON (default %(default)s)")
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="iteration counts of the passes sweep")
    parser.add_argument("--sweep-margin", type=float, default=0.1, help="PSNR margin of the sweep (dB)")
    parser.add_argument("--full-volume", action="store_true", help="every slice of the volume, not --slices")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where the recipes run (CPU: one thread)"
    )


def run(args: argparse.Namespace) -> int:
    from deepinv_tunable.recipes import parse_recipe, run_recipe
    from deepinv_tunable.utils.atomic import write_json_atomic

    from .evaluation import NetworkPasses, gemm_gflops, hvae_pass_seconds, network_pass_gflop

    warnings.simplefilter("ignore")
    if args.device == "cpu":
        torch.set_num_threads(1)
    unit = hvae_pass_seconds(batch=args.batch_size, device=args.device)
    gflop, peak = network_pass_gflop(args.solver), gemm_gflops(device=args.device)
    print(f"one HVAE forward pass: {unit:.3f} s per slice; fp32 matrix product {peak:.0f} GFLOP/s", flush=True)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="volume_speed_"))
    runs = [(name, *CONFIGS[args.solver][name], None) for name in args.configs or list(CONFIGS[args.solver])]
    for name, params, section, n_iter in runs + [(f"sweep_{n}", None, {}, n) for n in args.sweep]:
        if n_iter is not None:  # a sweep point: the volume's choice held fixed, exactly n_iter iterations
            params = sweep_params(args.solver, rows[len(runs) - 1]["chosen_once"], n_iter)
        start = time.perf_counter()
        with NetworkPasses() as passes:
            result = run_recipe(
                parse_recipe(recipe(args, params, section, tmp / name)), progress=False, full_volume=args.full_volume
            )
        wall = time.perf_counter() - start
        record = json.loads(result.metrics_path.read_text())
        n = len(record["slices"])
        once = record.get("auto_once", {})
        choice_seconds = sum(v.get("seconds", 0.0) for k, v in once.items() if k != "slices")
        solver_seconds = record["solver_seconds_per_slice"] * n
        rows.append(
            {
                "config": name,
                "psnr": record["mean"]["solver"]["psnr"],
                "ssim": record["mean"]["solver"]["ssim"],
                "wall_seconds_per_slice": wall / n,
                "solver_seconds_per_slice": record["solver_seconds_per_slice"],
                "network_passes_per_slice": passes.total / n,
                "cost_in_hvae_passes_per_slice": wall / n / unit,
                "achieved_gflops": None if gflop is None else passes.total * gflop / wall,
                "iterations_per_batch": [d.get("iterations") for d in record.get("diagnostics", [])],
                "chosen_once": {k: v["value"] for k, v in once.items() if k != "slices"},
                "seconds": {
                    "choice_once": choice_seconds,
                    "solver": solver_seconds,
                    "rest": wall - choice_seconds - solver_seconds,
                },
                "psnr_per_slice": dict(zip(map(str, record["slices"]), record["per_slice"]["solver"]["psnr"])),
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "psnr_per_slice"}), flush=True)
        summary = {"input": args.input, "solver": args.solver, "device": args.device, "batch_size": args.batch_size}
        summary["slices"] = "all" if args.full_volume else list(args.slices)
        machine = {"hvae_pass_seconds_per_slice": unit, "gflop_per_network_pass": gflop, "gemm_gflops": peak}
        write_json_atomic(args.out, {**summary, **machine, "rows": rows})
    print(
        f"{'configuration':18s} {'PSNR':>7s} {'SSIM':>7s} {'wall s/sl':>9s} {'solver s/sl':>11s}"
        f" {'passes/sl':>9s} {'HVAE-pass cost/sl':>17s} {'GFLOP/s':>8s}  iterations"
    )
    for row in rows:
        print(
            f"{row['config']:18s} {row['psnr']:7.3f} {row['ssim']:7.4f} {row['wall_seconds_per_slice']:9.2f}"
            f" {row['solver_seconds_per_slice']:11.2f} {row['network_passes_per_slice']:9.1f}"
            f" {row['cost_in_hvae_passes_per_slice']:17.1f} {row['achieved_gflops'] or float('nan'):8.1f}"
            f"  {row['iterations_per_batch']}"
        )
    if args.sweep:
        best = fewest_passes(rows, args.sweep_margin)
        first = rows[0]
        if best is None:
            print(f"no sweep point within {args.sweep_margin} dB of {first['config']} ({first['psnr']:.2f} dB)")
        else:
            ratio = first["network_passes_per_slice"] / max(best["network_passes_per_slice"], 1e-9)
            print(
                f"fewest passes within {args.sweep_margin} dB of {first['config']}: {best['config']}"
                f" ({best['network_passes_per_slice']:.1f} passes/slice, {best['psnr']:.2f} dB);"
                f" {first['config']} spends {ratio:.1f}x that"
            )
    return 0
