r"""Run a recipe: volume -> slices -> simulated measurements -> reconstruction -> outputs, as one
Lightning ``Trainer.predict`` loop, in one process or in N (``--devices``, ``--num-nodes``,
``torchrun``, SLURM): the same code either way.

* :class:`RecipePredictor` (the ``LightningModule``): tunes and makes the volume's choices in
  ``setup`` (identically on every rank: the noise is seeded per slice), serves each rank its
  unfinished batches, and reconstructs one batch per ``predict_step``.
* Callbacks: :class:`SliceWriter` (per-slice metrics, the slices into the shared memory-mapped
  stacks and the rank's shard log, ``metrics.json`` after every batch of rank 0:
  :mod:`~deepinv_tunable.recipes.partial`), :class:`AuditWriter` (posterior samples per batch,
  one process) and a progress bar.
* Rank 0 then gathers every rank's shard log, checks that each slice was done exactly once, and
  writes the volumes, ``metrics.json``, the figures, the audit and the report.

Everything that can be checked is checked before the output folder is touched
(:func:`~deepinv_tunable.recipes.prepared.prepare_run`). An interrupted run keeps every finished
batch, and ``--resume`` continues it to the uninterrupted run's result, bit for bit.
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from ..utils.atomic import write_json_atomic
from ..utils.metrics import image_metrics
from ..utils.progress import progress_bar
from .auditing import RecipeAudit, calibrated_auditor, write_audit
from .partial import PartialStacks, ShardLog, read_shard_logs
from .prepared import PreparedRun, SliceBatch, _build_solver, prepare_run
from .records import add_input_doubts, add_records, batch_records, metrics_record, resumable_record
from .registry import build_solver
from .report import chosen_parameters, shown_slices, write_auto_figure, write_report
from .schema import AuditConfig, Recipe, RecipeError
from .warm_start import rank_batches


@dataclass
class RunResult:
    """Where a run wrote its outputs, and its summary metrics."""

    out_dir: Path
    metrics_path: Path
    report_path: Path | None
    summary: dict[str, dict[str, float]]


@dataclass
class RunState:
    """What the module and the callbacks of one run share: the prepared run, the record's header
    (recipe, input, tuning, the volume's choice, input doubts, the audit), the interrupted run
    being resumed (``None``: a fresh run), and what ``setup`` builds."""

    run: PreparedRun
    record: dict[str, Any]
    previous: dict[str, Any] | None
    audit: AuditConfig | None = None
    stacks: PartialStacks | None = None
    solver: Any = None
    baseline: Any = None
    compare: dict[str, Any] = field(default_factory=dict)
    auditor: RecipeAudit | None = None
    #: slices an interrupted run already finished (read once from the shard logs)
    finished: set[int] = field(default_factory=set)

    @property
    def out_dir(self) -> Path:
        return Path(self.run.recipe.output.dir)

    def stack_names(self) -> tuple[str, ...]:
        """The memory-mapped stacks: the solver's and the baseline's slices, and the comparison
        solvers' (for the figures, whichever rank computed a shown slice)."""
        return ("reconstruction", "baseline", *(f"compare_{label}" for label in self.run.comparison_labels()))


class _RunInterrupted(Exception):
    """Ctrl+C (or a ``KeyboardInterrupt``) inside the loop, carried through Lightning, which
    would otherwise answer it with ``sys.exit(1)``; :func:`run_recipe` raises it again as
    ``KeyboardInterrupt`` so the command line can say how to resume."""


@contextmanager
def _interrupts_carried():
    try:
        yield
    except KeyboardInterrupt:
        raise _RunInterrupted from None


@contextmanager
def _sigint_carried():
    """While the loop runs, Ctrl+C raises :class:`_RunInterrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _RunInterrupted

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _quiet_lightning():
    """Lightning's banner ("GPU available: ..."), its advice on data loader workers and a
    deprecation inside Lightning say nothing about a reconstruction: hidden; its other warnings
    and its errors stay."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning's own, with torch 2.14
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class RecipePredictor(L.LightningModule):
    """A recipe's reconstruction as a ``LightningModule`` for ``Trainer.predict``."""

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state  # plain attributes: the solvers are not submodules Lightning would move
        self.batches: list[list[int]] = []  # this rank's batches, finished ones included
        self.predecessor: dict[int, int | None] = {}

    def setup(self, stage: str) -> None:
        state, run = self.state, self.state.run
        root = self.trainer.strategy.root_device
        if run.device.type == "cuda" and root.type == "cuda" and root != run.device:
            run.use_device(root)  # one GPU per rank
        with _interrupts_carried(), torch.enable_grad():  # as predict_step: some choices differentiate
            tuning = state.record.get("tuning")
            overrides = {tuning["param"]: tuning["best"]} if tuning else run.tune(state.record)
            overrides.update(run.choose_once(state.record, overrides))
            state.solver = _build_solver(run.recipe, overrides)
            state.baseline = build_solver("baseline")
            state.compare = run.comparison_solvers()
            if state.audit is not None:
                state.auditor = calibrated_auditor(run, state.audit, state.solver)
        warm = bool(getattr(run.recipe.solver, "warm_start", False))
        self.batches, self.predecessor = rank_batches(
            run.eval_idx, run.recipe.data.batch_size, warm, self.trainer.global_rank, self.trainer.world_size
        )

    def predict_dataloader(self) -> DataLoader:
        finished = self.state.finished
        todo = [batch for batch in self.batches if not set(batch) <= finished]
        if any(set(batch) & finished for batch in todo):
            raise RecipeError(
                "cannot resume: the interrupted run cut the slices into other batches (another number of "
                "processes with solver.warm_start?); resume with the interrupted run's --devices, or start afresh"
            )
        return DataLoader(todo, batch_size=None, collate_fn=list)

    def predict_step(self, batch: list[int], batch_idx: int = 0) -> SliceBatch:
        state = self.state
        with _interrupts_carried(), torch.enable_grad():  # some solvers differentiate (as outside Lightning)
            starts = [self.predecessor[k] for k in batch]
            start_images = None if None in starts else state.stacks.tensor("reconstruction")[starts]
            return state.run.reconstruct_batch(state.solver, state.baseline, batch, state.compare, start_images)


def _batch_metrics(out: SliceBatch) -> dict[str, dict[str, list[float]]]:
    """Per-slice metrics of a batch: the baseline, the solver and each comparison solver."""
    estimates = (("baseline", out.baseline), ("solver", out.reconstruction), *out.comparisons.items())
    return {key: image_metrics(est, out.x) for key, est in estimates}


class SliceWriter(Callback):
    """Each finished batch: its metrics, its slices into the shared stacks, then an entry in the
    rank's shard log (so a slice is logged only once it is on disk); on rank 0, ``metrics.json``
    (``"complete": false``) with every rank's batches so far."""

    def __init__(self, state: RunState):
        self.state = state
        self.log: ShardLog | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        state = self.state
        shape = tuple(state.run.slices.shape[:1] + state.run.slices.shape[2:])
        names = state.stack_names()
        resume = state.previous is not None
        if trainer.is_global_zero:  # creates the stacks (or checks them on resume) before the others open them
            state.stacks = PartialStacks(state.out_dir, names, shape, resume=resume)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            state.stacks = PartialStacks(state.out_dir, names, shape, resume=True)
        self.log = ShardLog(state.out_dir, trainer.global_rank, resume=resume)
        if resume:
            state.finished = {k for entry in read_shard_logs(state.out_dir) for k in entry["slices"]}

    def on_predict_batch_end(self, trainer, pl_module, outputs: SliceBatch, batch, batch_idx, dataloader_idx=0):
        state = self.state
        with _interrupts_carried():
            metrics = _batch_metrics(outputs)
            records = batch_records(outputs, state.run.recipe.solver.name)
            for doubt in records["doubts"]:
                warnings.warn(doubt, RuntimeWarning, stacklevel=1)
            state.stacks.write(
                outputs.indices,
                {
                    "reconstruction": outputs.reconstruction,
                    "baseline": outputs.baseline,
                    **{f"compare_{label}": est for label, est in outputs.comparisons.items()},
                },
            )
            self.log.append(
                {
                    "slices": list(outputs.indices),
                    "metrics": metrics,
                    "seconds": outputs.seconds,
                    "records": records,
                    "rank": trainer.global_rank,
                }
            )
            if trainer.is_global_zero:
                write_json_atomic(state.out_dir / "metrics.json", gathered_record(state, trainer.world_size))

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier()  # every rank's slices are on disk before rank 0 gathers them


class AuditWriter(Callback):
    """Posterior samples and the audit's numbers for each finished batch (one process: the
    calibration and the maps are held in memory)."""

    def __init__(self, state: RunState):
        self.state = state

    def on_predict_batch_end(self, trainer, pl_module, outputs: SliceBatch, batch, batch_idx, dataloader_idx=0):
        with _interrupts_carried():
            self.state.auditor.process(outputs.indices, outputs.x, outputs.y, outputs.x_phys)
            self.state.record["audit"] = self.state.auditor.record()


class SliceProgress(Callback):
    """A progress bar (tqdm) over rank 0's slices, shown only on a terminal unless asked."""

    def __init__(self, state: RunState, progress: bool | None):
        self.state, self.progress, self.bar = state, progress, None

    def on_predict_start(self, trainer, pl_module: RecipePredictor) -> None:
        if not trainer.is_global_zero:
            return
        mine = [k for batch in pl_module.batches for k in batch]
        done = sum(k in self.state.finished for k in mine)
        name = self.state.run.recipe.name
        self.bar = progress_bar(
            total=len(mine), progress=self.progress, initial=done, desc=f"{name}: slices", unit="slice"
        )

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.bar is not None:
            self.bar.update(len(outputs.indices))

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()


def gathered_record(state: RunState, world_size: int, complete: bool = False) -> dict[str, Any]:
    """The run's record from every rank's shard log: the header, the batches' ``"auto"``,
    ``"diagnostics"`` and ``"doubts"`` in the order of their first slice, the metrics of the
    finished slices in increasing order, and (several processes) which rank did each slice.
    With ``complete``, every evaluation slice must appear exactly once."""
    entries = read_shard_logs(state.out_dir, state.run.eval_idx if complete else None)
    record = copy.deepcopy(state.record)
    slices: list[int] = []
    per_slice: dict[str, dict[str, list[float]]] = {}
    for entry in entries:
        add_records(record, entry["records"])
        slices += entry["slices"]
        for key, values in entry["metrics"].items():
            for name, vals in values.items():
                per_slice.setdefault(key, {}).setdefault(name, []).extend(vals)
    record.update(metrics_record(slices, per_slice, sum(entry["seconds"] for entry in entries)))
    if world_size > 1:
        owner = {k: entry.get("rank", 0) for entry in entries for k in entry["slices"]}
        record["distributed"] = {"world_size": world_size, "rank_of_slice": {str(k): owner[k] for k in sorted(owner)}}
    record["complete"] = complete
    return record


def _trainer(recipe: Recipe, callbacks: list[Callback], accelerator, devices, num_nodes, strategy) -> L.Trainer:
    device = torch.device(recipe.device)
    if accelerator is None:  # one process on the recipe's device
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        devices = [device.index or 0] if device.type == "cuda" else 1
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        use_distributed_sampler=False,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def run_recipe(
    recipe: Recipe,
    progress: bool | None = None,
    audit: bool = False,
    resume: bool = False,
    full_volume: bool = False,
    *,
    accelerator: str | None = None,
    devices: int | list[int] = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
) -> RunResult | None:
    r"""Run ``recipe`` end to end and write its outputs to ``recipe.output.dir``.

    Outputs: ``reconstruction.nii.gz``, ``baseline.nii.gz`` (see
    :class:`~deepinv_tunable.solvers.MeasurementBaseline`: zero-filled MRI, CT pseudo-inverse,
    blurred image) and ``reference.nii.gz`` on the prepared grid, in the input's intensity units,
    processed slices only (others are 0); ``metrics.json`` (PSNR/SSIM/NMSE per slice and mean);
    ``figures/*.png``; ``report.html``.

    With ``audit=True`` (``deepinv-tunable audit``), also: ``std.nii.gz``,
    ``interval_width.nii.gz`` (split-conformal when the recipe's ``audit`` section names
    calibration slices or a calibration file) and ``null_space.nii.gz`` (magnitude of the
    reconstruction's null-space component), ``audit.json``, ``calibration.json``,
    ``figures/audit_slice_*.png`` and an audit section in the report (see
    :class:`~deepinv_tunable.recipes.auditing.RecipeAudit`). The recipe's ``audit`` section is
    optional; its defaults sample with the shipped hierarchical VAE.

    :param ~deepinv_tunable.recipes.Recipe recipe: validated recipe (see
        :func:`~deepinv_tunable.recipes.load_recipe`).
    :param bool progress: show a tqdm bar; default: only when attached to a terminal.
    :param bool audit: draw posterior samples and audit every evaluated slice (one process).
        Default False.
    :param bool resume: continue an interrupted run of the same recipe in the same folder: the
        slices it finished are kept, not recomputed, and the result is identical to an
        uninterrupted run (measurement noise and solver noise are seeded per slice batch from
        ``recipe.seed``). Default False (start afresh). Not with ``audit``.
    :param bool full_volume: reconstruct every slice, whatever ``data.slices`` says; tuning
        slices then are among the reconstructed ones (allowed, and recorded in ``metrics.json``
        as ``"tuning_slices_evaluated"``: their metrics are optimistic). Default False.
    :param str accelerator: Lightning's accelerator for several processes (``"cpu"``, ``"gpu"``,
        ``"auto"``); default ``None``: one process on ``recipe.device``.
    :param devices: processes per node (or Lightning's device list). Default 1.
    :param int num_nodes: nodes. Default 1.
    :param str strategy: Lightning's strategy (``"ddp"`` for several processes). Default ``"auto"``.
    :return: the :class:`RunResult` on rank 0, ``None`` on the other ranks.

    Slice results go to memory-mapped stacks in ``OUT/.partial`` as each batch finishes (see
    :mod:`~deepinv_tunable.recipes.partial`), so a long volume's results are not held in RAM and a
    crash loses at most the batches in progress. Without ``solver.warm_start`` the processes
    share out the batches of a single-process run, so N processes write the volumes and records
    of one (plus ``metrics.json["distributed"]``: which rank did each slice); with it, each
    process runs the chains of its own block of slices, its first batch cold.
    """
    several = (devices if isinstance(devices, int) else len(devices)) * num_nodes > 1
    if audit and several:
        raise RecipeError(
            f"audit runs in one process (its calibration and maps are held in memory); drop --devices {devices}"
        )
    run = prepare_run(recipe, full_volume=full_volume, audit=audit)
    out_dir = Path(recipe.output.dir)
    metrics_path = out_dir / "metrics.json"
    previous = resumable_record(metrics_path, recipe, audit, full_volume, run.input_sha256) if resume else None
    if previous is not None and previous.get("complete"):
        report = out_dir / "report.html"
        return RunResult(out_dir, metrics_path, report if report.is_file() else None, previous["mean"])
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run.record_header(full_volume)
    for key in ("tuning", "auto_once"):  # chosen once; a resumed run keeps the choice
        if previous is not None and key in previous:
            record[key] = previous[key]
    add_input_doubts(record, run)
    state = RunState(run, record, previous, (recipe.audit or AuditConfig()) if audit else None)
    callbacks: list[Callback] = [SliceWriter(state), SliceProgress(state, progress)]
    if audit:
        callbacks.insert(0, AuditWriter(state))
    try:
        with _sigint_carried(), _quiet_lightning():
            trainer = _trainer(recipe, callbacks, accelerator, devices, num_nodes, strategy)
            trainer.predict(RecipePredictor(state), return_predictions=False)
    except _RunInterrupted:
        raise KeyboardInterrupt from None
    if not trainer.is_global_zero:
        return None
    return _finish(state, trainer.world_size)


def _finish(state: RunState, world_size: int) -> RunResult:
    """Rank 0, every slice done: the volumes, figures, audit, ``metrics.json`` and report."""
    run, out_dir, recipe = state.run, state.out_dir, state.run.recipe
    record = gathered_record(state, world_size, complete=True)
    stacks = state.stacks
    recon, base = stacks.tensor("reconstruction"), stacks.tensor("baseline")
    shown = shown_slices(run.eval_idx, recipe.output.figures)
    compared = {label: {k: stacks.tensor(f"compare_{label}")[k] for k in shown} for label in state.compare}
    figure_paths = run.write_outputs(out_dir, recon, base, compared)
    if (chosen := chosen_parameters(record)) and recipe.output.figures:
        figure_paths.append(write_auto_figure(out_dir / "figures" / "auto_parameters.png", chosen))
    if state.auditor is not None:
        record["audit"], audit_figures = write_audit(run, state.auditor, out_dir, recon)
        figure_paths += audit_figures
    metrics_path = write_json_atomic(out_dir / "metrics.json", record)
    stacks.remove()
    report_path = write_report(out_dir / "report.html", record, figure_paths) if recipe.output.report else None
    return RunResult(out_dir=out_dir, metrics_path=metrics_path, report_path=report_path, summary=record["mean"])


__all__ = [
    "AuditWriter",
    "RecipePredictor",
    "RunResult",
    "RunState",
    "SliceProgress",
    "SliceWriter",
    "gathered_record",
    "run_recipe",
]
