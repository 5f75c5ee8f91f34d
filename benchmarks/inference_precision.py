"""Inference precision: fp32 against bf16 autocast for each shipped network and each learned
solver at its defaults, on slices of a reserved subject (the numbers behind
:mod:`deepinv_tunable.utils.precision` and the solvers' ``precision=`` default).

Rows: seconds per call and PSNR of denoising at sigma 0.05 (the network alone), then DPIR (with
the default pixel prior and with the diffusion prior), PnP-HVAE and PixelFlash on MRI 4x (noise
0.01), each at ``precision="fp32"`` and ``"bf16"`` on the same measurements; the table shows the
speed-up and the PSNR change. Not a test; one CPU thread by default::

    python -m benchmarks inference_precision                 # about 15 minutes on one thread
    python -m benchmarks inference_precision --slices 2 --solvers dpir
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import replace

import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.priors import HVAEDenoiser, load_pixel_denoiser
from deepinv_tunable.priors.pixel_denoiser import DEFAULT_PIXEL_DENOISER, DIFFUSION_PIXEL_DENOISER
from deepinv_tunable.solvers import DPIR, PixelFlash, PnPHVAE
from deepinv_tunable.utils.metrics import image_metrics
from deepinv_tunable.utils.precision import network_precision

from . import common
from .tasks import TASKS

SOLVERS = ("denoise", "dpir", "pnp_hvae", "pixel_flash")
#: the reserved ITK head on the learned priors' grid (axial, 1.8 mm, 128x128): its central third,
#: slices 42-85 of 128 (the calibration range is unused here)
DATASET = replace(
    common.PRIOR_EVAL_DATASETS["itk_axial"],
    label="itk subject (axial), central third",
    calibration=common.SliceRange(0, 40, 1),
    evaluation=common.SliceRange(42, 85, 4),
)


def mean_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    m = image_metrics(x_hat.float().clamp(0, 1), x)
    return sum(m["psnr"]) / len(x), sum(m["ssim"]) / len(x)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def rows(x: torch.Tensor, solvers: tuple[str, ...]):
    """``(name, precision, seconds per slice, psnr, ssim)`` for every requested row."""
    n = len(x)
    if "denoise" in solvers:
        noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        nets = {
            DIFFUSION_PIXEL_DENOISER: load_pixel_denoiser(DIFFUSION_PIXEL_DENOISER),
            DEFAULT_PIXEL_DENOISER: load_pixel_denoiser(DEFAULT_PIXEL_DENOISER),
            "hvae_mri64": HVAEDenoiser(pretrained.load("hvae_mri64")),
        }
        for name, net in nets.items():
            for precision in ("fp32", "bf16"):
                with torch.no_grad(), network_precision(precision, "cpu"):
                    net(noisy[:1], 0.05)  # warm-up
                    out, seconds = timed(lambda: net(noisy, 0.05))
                yield (f"denoise {name}", precision, seconds / n, *mean_metrics(out, x))
    physics = build_physics({**TASKS["mri4x"], "seed": 0}, (128, 128))
    torch.manual_seed(0)
    y = physics(to_physics_domain(x, physics))
    builders = {}
    if "dpir" in solvers:
        builders["dpir (default prior)"] = lambda p: DPIR(precision=p)
        diffusion = load_pixel_denoiser(DIFFUSION_PIXEL_DENOISER)
        builders["dpir (diffusion prior)"] = lambda p: DPIR(denoiser=diffusion, precision=p)
    if "pnp_hvae" in solvers:
        hvae = pretrained.load("hvae_mri64")
        builders["pnp_hvae"] = lambda p: PnPHVAE(hvae, precision=p)
    if "pixel_flash" in solvers:
        diffusion = load_pixel_denoiser(DIFFUSION_PIXEL_DENOISER)
        builders["pixel_flash (diffusion prior)"] = lambda p: PixelFlash(diffusion, seed=0, precision=p)
    for name, build in builders.items():
        for precision in ("fp32", "bf16"):
            solver = build(precision)
            with torch.no_grad():
                out, seconds = timed(lambda: solver(y, physics))
            yield (name, precision, seconds / n, *mean_metrics(from_physics_domain(out, physics), x))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument("--threads", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    spec = replace(DATASET, evaluation=replace(DATASET.evaluation, count=args.slices))
    x = common.load_dataset(spec, quick=False).evaluation
    print("| row | precision | s/slice | speed-up | PSNR | SSIM | PSNR bf16 - fp32 |\n|---|---|---|---|---|---|---|")
    reference: dict[str, tuple[float, float]] = {}
    for name, precision, seconds, psnr, ssim in rows(x, tuple(args.solvers)):
        if precision == "fp32":
            reference[name] = (seconds, psnr)
            print(f"| {name} | fp32 | {seconds:.3f} | | {psnr:.3f} | {ssim:.4f} | |", flush=True)
        else:
            base_s, base_psnr = reference[name]
            print(
                f"| {name} | bf16 | {seconds:.3f} | {base_s / seconds:.2f}x | {psnr:.3f} | {ssim:.4f} | "
                f"{psnr - base_psnr:+.3f} |",
                flush=True,
            )
    return 0
