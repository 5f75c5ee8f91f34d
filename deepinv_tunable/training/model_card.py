"""Model cards: a Markdown page and a loss-curve figure beside every exported checkpoint."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils.atomic import save_figure, write_text_atomic


def read_metrics_csv(path: Path | Sequence[Path]) -> list[dict[str, float]]:
    """Rows of Lightning's CSV log as ``{column: value}`` (empty cells dropped); several paths
    (the logs of a run and of its resumptions) are read in order and concatenated."""
    if not isinstance(path, (str, Path)):
        return [row for p in path for row in read_metrics_csv(Path(p))]
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_loss_curve(rows: list[dict[str, float]], path: Path) -> Path | None:
    """Training loss per step and validation PSNR per epoch, one PNG."""
    train = [(r["step"], r["train/loss_step"]) for r in rows if "train/loss_step" in r]
    val_keys = sorted({k for r in rows for k in r if k.startswith("val/") and "psnr" in k})
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(*zip(*train), lw=0.8)
    axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    for key in val_keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        axes[1].plot(*zip(*points), marker=".", label=key.removeprefix("val/"))
    axes[1].set(xlabel="step", ylabel="PSNR (dB)", title="held-out slices")
    if val_keys:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def describe_augmentation(data_cfg) -> str:
    """The torchio augmentation a run used, as the data config sets it."""
    if not data_cfg.augment:
        return "none"
    geometric = "affine, elastic, " if data_cfg.geometric_augment else ""
    return f"torchio ({geometric}flip, bias field, gamma)"


def describe_data(data_cfg) -> str:
    """One line on the training data: the corpus (manifest hash, weights, validation subjects)
    or a volume's slices with its held-out slab."""
    if data_cfg.input == "corpus":
        from ..data.corpus import CORPUS_VERSION, sha256_bytes

        manifest = Path(data_cfg.corpus_root) / CORPUS_VERSION / "manifest.json"
        digest = sha256_bytes(manifest.read_bytes())[:16] if manifest.is_file() else "unknown"
        return (
            f"the `make corpus` training split ({CORPUS_VERSION}, manifest sha256 {digest}...), modality "
            f"weights {dict(data_cfg.modality_weights)}, equal weight per subject within a modality; "
            f"subjects {list(data_cfg.val_subjects)} kept out for validation; reserved subjects never read"
        )
    return (
        f"`{data_cfg.input}`, {data_cfg.plane} slices, spacing {data_cfg.spacing} mm, size "
        f"{data_cfg.size[0]}x{data_cfg.size[1]}; slices [{data_cfg.holdout[0]}, {data_cfg.holdout[1]}) held out"
    )


def write_model_card(
    model_dir: Path,
    recipe,
    module_kwargs: dict[str, Any],
    data_cfg,
    trainer_cfg,
    metrics_csv: Path | Sequence[Path],
    metrics: dict[str, float],
    steps: int,
) -> Path:
    """``README.md`` with the data, preset, steps, held-out metrics and how to reproduce."""
    rows = read_metrics_csv(metrics_csv)
    figure = plot_loss_curve(rows, model_dir / "loss_curve.png")
    val = {k: v for k, v in sorted(metrics.items()) if k.startswith("val/")}
    lines = [
        f"# {recipe.name}",
        "",
        recipe.description or "",
        "",
        "## Training",
        f"- model: `{recipe.model}`, preset `{recipe.preset}`, {steps} optimiser steps",
        f"- data: {describe_data(data_cfg)}"
        f"; augmentation: {describe_augmentation(data_cfg)}"
        + (
            f"; trained on random {data_cfg.patch_size}x{data_cfg.patch_size} patches, validated on whole slices"
            if data_cfg.patch_size
            else ""
        ),
        f"- module: `{json.dumps(module_kwargs, sort_keys=True)}`",
        f"- trainer: `{trainer_cfg.model_dump_json()}`",
        "",
        "## Held-out validation (slices never trained on)",
        "",
        "| metric | value |",
        "|---|---:|",
        *[f"| {k} | {v:.3f} |" for k, v in val.items()],
        "",
        "![loss curve](loss_curve.png)" if figure else "(no loss curve: no training steps were logged)",
        "",
        "## Reproduce",
        f"`deepinv-tunable train recipes/{recipe.name}.yaml` (the recipe this checkpoint came from).",
        "",
        "## Limits",
        *(
            [
                "Trained on a few real subjects (brain MR of several contrasts, one chest CT) and natural-image",
                "texture (see `data_cards/corpus.md`): far fewer subjects than a clinical model needs. The",
                "corpus' reserved subjects were never seen; validate on your own data before any use beyond research.",
            ]
            if data_cfg.input == "corpus"
            else [
                "Trained on a single population-average template (see `data_cards/mni152_t1.md`); the",
                "augmentation widens, but does not replace, real inter-subject variability. Validate on",
                "your own data before any use beyond research.",
            ]
        ),
        "",
    ]
    return write_text_atomic(model_dir / "README.md", "\n".join(lines))
