"""Command-line entry point: ``deepinv-tunable run RECIPE`` and ``deepinv-tunable info``."""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

from pydantic import ValidationError


def _info() -> int:
    import deepinv
    import torch

    from . import __version__
    from .data.sample import SAMPLES, sample_path

    print(f"deepinv_tunable {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, deepinv {deepinv.__version__}")
    cuda = torch.cuda.is_available()
    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if cuda else 'cpu'}")
    print("bundled sample volumes (use as --input sample:NAME):")
    for name, s in sorted(SAMPLES.items()):
        print(f"  {name:12s} {s.description} [{s.kind}] -> {sample_path(name)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .recipes import RecipeError, load_recipe, run_recipe

    overrides = {}
    if args.input is not None:
        overrides["data.input"] = args.input
    if args.out is not None:
        overrides["output.dir"] = args.out
    if args.device is not None:
        overrides["device"] = args.device
    try:
        recipe = load_recipe(args.recipe, overrides)
        result = run_recipe(recipe, progress=False if args.quiet else None)
    except (RecipeError, FileNotFoundError, ValueError, TypeError, ValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for method, values in result.summary.items():
        print(f"{method:9s} PSNR {values['psnr']:6.2f} dB  SSIM {values['ssim']:.4f}  NMSE {values['nmse']:.5f}")
    print(f"metrics: {result.metrics_path}")
    if result.report_path is not None:
        print(f"report: {result.report_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepinv-tunable",
        description="Reconstruct medical volumes with deepinv physics and tunable generative priors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe (YAML) end to end")
    run.add_argument("recipe", help="recipe file, e.g. recipes/demo_mri_brain.yaml")
    run.add_argument("--input", help="volume to use instead of the recipe's data.input (NIfTI or sample:NAME)")
    run.add_argument("--out", help="output folder instead of the recipe's output.dir")
    run.add_argument("--device", choices=["cpu", "cuda"], help="device instead of the recipe's")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("info", help="versions, device and bundled data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return _info()
    return _run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
