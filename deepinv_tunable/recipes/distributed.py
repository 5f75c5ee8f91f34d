"""Reconstruct a recipe's slices on several processes or GPUs with Lightning's
``Trainer.predict`` (DDP): ``deepinv-tunable run RECIPE --devices N [--num-nodes M]``.

Each rank takes every ``world_size``-th slice (no padding, so no slice is done twice), measures
and reconstructs it exactly as :func:`~deepinv_tunable.recipes.run_recipe` would (same seeded
noise per slice), and writes each finished slice to ``OUT/.predict/slice_NNNNN.npy`` (atomic)
with a per-rank manifest. Rank 0 then gathers the slices in order, checks that every slice
appears exactly once, and writes the usual outputs. The processes are launched by Lightning (or
by ``torchrun`` / SLURM, which Lightning detects); nothing here orchestrates processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Sampler

from ..atomic import atomic_write, write_json_atomic
from ..metrics import image_metrics
from ..report import write_report
from .records import add_input_doubts, add_records, batch_records, metrics_record
from .registry import build_solver
from .runner import RunResult, _build_solver, prepare_run
from .schema import Recipe
from .warm_start import shard, slice_batches

PREDICT_DIR = ".predict"


class _Slices(Dataset):
    def __init__(self, indices: list[int]):
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return self.indices[i]


class _RankShard(Sampler):
    """Positions ``rank, rank + world, ...``: a partition of the dataset, no padding."""

    def __init__(self, n: int, rank: int, world: int):
        self.positions = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


class RecipePredictor(L.LightningModule):
    """Lightning wrapper of one recipe's reconstruction for ``Trainer.predict``."""

    def __init__(self, recipe: Recipe, full_volume: bool = False):
        super().__init__()
        self.run = prepare_run(recipe, full_volume=full_volume)
        self.solver = None
        self.record: dict[str, Any] = self.run.record_header(full_volume)
        self.warm_start = bool(getattr(recipe.solver, "warm_start", False))
        self.predecessor: dict[int, int | None] = {}
        self.previous: dict[int, torch.Tensor] = {}  # the last batch's reconstructions (a warm start's starts)

    def setup(self, stage: str) -> None:
        # every rank tunes identically (deterministic noise), then builds its own solver
        overrides = self.run.tune(self.record)
        overrides.update(self.run.choose_once(self.record, overrides))  # same slices, same choice on every rank
        self.solver = _build_solver(self.run.recipe, overrides)
        self.baseline = build_solver("baseline")

    def predict_dataloader(self) -> DataLoader:
        rank, world, size = self.trainer.global_rank, self.trainer.world_size, self.run.recipe.data.batch_size
        if self.warm_start:  # a contiguous block per rank, in chains: each shard starts cold
            batches, self.predecessor = slice_batches(shard(self.run.eval_idx, rank, world), size, True)
            return DataLoader(batches, batch_size=None, collate_fn=list)
        sampler = _RankShard(len(self.run.eval_idx), rank, world)
        return DataLoader(_Slices(self.run.eval_idx), batch_size=size, sampler=sampler, collate_fn=list)

    def predict_step(self, batch: list[int], batch_idx: int = 0) -> dict[str, Any]:
        starts = [self.predecessor.get(k) for k in batch]
        start_images = None if None in starts else torch.stack([self.previous[k] for k in starts])
        out = self.run.reconstruct_batch(self.solver, self.baseline, batch, start_images=start_images)
        if self.warm_start:
            self.previous = {k: image.cpu() for k, image in zip(batch, out.reconstruction)}
        return {
            "indices": batch,
            "reconstruction": out.reconstruction,
            "baseline": out.baseline,
            "seconds": out.seconds,
            "records": batch_records(out, self.run.recipe.solver.name),
        }


class _SliceWriter(BasePredictionWriter):
    """Writes each predicted slice as ``slice_NNNNN.npy`` (reconstruction and baseline,
    ``(2, H, W)``) and a manifest per rank (its slices, solver seconds and batch records)."""

    def __init__(self, folder: Path):
        super().__init__(write_interval="batch")
        self.folder = folder
        self.written: list[int] = []
        self.seconds = 0.0
        self.records: list[dict[str, list]] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for k, rec, base in zip(prediction["indices"], prediction["reconstruction"], prediction["baseline"]):
            pair = torch.cat([rec, base]).numpy()
            atomic_write(self.folder / f"slice_{k:05d}.npy", lambda p, a=pair: np.save(p, a))
            self.written.append(int(k))
        self.seconds += prediction["seconds"]
        self.records.append(prediction["records"])
        write_json_atomic(
            self.folder / f"rank_{trainer.global_rank}.json",
            {"slices": self.written, "solver_seconds": self.seconds, "records": self.records},
        )


def gather_records(folder: Path, world_size: int) -> list[dict[str, list]]:
    """Every rank's batch records (:func:`~deepinv_tunable.recipes.records.batch_records`), in the
    order of each batch's first slice: the ``"auto"``, ``"diagnostics"`` and ``"doubts"`` a
    single-process run of the same slices would record (grouped by the ranks' batches)."""
    batches = []
    for rank in range(world_size):
        manifest = folder / f"rank_{rank}.json"
        batches += json.loads(manifest.read_text()).get("records", []) if manifest.is_file() else []

    def first_slice(records: dict[str, list]) -> float:
        slices = [k for key in ("auto", "diagnostics") for entry in records.get(key, []) for k in entry["slices"]]
        return min(slices, default=float("inf"))

    return sorted(batches, key=first_slice)


def gather_slices(
    folder: Path, indices: list[int], world_size: int
) -> tuple[dict[int, np.ndarray], dict[int, int], float]:
    """Read the predicted slices, checking that each of ``indices`` was written exactly once
    (by one rank) and nothing else was; return ``{slice: array}``, ``{slice: rank}`` and the
    solver seconds summed over ranks."""
    owner: dict[int, int] = {}
    seconds = 0.0
    for rank in range(world_size):
        manifest = folder / f"rank_{rank}.json"
        entry = json.loads(manifest.read_text()) if manifest.is_file() else {}
        done = entry.get("slices", [])
        seconds += entry.get("solver_seconds", 0.0)
        for k in done:
            if k in owner:
                raise RuntimeError(f"slice {k} was reconstructed twice (ranks {owner[k]} and {rank})")
            owner[k] = rank
    missing, extra = sorted(set(indices) - set(owner)), sorted(set(owner) - set(indices))
    if missing or extra:
        raise RuntimeError(f"distributed prediction is incomplete: missing slices {missing}, unexpected {extra}")
    return {k: np.load(folder / f"slice_{k:05d}.npy") for k in indices}, owner, seconds


def predict_recipe(
    recipe: Recipe,
    accelerator: str = "cpu",
    devices: int = 2,
    num_nodes: int = 1,
    strategy: str = "ddp",
    full_volume: bool = False,
) -> RunResult | None:
    r"""Reconstruct ``recipe``'s evaluation slices with ``Trainer.predict`` on ``devices`` x
    ``num_nodes`` processes; rank 0 writes the outputs of :func:`~deepinv_tunable.recipes.run_recipe`
    (volumes, ``metrics.json``, which also records which rank did each slice, figures and
    report) and returns the :class:`~deepinv_tunable.recipes.runner.RunResult`; other ranks
    return None.

    Launch: the command line (``--devices 2 --strategy ddp``) on one machine; on a cluster,
    ``torchrun --nproc-per-node G --nnodes M ...`` or an ``srun`` job step with one task per GPU,
    whose environment Lightning reads. ``--resume`` and the audit belong to the single-process
    runner. With ``solver.warm_start`` each rank takes a contiguous block of the slices and runs
    its own chains from a cold first batch (:func:`~deepinv_tunable.recipes.warm_start.shard`).
    """
    out_dir = Path(recipe.output.dir)
    folder = out_dir / PREDICT_DIR
    module = RecipePredictor(recipe, full_volume=full_volume)
    writer = _SliceWriter(folder)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[writer],
    )
    if trainer.global_rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*"):
            stale.unlink()
    trainer.strategy.barrier()
    trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return None
    run = module.run
    images, owner, seconds = gather_slices(folder, run.eval_idx, trainer.world_size)
    recon, base = torch.zeros_like(run.slices), torch.zeros_like(run.slices)
    for k, pair in images.items():
        recon[k, 0], base[k, 0] = torch.from_numpy(pair[0]), torch.from_numpy(pair[-1])
    idx = run.eval_idx
    per_slice = {
        key: image_metrics(stack[idx], run.slices[idx]) for key, stack in (("baseline", base), ("solver", recon))
    }
    record = dict(module.record)
    add_input_doubts(record, run)
    for records in gather_records(folder, trainer.world_size):
        add_records(record, records)
    record = {
        **record,
        **metrics_record(idx, per_slice, seconds),
        "distributed": {
            "world_size": trainer.world_size,
            "strategy": strategy,
            "rank_of_slice": {str(k): owner[k] for k in idx},
        },
        "complete": True,
    }
    figures = run.write_outputs(out_dir, recon, base)
    metrics_path = write_json_atomic(out_dir / "metrics.json", record)
    report = write_report(out_dir / "report.html", record, figures) if recipe.output.report else None
    shutil.rmtree(folder, ignore_errors=True)
    return RunResult(out_dir=out_dir, metrics_path=metrics_path, report_path=report, summary=record["mean"])


__all__ = ["RecipePredictor", "gather_records", "gather_slices", "predict_recipe"]
