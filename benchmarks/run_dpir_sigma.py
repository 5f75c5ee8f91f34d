r"""DPIR's final denoiser level: the measurement noise std (``sigma="noise"``, one solve) against
the search from the measurements (``sigma="auto"``), on *training* subjects of the corpus (so the
default is not chosen on the reserved ones): 4 slices from the middle of each subject, resized to
128x128, one seeded measurement per row, the package's default pixel prior.

Writes ``results/benchmarks/dpir_sigma.json`` and prints a reST table (PSNR / SSIM of both,
seconds, the chosen level). Usage: ``python -m benchmarks dpir_sigma`` (about 10 minutes on one
thread); ``--rows 0 5`` runs some rows only.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from deepinv_tunable.data.corpus import load_corpus
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import DPIR
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "dpir_sigma.json"
#: (training subject, physics): the reserved tasks' kinds, plus 4x MRI at a lower and a higher noise
ROWS = (
    ("pyradiomics_brain1", {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}),
    ("dipy_aniso_vox", {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}),
    ("pyradiomics_brain1", {"kind": "mri", "acceleration": 8, "noise_sigma": 0.01}),
    ("pyradiomics_brain1", {"kind": "mri", "acceleration": 4, "noise_sigma": 0.003}),
    ("pyradiomics_brain1", {"kind": "mri", "acceleration": 4, "noise_sigma": 0.03}),
    ("dipy_aniso_vox", {"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}),
    ("nibabel_example4d", {"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}),
    ("pyradiomics_lung1", {"kind": "ct", "n_views": 60, "noise_sigma": 0.01}),
    ("pyradiomics_brain1", {"kind": "denoising", "noise_sigma": 0.05}),
)


def middle_slices(subject: str, n: int = 4, size: int = 128) -> torch.Tensor:
    """``n`` slices 3 apart around the middle of a corpus subject, resized to ``size``."""
    images = load_corpus(ROOT / "corpus", subjects=(subject,)).tensors()
    mid = len(images) // 2
    picked = images[mid - n // 2 * 3 : mid + n // 2 * 3 : 3][:n]
    resize = torch.nn.functional.interpolate
    return torch.cat([resize(i[None, None], size=(size, size), mode="bilinear", antialias=True) for i in picked])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, nargs="*", default=None, help="indices into ROWS (default: all)")


def run(args: argparse.Namespace) -> int:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    denoiser, results = None, []
    for i in args.rows if args.rows is not None else range(len(ROWS)):
        subject, cfg = ROWS[i]
        x = middle_slices(subject).clamp(0, 1)
        physics = build_physics(cfg, tuple(x.shape[-2:]))
        torch.manual_seed(0)
        y = physics(to_physics_domain(x, physics))
        row = {"subject": subject, "physics": cfg}
        for sigma in ("noise", "auto"):
            solver = DPIR(sigma=sigma, denoiser=denoiser)
            denoiser = solver.denoiser
            start = time.perf_counter()
            out = solver.reconstruct(y, physics)
            seconds = time.perf_counter() - start
            metrics = image_metrics(from_physics_domain(out.x, physics).clamp(0, 1), x)
            row[sigma] = {
                "psnr": sum(metrics["psnr"]) / len(x),
                "ssim": sum(metrics["ssim"]) / len(x),
                "seconds": seconds,
                "sigma": out.parameters["sigma"],
            }
        results.append(row)
        write_json_atomic(OUT, {"rows": results})
        print(row, flush=True)
    print(f"{'subject':20s} {'physics':34s} {'noise: PSNR / SSIM / s':>24s} {'auto: PSNR / SSIM / s (sigma)':>34s}")
    for row in results:
        a, b = row["noise"], row["auto"]
        task = ", ".join(f"{k}={v}" for k, v in row["physics"].items())
        print(
            f"{row['subject']:20s} {task:34s} {a['psnr']:8.2f} {a['ssim']:.4f} {a['seconds']:5.1f}"
            f" {b['psnr']:10.2f} {b['ssim']:.4f} {b['seconds']:5.1f} ({b['sigma']:.4f})"
        )
    return 0
