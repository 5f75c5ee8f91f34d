#!/usr/bin/env python
r"""Train every prior of the package on the corpus with the ``gpu`` preset, on one large GPU, in
about 10 minutes in all (budgets below), in dependency order:

1. ``hvae`` (PnP-HVAE prior), 2. the noise-conditional pixel denoiser (full-width DRUNet, sigma in
[0.002, 1]; DPIR / DiffPIR / DPS / DDRM / PixelFlash), 3. the three corpus DnCNNs (DPIR), 4. the
tunable VAEs (8x16x16 and 4x32x32 latents), 5. the ordered flow, 6. the latent UNet on the new
8x16x16 VAE, 7. the severity encoder on the new VAE and UNet.

Each model lands in ``OUT/<recipe name>/model`` (``save_pretrained`` + model card); compare it
with the shipped one (``benchmarks/run_reserved.py``) before replacing anything under
``deepinv_tunable/pretrained``. Needs the corpus (``make corpus``; its folder travels with the
working tree or is rebuilt). Usage::

    python recipes/train_all_gpu.py --out runs/gpu            # all
    python recipes/train_all_gpu.py --out runs/gpu --only hvae drunet dncnn
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from deepinv_tunable.recipes.files import read_recipe_file
from deepinv_tunable.training.presets import PRESETS
from deepinv_tunable.training.run import load_train_recipe, train

RECIPES = Path(__file__).parent
#: data settings of the ``gpu`` preset that replace the recipes' CPU-sized ones
GPU_DATA_KEYS = ("batch_size", "samples_per_epoch", "num_workers")
#: (key, recipe, minutes); budgets sum to about 10 minutes on an H200
PLAN = [
    ("hvae", "train_hvae_corpus.yaml", 2.0),
    ("drunet", "train_drunet_corpus.yaml", 1.5),
    ("dncnn", "train_dncnn_corpus_L.yaml", 0.4),
    ("dncnn", "train_dncnn_corpus_M.yaml", 0.4),
    ("dncnn", "train_dncnn_corpus_H.yaml", 0.4),
    ("vae", "train_tunable_vae_corpus.yaml", 1.25),
    ("vae", "train_tunable_vae_f4_corpus.yaml", 1.0),
    ("flow", "train_ordered_flow_corpus.yaml", 0.75),
    ("ldm", "train_tunable_ldm_corpus.yaml", 1.25),
    ("severity", "train_severity_encoder_corpus.yaml", 0.75),
]


def recipe_overrides(
    key: str, name: str, minutes: float, out: Path, args: argparse.Namespace, made: dict[str, Path]
) -> dict:
    """What this script changes in recipe ``name`` (PLAN key ``key``): the gpu preset with its
    batch, epoch and width, the time budget, the output folder and the models ``made`` before."""
    overrides = {
        "preset": "gpu",
        "output": str(out / Path(name).stem),
        "trainer": {"max_time_minutes": minutes},
    }
    if args.smoke:
        overrides = {
            "output": overrides["output"],
            "trainer": {"max_steps": 2, "max_time_minutes": None},
            "data": {"samples_per_epoch": 8, "batch_size": 4, "val_slices": 2, "num_workers": 0},
        }
    else:
        # a recipe's CPU-sized batch and epoch would otherwise override the gpu preset's
        gpu_data = PRESETS[read_recipe_file(RECIPES / name, "training recipe")["model"]]["gpu"]["data"]
        overrides["data"] = {k: gpu_data[k] for k in GPU_DATA_KEYS if k in gpu_data}
    if args.no_geometric_augmentation:
        overrides.setdefault("data", {})["geometric_augment"] = False
    if args.workers is not None:
        overrides.setdefault("data", {})["num_workers"] = args.workers
    if key == "hvae" and not args.smoke:  # the CPU recipe's width would override the gpu preset's
        overrides["module"] = dict(PRESETS["hvae"]["gpu"]["module"])
    # the latent models build on the VAE (and UNet) trained in this run, when there is one
    if key == "ldm" and "train_tunable_vae_corpus" in made:
        overrides["module"] = {"vae": str(made["train_tunable_vae_corpus"])}
    if key == "severity" and {"train_tunable_vae_corpus", "train_tunable_ldm_corpus"} <= set(made):
        overrides["module"] = {
            "vae": str(made["train_tunable_vae_corpus"]),
            "unet": str(made["train_tunable_ldm_corpus"]),
        }
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs (one sub-folder per recipe)")
    parser.add_argument("--only", nargs="+", choices=sorted({k for k, _, _ in PLAN}), default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget by this")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training minutes in all, shared as the budgets are (overrides --scale)",
    )
    parser.add_argument(
        "--no-geometric-augmentation",
        action="store_true",
        help="skip torchio's rotations, scalings and elastic deformations (they need SimpleITK)",
    )
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: the preset's)")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU check of the whole chain: cpu-small preset, 2 steps per model"
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    out = Path(args.out)
    if args.minutes is not None:
        planned = sum(m for k, _, m in PLAN if not args.only or k in args.only)
        args.scale = args.minutes / planned
    torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick its fastest kernels
    torch.set_float32_matmul_precision("high")
    made: dict[str, Path] = {}
    for key, name, minutes in PLAN:
        if args.only and key not in args.only:
            continue
        overrides = recipe_overrides(key, name, minutes * args.scale, out, args, made)
        start = time.perf_counter()
        result = train(load_train_recipe(RECIPES / name, overrides), progress=False)
        made[Path(name).stem] = result.model_dir
        print(
            f"{name}: {time.perf_counter() - start:.0f} s -> {result.model_dir} "
            f"{ {k: round(v, 3) for k, v in result.metrics.items() if k.startswith('val/')} }",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
