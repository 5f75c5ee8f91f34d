"""Autoencoding PSNR of tunable autoencoders at latent sizes K/8, K/4, K/2, K: the validation
subject's whole slices and every reserved subject's evaluation slices (the table of their model
cards).

Usage::

    python -m benchmarks autoencode                                      # the shipped tunable VAEs
    python -m benchmarks autoencode --models tunable_vae_f4c12_mri128 runs/ae/export/model
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("tunable_vae_f4c12_mri128", "tunable_vae_f4_mri128", "tunable_vae_mri128")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="shipped names or model folders")
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--n-eval", type=int, default=6, help="evaluation slices per reserved subject (default 6)")
    parser.add_argument("--val-slices", type=int, default=16, help="validation subject slices (default 16)")


def image_sets(corpus: str, n_eval: int, val_slices: int) -> dict[str, torch.Tensor]:
    """``name -> (N, 1, 128, 128)`` clean slices: the training corpus' validation subject, then the
    reserved subjects' evaluation slices."""
    from deepinv_tunable.training.data import SliceDataModule

    from .reserved_data import SUBJECTS, load_subject

    data = SliceDataModule({"input": "corpus", "corpus_root": corpus, "patch_size": 128, "val_slices": val_slices})
    data.setup()
    val = data.val_slices if isinstance(data.val_slices, torch.Tensor) else torch.stack(list(data.val_slices))
    sets = {f"validation {', '.join(data.cfg.val_subjects)}": val}
    for name in SUBJECTS:
        sets[f"reserved {name}"] = load_subject(name, 3, n_eval, corpus).evaluation
    return sets


def run(args: argparse.Namespace) -> int:
    from deepinv_tunable import pretrained
    from deepinv_tunable.utils.metrics import image_metrics

    torch.set_num_threads(1)
    sets = image_sets(args.corpus, args.n_eval, args.val_slices)
    for model in args.models:
        vae = pretrained.load(model).eval()
        K = vae.latent_dim
        ks = [K // 8, K // 4, K // 2, K]
        print(f"{model} (K = {K})")
        print(f"  {'slices':40s} " + " ".join(f"{'k=' + str(k):>8s}" for k in ks))
        with torch.no_grad():
            for name, x in sets.items():
                z = vae.encode_mean(x)
                psnr = [sum(image_metrics(vae.decode(z, k).clamp(0, 1), x)["psnr"]) / len(x) for k in ks]
                print(f"  {name + f' ({len(x)})':40s} " + " ".join(f"{p:8.2f}" for p in psnr), flush=True)
    return 0
