"""Command-line entry point: ``deepinv-tunable run RECIPE``, ``deepinv-tunable audit RECIPE``,
``deepinv-tunable train RECIPE``, ``deepinv-tunable series FOLDER`` and ``deepinv-tunable info``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
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
    from . import pretrained

    print("shipped checkpoints (pretrained.load(NAME); model card: README.md in the folder):")
    for name in pretrained.available():
        print(f"  {name:20s} -> {pretrained.path(name)}")
    return 0


#: exit codes of the command line
EXIT_BAD_INPUT, EXIT_IO, EXIT_FAILED, EXIT_INTERRUPTED = 2, 3, 4, 130
#: ``run``/``audit`` option (argparse attribute) -> (recipe key it overrides, its flag)
_RUN_OVERRIDES = {
    "input": ("data.input", "--input"),
    "out": ("output.dir", "--out"),
    "device": ("device", "--device"),
    "axis": ("data.plane", "--axis"),
    "slices": ("data.slices", "--slices"),
    "volume_index": ("data.volume_index", "--volume-index"),
    "series": ("data.series", "--series"),
}


def _flag_text(value) -> str:
    """An override value as typed on the command line (``--slices`` back to START:STOP[:COUNT])."""
    if isinstance(value, dict):
        return ":".join(str(value[k]) for k in ("start", "stop", "count") if k in value)
    return str(value)


def _interrupted_message(args: argparse.Namespace, audit: bool) -> str:
    """What an interrupted run kept, and the command that continues it."""
    from pathlib import Path

    from .recipes import load_recipe

    try:
        out = Path(args.out) if args.out else Path(load_recipe(args.recipe).output.dir)
    except Exception:  # the recipe itself may be what was being read
        return "interrupted before the run started; nothing was written"
    metrics = out / "metrics.json"
    done = 0
    if metrics.is_file():
        try:
            done = len(json.loads(metrics.read_text()).get("slices", []))
        except (OSError, ValueError):
            done = 0
    if audit:
        return (
            f"interrupted: {done} slices were finished in {out}; an audit cannot be resumed "
            f"(posterior samples are not kept): run it again"
        )
    # the same overrides again: a resumed run must be the same recipe
    words = ["deepinv-tunable", "run", args.recipe, "--out", str(out)]
    for attr, (_, flag) in _RUN_OVERRIDES.items():
        value = getattr(args, attr)
        if value is not None and attr != "out":
            words += [flag, _flag_text(value)]
    if args.full_volume:
        words.append("--full-volume")
    command = " ".join([*words, "--resume"])
    return (
        f"interrupted: {done} slices finished and kept in {out} (metrics.json, .partial/); continue with:\n  {command}"
    )


def _run(args: argparse.Namespace) -> int:
    from .recipes import RecipeError, load_recipe, run_recipe
    from .recipes.prepared import NonFiniteOutput

    overrides = {
        key: getattr(args, attr) for attr, (key, _) in _RUN_OVERRIDES.items() if getattr(args, attr) is not None
    }
    audit = args.command == "audit"
    if audit and args.samples is not None:
        overrides["audit.samples"] = args.samples
    try:
        recipe = load_recipe(args.recipe, overrides)
        if not args.quiet:
            model = getattr(getattr(recipe.solver, "params", None), "model", None)
            print(
                f"{recipe.name}: input {recipe.input_path()}, device {recipe.device} (float32), solver "
                f"{recipe.solver.name}{f' with {model}' if model else ''}, output {recipe.output.dir}",
                file=sys.stderr,
            )
        devices, nodes = getattr(args, "devices", None) or 1, getattr(args, "num_nodes", None) or 1
        accelerator, strategy = getattr(args, "accelerator", None), getattr(args, "strategy", None)
        several = devices > 1 or nodes > 1
        result = run_recipe(
            recipe,
            progress=False if args.quiet else None,
            audit=audit,
            resume=getattr(args, "resume", False),
            full_volume=args.full_volume,
            accelerator=(accelerator or "auto") if several or accelerator else None,
            devices=devices,
            num_nodes=nodes,
            strategy=strategy or ("ddp" if several else "auto"),
        )
        if result is None:  # not rank 0: rank 0 reports
            return 0
    except (RecipeError, FileNotFoundError, ValueError, TypeError, ValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # permission, disk full, ... while writing the outputs
        print(f"error: cannot write the outputs: {err}", file=sys.stderr)
        return EXIT_IO
    except NonFiniteOutput as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(_interrupted_message(args, audit), file=sys.stderr)
        return EXIT_INTERRUPTED
    for method, values in result.summary.items():
        method = recipe.solver.name if method == "solver" else method
        fg = f" (object {values['psnr_fg']:6.2f})" if "psnr_fg" in values else ""
        fg_ssim = f" (object {values['ssim_fg']:.4f})" if "ssim_fg" in values else ""
        print(
            f"{method:12s} PSNR {values['psnr']:6.2f} dB{fg}  SSIM {values['ssim']:.4f}{fg_ssim}  "
            f"NMSE {values['nmse']:.5f}"
        )
    if audit:
        record = json.loads(result.metrics_path.read_text())["audit"]
        mean = record["mean"]
        print(
            f"audit     chi2 {mean['chi2']:.3f}  null fraction {mean['null_fraction']:.3f}  "
            f"null share of sample disagreement {mean['null_disagreement_fraction']:.3f}"
        )
        cov = record.get("coverage_head")
        if cov:
            cal = "n/a" if cov["calibrated"] is None else f"{100 * cov['calibrated']:.1f}%"
            print(
                f"coverage  {100 * cov['nominal']:.0f}% intervals, head pixels: uncalibrated "
                f"{100 * cov['uncalibrated']:.1f}%, calibrated {cal}"
            )
        print(f"audit: {result.out_dir / 'audit.json'}")
    print(f"metrics: {result.metrics_path}")
    if result.report_path is not None:
        print(f"report: {result.report_path}")
    return 0


def _series(args: argparse.Namespace) -> int:
    from .data.dicom import list_dicom_series

    try:
        series = list_dicom_series(args.folder)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not series:
        print(f"error: no readable DICOM series in '{args.folder}'", file=sys.stderr)
        return EXIT_BAD_INPUT
    for s in series:
        print(s)
    return 0


def slice_range(text: str) -> dict[str, int]:
    """``START:STOP`` or ``START:STOP:COUNT`` (``--slices``) as the recipe's ``data.slices``."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:STOP or START:STOP:COUNT with integers (e.g. 60:140:8), got '{text}'"
        ) from None
    return dict(zip(("start", "stop", "count"), values))


def _train(args: argparse.Namespace) -> int:
    from .recipes import RecipeError
    from .training import export_checkpoint, load_train_recipe, train

    overrides: dict = {}
    if args.out is not None:
        overrides["output"] = args.out
    if args.preset is not None:
        overrides["preset"] = args.preset
    trainer = {
        key: value
        for key, value in (
            ("accelerator", args.accelerator),
            ("devices", args.devices),
            ("num_nodes", args.num_nodes),
            ("strategy", args.strategy),
            ("max_steps", args.max_steps),
            ("max_epochs", args.max_epochs),
        )
        if value is not None
    }
    if trainer:
        overrides["trainer"] = trainer
    try:
        recipe = load_train_recipe(args.recipe, overrides)
        if args.export_only:
            result = export_checkpoint(recipe, args.checkpoint)
        else:
            result = train(recipe, resume=not args.no_resume, progress=not args.quiet)
    except (RecipeError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"error: cannot write the outputs: {err}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        print(
            f"interrupted: the last checkpoint is kept; continue with: deepinv-tunable train {args.recipe}"
            + (f" --out {args.out}" if args.out else ""),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(f"model: {result.model_dir} (model card: {result.model_dir / 'README.md'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepinv-tunable",
        description="Reconstruct medical volumes with deepinv physics and tunable generative priors.",
        epilog=f"exit codes: 0 done, {EXIT_BAD_INPUT} bad recipe, data or paths (nothing written), "
        f"{EXIT_IO} the outputs could not be written, {EXIT_FAILED} the solver returned NaN/inf (finished slices "
        f"kept), {EXIT_INTERRUPTED} interrupted (Ctrl-C; a run says how to resume)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe (YAML) end to end")
    au = sub.add_parser(
        "audit",
        help="run a recipe, then sample the posterior, calibrate intervals and audit "
        "each slice (std, interval width and null-space volumes, audit.json)",
    )
    for p in (run, au):
        p.add_argument("recipe", help="recipe file, e.g. recipes/demo_mri_brain.yaml")
        p.add_argument("--input", help="volume to use instead of the recipe's data.input (NIfTI or sample:NAME)")
        p.add_argument("--out", help="output folder instead of the recipe's output.dir")
        p.add_argument("--device", choices=["cpu", "cuda"], help="device instead of the recipe's")
        p.add_argument(
            "--axis", choices=["axial", "coronal", "sagittal"], help="slicing plane instead of the recipe's data.plane"
        )
        p.add_argument(
            "--slices",
            type=slice_range,
            metavar="START:STOP[:COUNT]",
            help="slices to reconstruct instead of the recipe's data.slices (COUNT evenly spaced in [START, STOP))",
        )
        p.add_argument("--volume-index", type=int, help="volume of a 4D NIfTI input (0-based)")
        p.add_argument(
            "--series", help="SeriesInstanceUID of the DICOM series to read (deepinv-tunable series FOLDER lists them)"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument(
            "--full-volume",
            action="store_true",
            help="process every slice of the volume (overrides the recipe's data.slices subset)",
        )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (on any --devices): finished slices are kept, not recomputed",
    )
    run.add_argument(
        "--devices",
        type=int,
        help="processes/GPUs per node: > 1 shares the run's batches out over them (the same Trainer.predict loop, DDP)",
    )
    run.add_argument("--num-nodes", type=int, help="nodes (with torchrun or SLURM)")
    run.add_argument("--strategy", help="Lightning strategy for --devices > 1 (default ddp)")
    run.add_argument("--accelerator", help="Lightning accelerator for --devices > 1: cpu, gpu, auto")
    au.add_argument("--samples", type=int, help="posterior samples per slice instead of the recipe's audit.samples")
    tr = sub.add_parser("train", help="train a model from a training recipe (YAML) with Lightning")
    tr.add_argument("recipe", help="training recipe, e.g. recipes/train_tunable_vae.yaml")
    tr.add_argument("--out", help="output folder instead of the recipe's")
    tr.add_argument("--preset", choices=["cpu-small", "gpu"], help="preset instead of the recipe's")
    tr.add_argument("--accelerator", help="Lightning accelerator: cpu, gpu, auto")
    tr.add_argument("--devices", type=int, help="devices per node (DDP when > 1)")
    tr.add_argument("--num-nodes", type=int, help="nodes (multi-node DDP, e.g. under SLURM or torchrun)")
    tr.add_argument("--strategy", help="Lightning strategy: auto, ddp, ddp_spawn, ...")
    tr.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    tr.add_argument("--max-epochs", type=int, help="stop after this many epochs")
    tr.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoints/last.ckpt exists")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument(
        "--export-only",
        action="store_true",
        help="do not train: export the model of OUT/checkpoints/last.ckpt (or --checkpoint) with its card",
    )
    tr.add_argument("--checkpoint", help="with --export-only: the Lightning checkpoint to export")
    sub.add_parser("info", help="versions, device and bundled data")
    se = sub.add_parser("series", help="list the DICOM series of a folder (UID, files, modality, description)")
    se.add_argument("folder", help="folder of DICOM files")
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as a user of the command reads them: what happened, not which line of ours said it."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the interpreter's warning display on return
        warnings.showwarning = _one_line_warning
        try:
            if args.command == "info":
                return _info()
            if args.command == "train":
                return _train(args)
            if args.command == "series":
                return _series(args)
            return _run(args)  # run or audit
        except ModuleNotFoundError as err:
            if err.name is None or err.name.split(".")[0] not in EXTRA_OF:
                raise
            extra = EXTRA_OF[err.name.split(".")[0]]
            print(
                f"error: '{args.command}' needs {err.name}, which is not installed: "
                f"pip install 'deepinv_tunable[{extra}]'",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT


#: optional dependency -> the extra of ``pyproject.toml`` that installs it
EXTRA_OF = {
    "torchio": "recipes",
    "nibabel": "recipes",
    "jinja2": "recipes",
    "diffusers": "latent",
    "lightning": "train",
    "pydicom": "dicom",
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
