"""Training throughput on this CPU: fp32 vs bf16 autocast, each with and without channels-last
(and ``torch.compile`` where asked), for the pixel prior (``ConditionalDRUNet`` at three widths),
the HVAE and the tunable autoencoder, side by side in one run.

Each row times the model's own training loss (forward, backward, Adam step) on a fixed batch of
random patches, and reports patches/s, the step's GFLOP (counted by
``torch.utils.flop_counter``) and the achieved GFLOP/s against two roofs: a large GEMM of the same
dtype on the same threads, and a large 3x3 convolution (what oneDNN, which runs the models'
convolutions, reaches here: MKL's fp32 GEMM takes a slower path on AMD CPUs), and the nominal peak
(clock x FLOP per cycle, given on the command line; a shared virtual machine rarely sustains it).

    python -m benchmarks training_throughput --threads 1 --steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from deepinv_tunable.training.drunet import ConditionalDenoiserModule
from deepinv_tunable.training.hvae import HVAEModule
from deepinv_tunable.training.presets import PRESETS
from deepinv_tunable.training.vae import TunableVAEModule

DRUNET_WIDTHS = {"drunet-s": [16, 32, 64, 128], "drunet-m": [32, 64, 128, 256], "drunet-l": [64, 128, 256, 512]}


def build(name: str, patch: int, channels_last: bool):
    """``(module, loss(x), parameters)`` of a model by name."""
    if name.startswith("drunet"):
        module = ConditionalDenoiserModule(drunet={"nc": DRUNET_WIDTHS[name], "nb": 2}, channels_last=channels_last)
        return module, module.loss, module.net.parameters()
    if name == "hvae":
        kwargs = PRESETS["hvae"]["cpu-small"]["module"]
        module = HVAEModule(**{**kwargs, "hvae": {**kwargs["hvae"], "image_size": [patch, patch]}})
        if channels_last:
            module.to(memory_format=torch.channels_last)
        return module, lambda x: module.loss(x)[0], module.hvae.parameters()
    if name == "tunable_vae":
        kwargs = PRESETS["tunable_vae"]["cpu-small"]["module"]
        module = TunableVAEModule(**{**kwargs, "vae": {**kwargs["vae"], "image_size": [patch, patch]}})
        if channels_last:
            module.to(memory_format=torch.channels_last)

        def vae_loss(x):
            module.log = lambda *a, **k: None  # training_step logs; no trainer here
            return module.training_step(x, 0)

        return module, vae_loss, module.vae.parameters()
    raise ValueError(f"unknown model {name!r}")


def time_steps(step: Callable[[], None], steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def gemm_roof(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matrix product in ``dtype`` on the current threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    seconds = time_steps(lambda: a @ b, reps)
    return 2 * n**3 / seconds / 1e9


def conv_roof(dtype: torch.dtype, channels: int = 256, size: int = 64, reps: int = 5) -> float:
    """GFLOP/s of a ``channels -> channels`` 3x3 convolution on a ``(8, channels, size, size)``
    channels-last batch in ``dtype`` on the current threads (forward only)."""
    x = torch.randn(8, channels, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    seconds = time_steps(lambda: torch.nn.functional.conv2d(x, w, padding=1), reps)
    return 2 * 9 * channels**2 * size**2 * 8 / seconds / 1e9


def row(name: str, precision: str, channels_last: bool, compiled: bool, batch: int, patch: int, steps: int) -> dict:
    torch.manual_seed(0)
    module, loss_fn, params = build(name, patch, channels_last)
    module.train()
    optimizer = torch.optim.Adam(list(params), lr=1e-4)
    x = torch.rand(batch, 1, patch, patch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(loss_fn) if compiled else loss_fn
    bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fn(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(x)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    seconds = time_steps(step, steps)
    gflop = counter.get_total_flops() / 1e9
    return {
        "model": name,
        "precision": precision,
        "channels_last": channels_last,
        "compiled": compiled,
        "patches_per_s": batch / seconds,
        "gflop_per_step": gflop,
        "gflops": gflop / seconds,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["drunet-s", "drunet-m", "drunet-l", "hvae", "tunable_vae"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd losses (minutes to compile)")
    parser.add_argument(
        "--peak-flop-per-cycle",
        type=float,
        default=64.0,
        help="fp32 FLOP per cycle per core (Zen 5 with two 512-bit FMA pipes: 64; bf16 dot products double it)",
    )
    parser.add_argument(
        "--ghz", type=float, default=None, help="core clock for a nominal peak (unknown on a virtual machine: omit)"
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    fp32_peak = args.peak_flop_per_cycle * args.ghz * args.threads if args.ghz else float("nan")
    nominal = {"fp32": fp32_peak, "bf16": 2 * fp32_peak}
    gemm = {"fp32": gemm_roof(torch.float32), "bf16": gemm_roof(torch.bfloat16)}
    conv = {"fp32": conv_roof(torch.float32), "bf16": conv_roof(torch.bfloat16)}
    roof = {p: max(gemm[p], conv[p]) for p in gemm}
    print(f"threads {args.threads}, batch {args.batch}, patch {args.patch}")
    for p in ("fp32", "bf16"):
        print(
            f"{p}: GEMM {gemm[p]:.0f} GFLOP/s, 3x3 conv {conv[p]:.0f} GFLOP/s (roof: the larger), "
            f"nominal peak {nominal[p]:.0f} GFLOP/s"
        )
    header = f"{'model':<12} {'prec':<5} {'c-last':<6} {'compile':<7} {'patches/s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8} {'%roof':>6} {'%peak':>6}"
    print(header)
    print("-" * len(header))
    variants = [(p, cl, False) for p in ("fp32", "bf16") for cl in (False, True)]
    if args.compile:
        variants += [("fp32", False, True), ("bf16", False, True)]
    for name in args.models:
        for precision, channels_last, compiled in variants:
            with contextlib.suppress(Exception) if compiled else contextlib.nullcontext():
                r = row(name, precision, channels_last, compiled, args.batch, args.patch, args.steps)
                print(
                    f"{name:<12} {precision:<5} {str(channels_last):<6} {str(compiled):<7} {r['patches_per_s']:>9.1f} "
                    f"{r['gflop_per_step']:>10.1f} {r['gflops']:>8.1f} {100 * r['gflops'] / roof[precision]:>5.0f}% "
                    f"{100 * r['gflops'] / nominal[precision]:>5.0f}%",
                    flush=True,
                )
    return 0
