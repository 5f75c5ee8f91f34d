r"""The severity-adaptive start against the full schedule of the same sampler, paired and averaged
over sampler seeds: what :class:`~deepinv_tunable.solvers.PixelFlash` saves in network calls and
what it costs in PSNR, on the corpus' reserved MR subjects.

Both rows of ``run_reserved.py`` (``pixel_flash`` and ``pixel_flash fixed``) are single draws of a
stochastic sampler: one slice's PSNR moves by several tenths of a dB between seeds, more than the
0.3 dB the comparison is about. Here every evaluation slice is reconstructed by both starts with
the same ``S`` sampler seeds, on the measurements of ``run_reserved.py`` (same slices, same noise
generator), and the loss is

.. math::

    \Delta = \frac{1}{N}\sum_{n=1}^{N} \frac{1}{S}\sum_{s=1}^{S}
        \left(\mathrm{PSNR}^{\text{fixed}}_{n,s} - \mathrm{PSNR}^{\text{adaptive}}_{n,s}\right),

reported with its standard error over the ``N`` slices. The data weight :math:`\lambda` is picked
once per row on the reference slices with the full-schedule sampler (seed 0, grid of
``run_reserved.py``) and shared by both starts, so that the start is the only difference. NFE
ratio: mean network calls per slice of the adaptive start (its severity pilot included) over the
full schedule's.

Usage::

    python -m benchmarks flash_nfe --out benchmarks/results/flash_nfe_results.json
    python -m benchmarks tables --only flash_nfe_table.rst
    python -m benchmarks flash_nfe --subjects nibabel_example4d --quick   # a training-split subject
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable.physics import build_physics, from_physics_domain
from deepinv_tunable.priors import DnCNNDenoiser
from deepinv_tunable.priors.pixel_denoiser import CORPUS_DNCNN
from deepinv_tunable.solvers import PixelFlash
from deepinv_tunable.solvers.pixel_flash import NOISE_CORRECTION
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import METRICS

from . import common
from .reserved_data import SIZE, load_subject, measure
from .reserved_methods import DIFFPIR_ITER, DIFFPIR_LAMBDA_GRID
from .tasks import RESERVED_TASKS as TASKS
from .tasks import RESERVED_TASKS_OF as TASKS_OF

ROOT = Path(__file__).resolve().parents[1]
MR_SUBJECTS = ("itk_t1", "pyradiomics_brain2")


def compare_row(
    sampler: PixelFlash, physics, x: torch.Tensor, y: torch.Tensor, seeds: list[int], fixed: dict[str, Any] | None
) -> dict[str, Any]:
    """Per-slice PSNR and NFE of both starts for every seed, and the paired summary (``fixed``:
    the full schedule's entry of an earlier run on the same measurements, seeds and weight)."""
    out: dict[str, Any] = {"seeds": seeds}
    if fixed is not None:
        out["fixed"] = fixed
    for start in ("noise", "severity") if fixed is None else ("severity",):
        psnrs, nfes, fallbacks, seconds = [], [], 0, 0.0
        for seed in seeds:
            tic = time.perf_counter()
            rec = sampler.reconstruct(y, physics, seed=seed, start=start)
            seconds += time.perf_counter() - tic
            psnrs.append(METRICS["psnr"](from_physics_domain(rec.x, physics).clamp(0, 1).cpu(), x).numpy())
            nfes.append(rec.nfe.cpu().numpy().astype(float))
            fallbacks += int(torch.as_tensor(rec.fallback).sum())
        name = "fixed" if start == "noise" else "adaptive"
        out[name] = {
            "psnr": np.stack(psnrs).tolist(),  # (seeds, slices)
            "nfe": np.stack(nfes).tolist(),
            "mean_psnr": float(np.mean(psnrs)),
            "mean_nfe": float(np.mean(nfes)),
            "fallbacks": fallbacks,
            "seconds_per_slice": seconds / (len(seeds) * x.shape[0]),
        }
    loss = (np.asarray(out["fixed"]["psnr"]) - np.asarray(out["adaptive"]["psnr"])).mean(0)  # per slice
    out["loss_db"] = float(loss.mean())
    out["loss_se_db"] = float(loss.std(ddof=1) / np.sqrt(len(loss))) if len(loss) > 1 else float("nan")
    out["nfe_ratio"] = out["adaptive"]["mean_nfe"] / out["fixed"]["mean_nfe"]
    return out


def collect(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    n_cal, n_eval = (1, 2) if args.quick else (args.n_cal, args.n_eval)
    max_iter = 10 if args.quick else DIFFPIR_ITER
    seeds = list(range(2 if args.quick else args.sampler_seeds))
    denoiser = DnCNNDenoiser.from_pretrained(CORPUS_DNCNN)
    reused: dict[tuple[str, str], dict[str, Any]] = {}
    for path in args.baseline_from or ():  # the full schedule does not depend on the start rule
        reused.update(
            {(r["subject"], r["task"]): r for r in json.loads(Path(path).read_text(encoding="utf-8"))["rows"]}
        )
    record: dict[str, Any] = {
        "command": sys.argv,
        "quick": args.quick,
        "max_iter": max_iter,
        "lambda_grid": list(DIFFPIR_LAMBDA_GRID),
        "noise_correction": args.noise_correction if args.noise_correction is not None else NOISE_CORRECTION,
        "rows": [],
        "complete": False,
    }
    for name in args.subjects:
        subject = load_subject(name, n_cal, n_eval, args.corpus)
        for task in [t for t in TASKS_OF[subject.modality] if t in args.tasks]:
            physics = build_physics(TASKS[task], (SIZE, SIZE))
            y_cal, y = measure(subject, physics, args.seed)

            def sampler(lam: float) -> PixelFlash:
                return PixelFlash(denoiser, max_iter=max_iter, lambda_=lam, noise_correction=args.noise_correction)

            earlier = reused.get((name, task))
            if earlier is not None and (earlier["slices"] != subject.evaluation_idx or earlier["seeds"] != seeds):
                raise ValueError(f"{name} {task}: --baseline-from holds other slices or seeds than this run")
            with warnings.catch_warnings():  # the schedule's first levels lie above the denoisers' range
                warnings.simplefilter("ignore", RuntimeWarning)
                tuned = (
                    earlier["lambda_"]
                    if earlier is not None
                    else grid_search(
                        lambda lam: (
                            from_physics_domain(sampler(lam)(y_cal, physics, seed=0, start="noise"), physics)
                            .clamp(0, 1)
                            .cpu()
                        ),
                        subject.calibration,
                        DIFFPIR_LAMBDA_GRID,
                        param="lambda_",
                        progress=False,
                    ).best
                )
                row = compare_row(sampler(tuned), physics, subject.evaluation, y, seeds, earlier and earlier["fixed"])
            row.update({"subject": name, "task": task, "lambda_": tuned, "slices": subject.evaluation_idx})
            row["noise_correction"] = record["noise_correction"]
            common.save_row(
                record,
                row,
                args.out,
                f"{name} {task}: fixed {row['fixed']['mean_psnr']:.2f} dB, adaptive "
                f"{row['adaptive']['mean_psnr']:.2f} dB, loss {row['loss_db']:.2f} ± {row['loss_se_db']:.2f}, "
                f"NFE ratio {row['nfe_ratio']:.2f}",
            )
    return common.finish(record, args.out)


def _start_constant(row: dict[str, Any]) -> str:
    c = row.get("noise_correction")
    if isinstance(c, dict):  # the per-rule default: MRI reads the spectrum, deblurring the pilot
        c = c["spectrum" if row["task"].startswith("mri") else "pilot"]
    return "?" if c is None else f"{c:g}"


def rst(record: dict[str, Any]) -> str:
    header = ["subject", "task", "c", "lambda", "fixed (dB)", "adaptive (dB)", "loss (dB, ± SE)", "NFE", "NFE ratio"]
    rows = [
        [
            r["subject"],
            r["task"],
            _start_constant(r),
            f"{r['lambda_']:g}",
            f"{r['fixed']['mean_psnr']:.2f}",
            f"{r['adaptive']['mean_psnr']:.2f}",
            f"{r['loss_db']:.2f} ± {r['loss_se_db']:.2f}",
            f"{r['adaptive']['mean_nfe']:.1f} / {r['fixed']['mean_nfe']:.0f}",
            f"{r['nfe_ratio']:.2f}",
        ]
        for r in record["rows"]
    ]
    return common.rst_table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", nargs="+", default=list(MR_SUBJECTS), help="MR subjects of the corpus")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS_OF["mr"]), default=list(TASKS_OF["mr"]))
    parser.add_argument("--n-cal", type=int, default=2, help="reference slices per subject (default 2)")
    parser.add_argument("--n-eval", type=int, default=4, help="evaluation slices per subject (default 4)")
    parser.add_argument(
        "--noise-correction",
        type=float,
        default=None,
        help="start constant c (default: PixelFlash's, per severity rule)",
    )
    parser.add_argument("--sampler-seeds", type=int, default=3, help="sampler seeds per slice (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 + 2 slices, 10-step schedule, 2 seeds")
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="measurement noise seed (run_reserved.py's)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "flash_nfe.json"))
    parser.add_argument(
        "--baseline-from",
        nargs="+",
        default=None,
        metavar="JSON",
        help="take each row's weight and full-schedule results from these earlier runs (same slices and seeds)",
    )
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON", help="do not run: merge these files")


def run(args: argparse.Namespace) -> int:
    if args.combine:
        parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.combine]
        rows = {}  # a later file's row replaces an earlier one of the same subject and task
        for part in parts:
            for r in part["rows"]:
                r.setdefault("noise_correction", part.get("noise_correction"))
                rows[(r["subject"], r["task"])] = r
        order = {t: i for i, t in enumerate(TASKS_OF["mr"])}
        record = {
            "combined": args.combine,
            "rows": [rows[k] for k in sorted(rows, key=lambda k: (k[0], order[k[1]]))],
            "complete": all(p.get("complete", False) for p in parts),
        }
        write_json_atomic(args.out, record)
    else:
        record = collect(args)
    print(rst(record))
    return 0
