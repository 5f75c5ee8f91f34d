r"""Flash-Diffusion on held-out slices: severity audit, adaptive start versus fixed start steps,
full-length LDPS, and grid-tuned TV in the same run.

1. **Severity audit** (``severity_audit``): the shipped severity encoder's :math:`\hat\sigma^2` against
   MRI acceleration, Gaussian blur std and CT views, Spearman per kind, on held-out slices of the
   template and on a different real subject; the surprisingly easy / hard samples.
2. **Mixed-severity MRI test set**: every held-out slice gets its own acceleration (a per-example
   mask, one batch), noise 0.01. Methods, all through ``FlashDiffusion`` (they share every line
   but the start rule): the adaptive SNR-matched start, fixed start steps ``N`` (CCDF-L style),
   LDPS from noise over the whole schedule, the encoder's estimate decoded (no diffusion), the
   adaptive start with a tunable ``k``; and TV-PGD with lambda tuned by a grid on the same slices.
   Columns: PSNR, SSIM, mean NFE, seconds per slice; the NFE histogram of the adaptive start.
3. **Out of range**: accelerations outside the encoder's training range (1x, 16x, 24x): how many
   are flagged.

Writes ``results/benchmarks/flash.json`` (atomically, after every part), figures
``docs/figures/severity_audit_{dataset}.png`` and ``docs/figures/flash_nfe.png``, and prints Markdown.
Not a test; not run in CI.

Usage::

    python -m benchmarks flash             # both datasets, 8 slices each
    python -m benchmarks flash --quick     # 2 slices, fewer settings
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable.diffusion.severity import plot_severity_audit, severity_audit
from deepinv_tunable.physics import (
    batched_mri,
    from_physics_domain,
    measurement_estimate,
    to_physics_domain,
)
from deepinv_tunable.solvers import TVPGD, FlashDiffusion, MeasurementBaseline
from deepinv_tunable.solvers.flash import DEFAULT_SEVERITY_ENCODER
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import save_figure, write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import PRIOR_EVAL_DATASETS, load_dataset

SWEEP = {"mri": [2, 3, 4, 6, 8, 10, 12], "blur": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "ct": [180, 120, 90, 60, 40, 20]}
ACCELERATIONS = [2, 3, 4, 5, 6, 8, 10, 12]
FIXED_N = [2, 5, 10, 20, 35, 50]
TV_GRID = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
NOISE = 0.01


def magnitude(x: torch.Tensor, physics) -> torch.Tensor:
    return from_physics_domain(x, physics).real.clamp(0, 1)


def scores(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    m = image_metrics(x_hat, x)
    return {
        "psnr": float(np.mean(m["psnr"])),
        "ssim": float(np.mean(m["ssim"])),
        "psnr_per_slice": [float(v) for v in m["psnr"]],
    }


def mixed_case(x: torch.Tensor, accelerations: list[float], seed: int = 0):
    configs = [
        {"kind": "mri", "acceleration": a, "noise_sigma": NOISE, "seed": seed + i} for i, a in enumerate(accelerations)
    ]
    physics = batched_mri(configs, tuple(x.shape[-2:]))
    torch.manual_seed(seed)
    return physics, physics(to_physics_domain(x, physics))


def run_flash(solver: FlashDiffusion, y, physics, x, repeats: int, **kwargs) -> dict[str, Any]:
    """Mean over ``repeats`` seeds of the scores; NFE and time of the runs."""
    psnrs, ssims, times = [], [], []
    for r in range(repeats):
        out = solver.reconstruct(y, physics, seed=r, **kwargs)
        s = scores(magnitude(out.x, physics), x)
        psnrs.append(s["psnr"])
        ssims.append(s["ssim"])
        times.append(out.wall_time / len(x))
    return {
        "psnr": float(np.mean(psnrs)),
        "psnr_sd_over_seeds": float(np.std(psnrs)),
        "ssim": float(np.mean(ssims)),
        "nfe_mean": float(out.nfe.float().mean()),
        "nfe": out.nfe.tolist(),
        "seconds_per_slice": float(np.mean(times)),
        "start_step": out.start_step.tolist(),
        "sigma_hat": out.sigma_hat.tolist(),
        "out_of_range": out.out_of_range.tolist(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", default=list(PRIOR_EVAL_DATASETS), choices=list(PRIOR_EVAL_DATASETS))
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="seeds per stochastic method")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--audit-only", action="store_true")
    parser.add_argument(
        "--encoder",
        default=DEFAULT_SEVERITY_ENCODER,
        help="shipped severity encoder name or a save_pretrained folder (default %(default)s)",
    )
    parser.add_argument("--out", default="results/benchmarks/flash.json")
    parser.add_argument("--figures", default="docs/figures")


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    solver = FlashDiffusion.from_pretrained(args.encoder, max_iter=args.n_steps)
    record: dict[str, Any] = {
        "n_steps": args.n_steps,
        "noise_sigma": NOISE,
        "audit": {},
        "mixed": {},
        "out_of_range": {},
        "complete": False,
        "sigma2_range": solver.severity_encoder.config["sigma2_range"],
    }
    fixed_n = [n for n in FIXED_N if n <= args.n_steps] if not args.quick else [5, 20]
    for data_name in args.data:
        data = load_dataset(PRIOR_EVAL_DATASETS[data_name], args.quick)
        x = data.evaluation
        # 1. severity audit
        audit = severity_audit(solver.severity_encoder, x, SWEEP, noise_sigma=NOISE, reference=solver.vae)
        record["audit"][data_name] = {
            "spearman": audit.spearman,
            "truth_spearman": audit.truth_spearman,
            "estimate_vs_truth": audit.estimate_vs_truth,
            "rows": audit.rows,
            "easy": audit.easy[:5],
            "hard": audit.hard[:5],
        }
        plot_severity_audit(audit, Path(args.figures) / f"severity_audit_{data_name}.png")
        print(
            f"{data_name} severity audit: Spearman " + ", ".join(f"{k} {v:.3f}" for k, v in audit.spearman.items()),
            file=sys.stderr,
            flush=True,
        )
        write_json_atomic(args.out, record)
        if args.audit_only:
            continue
        # 2. mixed-severity MRI
        acc = [ACCELERATIONS[i % len(ACCELERATIONS)] for i in range(len(x))]
        physics, y = mixed_case(x, acc)
        rows: dict[str, Any] = {"accelerations": acc, "slices": data.evaluation_idx}
        rows["zero_filled"] = scores(magnitude(MeasurementBaseline()(y, physics), physics), x)
        tv = grid_search(lambda lam: magnitude(TVPGD(lambda_tv=lam)(y, physics), physics), x, TV_GRID)
        rows["tv_tuned_on_eval"] = {"lambda": tv.best, "psnr": tv.table[tv.best]}
        rows["flash"] = run_flash(solver, y, physics, x, args.repeats)
        print(
            f"{data_name} flash: {rows['flash']['psnr']:.2f} dB, NFE {rows['flash']['nfe_mean']:.1f}",
            file=sys.stderr,
            flush=True,
        )
        for c in (0.5, 1.5):
            rows[f"flash_c{c}"] = run_flash(
                FlashDiffusion(
                    solver.vae, solver.unet, solver.severity_encoder, max_iter=args.n_steps, noise_correction=c
                ),
                y,
                physics,
                x,
                args.repeats,
            )
        K = solver.vae.latent_dim
        for k in (K // 4, K // 2):
            rows[f"flash_k{k}"] = run_flash(solver, y, physics, x, args.repeats, k=k)
        rows["fixed"] = {}
        for n in fixed_n:
            rows["fixed"][str(n)] = run_flash(solver, y, physics, x, args.repeats, start=n)
            print(f"{data_name} fixed N={n}: {rows['fixed'][str(n)]['psnr']:.2f} dB", file=sys.stderr, flush=True)
        rows["ldps_from_noise"] = run_flash(solver, y, physics, x, 1, start="noise")
        with torch.no_grad():
            z_hat, _ = solver.severity_encoder(measurement_estimate(y, physics, fbp=True))
            rows["encoder_only"] = scores(solver.vae.decode(z_hat).clamp(0, 1), x)
        best_n = max(rows["fixed"], key=lambda n: rows["fixed"][n]["psnr"])
        rows["best_fixed_n"] = int(best_n)
        rows["acceptance"] = {
            "nfe_ratio": rows["flash"]["nfe_mean"] / int(best_n),
            "psnr_loss_db": rows["fixed"][best_n]["psnr"] - rows["flash"]["psnr"],
        }
        record["mixed"][data_name] = rows
        write_json_atomic(args.out, record)
        # 3. out of the trained range
        odd = [1, 16, 24, 1, 16, 24, 1, 16][: len(x)]
        physics_odd, y_odd = mixed_case(x, odd, seed=100)
        out = solver.reconstruct(y_odd, physics_odd, seed=0)
        record["out_of_range"][data_name] = {
            "accelerations": odd,
            "flagged": out.out_of_range.tolist(),
            "sigma_hat": out.sigma_hat.tolist(),
            "nfe": out.nfe.tolist(),
        }
        write_json_atomic(args.out, record)
    record["complete"] = True
    write_json_atomic(args.out, record)
    if record["mixed"]:
        plot_nfe(record, Path(args.figures) / "flash_nfe.png")
    print(markdown(record))
    return 0


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "| data | kind | Spearman(sigma_hat^2, severity) | Spearman(true latent error, severity) "
        "| Spearman(sigma_hat^2, true error) |",
        "|---|---|---:|---:|---:|",
    ]
    for data, a in record["audit"].items():
        lines += [
            f"| {data} | {k} | {v:.3f} | {a['truth_spearman'][k]:.3f} | {a['estimate_vs_truth'][k]:.3f} |"
            for k, v in a["spearman"].items()
        ]
    for data, r in record["mixed"].items():
        lines += [
            "",
            f"**{data}**, mixed accelerations {r['accelerations']}, noise {record['noise_sigma']}",
            "",
            "| method | PSNR | SSIM | mean NFE | s/slice |",
            "|---|---:|---:|---:|---:|",
            f"| zero-filled | {r['zero_filled']['psnr']:.2f} | {r['zero_filled']['ssim']:.3f} | 0 | |",
            f"| TV-PGD, lambda tuned on these slices ({r['tv_tuned_on_eval']['lambda']:g}) | "
            f"{r['tv_tuned_on_eval']['psnr']:.2f} | | | |",
            f"| encoder estimate decoded | {r['encoder_only']['psnr']:.2f} | {r['encoder_only']['ssim']:.3f} | 0 | |",
        ]
        named = [
            ("Flash (SNR start, c=1)", r["flash"]),
            ("Flash, c=0.5", r["flash_c0.5"]),
            ("Flash, c=1.5", r["flash_c1.5"]),
        ]
        named += [(f"Flash, k={key[7:]}", v) for key, v in r.items() if key.startswith("flash_k")]
        named += [(f"fixed start N={n}", v) for n, v in r["fixed"].items()]
        named += [("LDPS from noise", r["ldps_from_noise"])]
        for name, v in named:
            lines.append(
                f"| {name} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['nfe_mean']:.1f} | {v['seconds_per_slice']:.2f} |"
            )
        acc = r["acceptance"]
        lines.append(
            f"\nbest fixed N = {r['best_fixed_n']}; Flash NFE ratio {acc['nfe_ratio']:.2f}, "
            f"PSNR loss {acc['psnr_loss_db']:+.2f} dB"
        )
    for data, o in record["out_of_range"].items():
        lines.append(f"\nout of range ({data}): accelerations {o['accelerations']} flagged {o['flagged']}")
    return "\n".join(lines)


def plot_nfe(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for data, r in record["mixed"].items():
        axes[0].hist(r["flash"]["nfe"], bins=range(0, record["n_steps"] + 2, 2), alpha=0.6, label=data)
        axes[1].scatter(r["accelerations"], r["flash"]["nfe"], label=data)
    axes[0].set(xlabel="NFE per slice (adaptive start)", ylabel="slices", title="NFE histogram")
    axes[1].set(xlabel="MRI acceleration", ylabel="NFE", title="steps spent versus severity")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
