r"""Train a model from a training recipe (YAML): preset + overrides -> Lightning ``Trainer``
-> ``save_pretrained`` checkpoint with a model card.

Output folder layout::

    OUT/checkpoints/last.ckpt   Lightning state after the last finished epoch (resume point)
    OUT/logs/                   CSV metrics (one row per logged step / epoch)
    OUT/model/                  config.json + model.safetensors + README.md (model card)
                                + loss_curve.png

A run interrupted at any point restarts from ``last.ckpt`` with ``resume=True`` and loses no
finished epoch. DDP, mixed precision and multi-node runs come from the ``trainer`` keys
(``devices``, ``num_nodes``, ``strategy``, ``precision``), not from this code.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..recipes.files import read_recipe_file
from ..recipes.schema import RecipeError, format_errors
from .data import SliceDataConfig, SliceDataModule
from .dncnn import DnCNNModule
from .drunet import ConditionalDenoiserModule
from .flow import OrderedFlowModule
from .hvae import HVAEModule
from .ldm import TunableLDMModule
from .model_card import write_model_card
from .presets import PRESETS, merge
from .severity import SeverityEncoderModule
from .vae import TunableVAEModule


class TrainerConfig(BaseModel):
    """The Lightning ``Trainer`` settings a training recipe's ``trainer`` section may override."""

    model_config = ConfigDict(extra="forbid")
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = Field(100, ge=1)
    max_steps: int = -1
    max_time_minutes: float | None = Field(None, gt=0)
    log_every_n_steps: int = Field(10, ge=1)
    #: Lightning's gradient-norm clipping (``None``: off)
    gradient_clip_val: float | None = Field(None, gt=0)
    seed: int = 0


class TrainRecipe(BaseModel):
    """A training recipe: which model, which preset, and overrides of the preset's keys."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    model: Literal["tunable_vae", "tunable_ldm", "ordered_flow", "hvae", "severity_encoder", "dncnn", "drunet"]
    preset: Literal["cpu-small", "gpu"] = "cpu-small"
    data: dict[str, Any] = {}
    module: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    output: str = "results/train"


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    metrics: dict[str, float]


MODULES = {
    "tunable_vae": TunableVAEModule,
    "tunable_ldm": TunableLDMModule,
    "ordered_flow": OrderedFlowModule,
    "hvae": HVAEModule,
    "severity_encoder": SeverityEncoderModule,
    "dncnn": DnCNNModule,
    "drunet": ConditionalDenoiserModule,
}


def load_train_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainRecipe:
    """Read and validate a training recipe; ``overrides`` are merged into it first."""
    raw = merge(read_recipe_file(path, "training recipe"), overrides or {})
    try:
        return TrainRecipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_errors(err, f"'{path}' (training recipe)")) from None


def resolve(recipe: TrainRecipe) -> tuple[dict, SliceDataConfig, TrainerConfig]:
    """The preset merged with the recipe's overrides, validated."""
    preset = PRESETS[recipe.model][recipe.preset]
    module_kwargs = merge(preset["module"], recipe.module)
    source = f"'{recipe.name}' (training recipe with its preset)"
    try:
        data = SliceDataConfig(**merge(preset["data"], recipe.data))
    except ValidationError as err:
        raise RecipeError(format_errors(err, source, "data")) from None
    try:
        trainer = TrainerConfig(**merge(preset["trainer"], recipe.trainer))
    except ValidationError as err:
        raise RecipeError(format_errors(err, source, "trainer")) from None
    net_key = {"tunable_vae": "vae", "ordered_flow": "flow", "hvae": "hvae"}.get(recipe.model)
    if net_key is not None:  # the network is built for (and records) the training images' size
        size = [data.patch_size] * 2 if data.patch_size else list(data.size)
        module_kwargs.setdefault(net_key, {})["image_size"] = size
    return module_kwargs, data, trainer


def train(
    recipe: TrainRecipe, resume: bool = True, progress: bool = True, callbacks: list[L.Callback] | None = None
) -> TrainResult:
    """Train ``recipe``'s model and export it with ``save_pretrained`` and a model card.

    :param TrainRecipe recipe: validated training recipe (:func:`load_train_recipe`).
    :param bool resume: continue from ``OUT/checkpoints/last.ckpt`` when it exists. Default True.
    :param bool progress: Lightning's progress bar. Default True.
    :param list callbacks: extra Lightning callbacks (EMA, logging, ...).
    """
    module_kwargs, data_cfg, tcfg = resolve(recipe)
    out = Path(recipe.output)
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    module = MODULES[recipe.model](**module_kwargs)
    datamodule = SliceDataModule(data_cfg)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", save_last=True, save_top_k=1, every_n_epochs=1, save_on_train_epoch_end=True
    )
    last = out / "checkpoints" / "last.ckpt"
    resuming = resume and last.is_file()
    # a resumed run logs to a new version folder: Lightning's CSV logger empties the folder it
    # writes to, and the model card's loss curve needs the earlier runs' rows too
    earlier = sorted(
        int(p.name.split("_")[1]) for p in (out / "logs").glob("version_*") if p.name.split("_")[1].isdigit()
    )
    if not resuming:  # a fresh run replaces an earlier run's checkpoints, and so its logs
        for v in earlier:
            shutil.rmtree(out / "logs" / f"version_{v}", ignore_errors=True)
    version = earlier[-1] + 1 if resuming and earlier else 0
    logger = L.pytorch.loggers.CSVLogger(str(out), name="logs", version=version)
    trainer = L.Trainer(
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        num_nodes=tcfg.num_nodes,
        strategy=tcfg.strategy,
        precision=tcfg.precision,
        max_epochs=tcfg.max_epochs,
        max_steps=tcfg.max_steps,
        max_time=timedelta(minutes=tcfg.max_time_minutes) if tcfg.max_time_minutes else None,
        log_every_n_steps=tcfg.log_every_n_steps,
        gradient_clip_val=tcfg.gradient_clip_val,
        callbacks=[checkpoint, *(callbacks or [])],
        logger=logger,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=False,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resuming else None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    model_dir = out / "model"
    if trainer.is_global_zero:
        module.export(model_dir, datamodule)
        write_model_card(
            model_dir, recipe, module_kwargs, data_cfg, tcfg, _logs(out, version), metrics, int(trainer.global_step)
        )
    return TrainResult(out_dir=out, model_dir=model_dir, metrics=metrics)


def _logs(out: Path, last_version: int) -> list[Path]:
    return [out / "logs" / f"version_{v}" / "metrics.csv" for v in range(last_version + 1)]


def export_checkpoint(recipe: TrainRecipe, checkpoint: str | Path | None = None) -> TrainResult:
    """Export the model of a Lightning checkpoint of ``recipe``'s run (default its ``last.ckpt``)
    with ``save_pretrained`` and a model card, without training: a run stopped at any point
    yields its weights (the checkpoint's weights are the EMA average where the module keeps one).
    The card's validation numbers are the last ones logged before the checkpoint.
    """
    import torch

    from .model_card import read_metrics_csv

    module_kwargs, data_cfg, tcfg = resolve(recipe)
    out = Path(recipe.output)
    path = Path(checkpoint) if checkpoint is not None else out / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at '{path}': train first (deepinv-tunable train)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    module = MODULES[recipe.model](**module_kwargs)
    module.load_state_dict(state["state_dict"])
    datamodule = SliceDataModule(data_cfg)
    model_dir = out / "model"
    module.export(model_dir, datamodule)
    versions = sorted(
        int(p.name.split("_")[1]) for p in (out / "logs").glob("version_*") if p.name.split("_")[1].isdigit()
    )
    logs = _logs(out, versions[-1]) if versions else []
    step = int(state["global_step"])
    metrics: dict[str, float] = {}
    for row in read_metrics_csv(logs):  # the latest value of each validation metric up to the checkpoint
        if row.get("step", 0) <= step:
            metrics.update({k: v for k, v in row.items() if k.startswith("val/")})
    write_model_card(model_dir, recipe, module_kwargs, data_cfg, tcfg, logs, metrics, step)
    return TrainResult(out_dir=out, model_dir=model_dir, metrics=metrics)
