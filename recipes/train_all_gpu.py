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

from deepinv_tunable.training.presets import PRESETS
from deepinv_tunable.training.run import load_train_recipe, train

RECIPES = Path(__file__).parent
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs (one sub-folder per recipe)")
    parser.add_argument("--only", nargs="+", choices=sorted({k for k, _, _ in PLAN}), default=None)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget by this")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU check of the whole chain: cpu-small preset, 2 steps per model"
    )
    args = parser.parse_args()
    out = Path(args.out)
    made: dict[str, Path] = {}
    for key, name, minutes in PLAN:
        if args.only and key not in args.only:
            continue
        overrides = {
            "preset": "gpu",
            "output": str(out / Path(name).stem),
            "trainer": {"max_time_minutes": minutes * args.scale},
        }
        if args.smoke:
            overrides = {
                "output": overrides["output"],
                "trainer": {"max_steps": 2, "max_time_minutes": None},
                "data": {"samples_per_epoch": 8, "batch_size": 4, "val_slices": 2, "num_workers": 0},
            }
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
