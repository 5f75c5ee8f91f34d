r"""What every benchmark script shares, so that each states only what it measures: the bundled
datasets and their calibration / evaluation slices, the tasks and their physics, the method
registry with the classical baselines (``pseudo_inverse``, ``tv_pgd default``, ``tv_pgd tuned``),
timing and memory, the evaluation loop and the table writers.

Adding a method: register a builder in :data:`METHODS` (see :func:`register_method`). A builder
receives a :class:`BenchContext` (physics, task config, calibration data, iteration budget)
and returns a deepinv ``Reconstructor``; anything worth reporting (a chosen parameter) goes in
``ctx.notes``. Nothing else needs to change.

Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import deepinv as dinv
import numpy as np
import torch

from deepinv_tunable import __version__
from deepinv_tunable.atomic import write_json_atomic
from deepinv_tunable.data import (
    batched,
    load_volume,
    percentile_scaling,
    prepare_volume,
    sample_path,
    select_slices,
    volume_to_slices,
)
from deepinv_tunable.metrics import image_metrics
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import DEFAULT_TV_LAMBDA, TVPGD, PseudoInverse
from deepinv_tunable.tuning import grid_search

try:  # POSIX only; peak RSS is reported as unavailable elsewhere.
    import resource
except ImportError:  # pragma: no cover
    resource = None


# ------------------------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class SliceRange:
    """``count`` evenly spaced slices in ``[start, stop)`` (see ``select_slices``)."""

    start: int
    stop: int
    count: int


@dataclass(frozen=True)
class DatasetSpec:
    label: str
    sample: str
    plane: str
    spacing: float | None
    size: tuple[int, int] | None
    calibration: SliceRange
    evaluation: SliceRange
    percentiles: tuple[float, float] = (0.5, 99.5)


DATASETS: dict[str, DatasetSpec] = {
    "mni152": DatasetSpec(
        label="mni152 held-out",
        sample="mni152_t1",
        plane="axial",
        spacing=1.8,
        size=(128, 128),
        calibration=SliceRange(60, 100, 6),
        evaluation=SliceRange(100, 140, 8),
    ),
    "itk": DatasetSpec(
        label="itk subject",
        sample="itk_t1",
        plane="coronal",
        spacing=None,  # native 128x128 at 2 mm
        size=None,
        calibration=SliceRange(10, 31, 6),
        evaluation=SliceRange(31, 56, 8),
    ),
}
#: Evaluation sets of the learned priors, which are trained on axial 128x128 slices at 1.8 mm:
#: the template's held-out slab, and axial slices of a different, real subject resampled to the
#: same grid.
PRIOR_EVAL_DATASETS: dict[str, DatasetSpec] = {
    "mni152": DATASETS["mni152"],
    "itk_axial": replace(  # the template's grid, another subject
        DATASETS["mni152"],
        label="itk subject (axial)",
        sample="itk_t1",
        calibration=SliceRange(40, 60, 4),
        evaluation=SliceRange(62, 92, 8),
    ),
}
#: Slice counts of a --quick run (calibration, evaluation).
QUICK_COUNTS = (2, 2)


@dataclass
class SliceSet:
    """Normalised ground-truth slices ``(N, 1, H, W)`` in [0, 1] scaling, with their indices."""

    calibration: torch.Tensor
    calibration_idx: list[int]
    evaluation: torch.Tensor
    evaluation_idx: list[int]


def load_dataset(spec: DatasetSpec, quick: bool) -> SliceSet:
    volume = prepare_volume(load_volume(sample_path(spec.sample)), spec.plane, spacing=spec.spacing, size=spec.size)
    scaling = percentile_scaling(volume.data, *spec.percentiles)
    slices = scaling.apply(volume_to_slices(volume.data, spec.plane))
    n_cal, n_eval = QUICK_COUNTS if quick else (spec.calibration.count, spec.evaluation.count)
    cal = select_slices(len(slices), spec.calibration.start, spec.calibration.stop, n_cal)
    ev = select_slices(len(slices), spec.evaluation.start, spec.evaluation.stop, n_eval)
    overlap = sorted(set(cal) & set(ev))
    if overlap:
        raise ValueError(f"dataset '{spec.label}': calibration and evaluation slices overlap at {overlap}")
    return SliceSet(slices[cal], cal, slices[ev], ev)


# --------------------------------------------------------------------------------------- tasks
TASKS: dict[str, dict[str, Any]] = {
    "mri4x": {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01},
    "mri8x": {"kind": "mri", "acceleration": 8, "noise_sigma": 0.01},
    "ct60": {"kind": "ct", "n_views": 60, "noise_sigma": 0.01},
    "deblur": {"kind": "blur", "blur_sigma": 1.5, "noise_sigma": 0.01},
    "inpaint50": {"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.01},
}


@dataclass
class TaskCase:
    """One (dataset, task) of a learned-prior benchmark: calibration and evaluation slices with
    their simulated measurements, and TV-PGD with lambda grid-tuned on each set."""

    data: str
    task: str
    physics: dinv.physics.Physics
    slices: SliceSet
    y_cal: torch.Tensor
    y: torch.Tensor
    tv_calibrated: Any  # GridSearchResult on the calibration slices
    tv_tuned_on_eval: Any  # GridSearchResult on the evaluation slices themselves

    def tv(self, lam: float, calibration: bool = False) -> torch.Tensor:
        """TV-PGD estimate (real image in [0, 1]) of the evaluation (or calibration) slices."""
        y = self.y_cal if calibration else self.y
        return from_physics_domain(TVPGD(lambda_tv=lam)(y, self.physics), self.physics).real.clamp(0, 1)


def task_cases(
    specs: dict[str, DatasetSpec],
    data_names: Sequence[str],
    tasks: dict[str, dict[str, Any]],
    task_names: Sequence[str],
    tv_grid: Sequence[float],
    quick: bool,
):
    """Yield a :class:`TaskCase` per (dataset, task), TV tuned both ways, on 128x128 slices."""
    for data_name in data_names:
        data = load_dataset(specs[data_name], quick)
        for task in task_names:
            physics = build_physics(tasks[task], (128, 128))
            y_cal = physics(to_physics_domain(data.calibration, physics))
            y = physics(to_physics_domain(data.evaluation, physics))
            case = TaskCase(data_name, task, physics, data, y_cal, y, None, None)
            case.tv_calibrated = grid_search(
                lambda lam: case.tv(lam, True), data.calibration, tv_grid, param="lambda_tv"
            )
            case.tv_tuned_on_eval = grid_search(case.tv, data.evaluation, tv_grid, param="lambda_tv")
            yield case


# ------------------------------------------------------------------------------------- methods
#: Log grid of TV weights for ``tv_pgd tuned`` (``--quick`` uses :data:`QUICK_TV_GRID`).
TV_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
QUICK_TV_GRID = (0.003, 0.01, 0.03)
N_ITER, QUICK_N_ITER = 100, 20


@dataclass
class BenchContext:
    """What a method builder may use. Calibration tensors are the only ground truth it sees.

    :param str task: task name (key of :data:`TASKS`); ``task_config`` its physics config.
    :param physics: the deepinv physics (on ``device``), shared by all methods of the task.
    :param torch.Tensor x_cal: calibration ground truth ``(N, 1, H, W)`` (CPU, [0, 1] scaling).
    :param torch.Tensor y_cal: their measurements (on ``device``), the same for every method.
    :param int n_iter: iteration budget of iterative solvers.
    :param tuple tv_grid: TV weights to try when tuning.
    :param dict notes: filled by the builder with what the row should report (chosen parameters).
    """

    task: str
    task_config: dict[str, Any]
    dataset: str
    physics: dinv.physics.Physics
    device: torch.device
    x_cal: torch.Tensor
    y_cal: torch.Tensor
    n_iter: int
    tv_grid: tuple[float, ...]
    notes: dict[str, Any] = field(default_factory=dict)

    def estimate(self, solver: dinv.models.Reconstructor, y: torch.Tensor) -> torch.Tensor:
        """``solver``'s reconstruction of ``y`` as a 1-channel CPU image (magnitude for MRI)."""
        with torch.no_grad():
            return from_physics_domain(solver(y, self.physics), self.physics).cpu()


MethodBuilder = Callable[[BenchContext], dinv.models.Reconstructor]
#: method name -> builder. Register new baselines / priors here (or with ``@register_method``).
METHODS: dict[str, MethodBuilder] = {}


def register_method(name: str) -> Callable[[MethodBuilder], MethodBuilder]:
    def decorate(builder: MethodBuilder) -> MethodBuilder:
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered")
        METHODS[name] = builder
        return builder

    return decorate


@register_method("pseudo_inverse")
def _pseudo_inverse(ctx: BenchContext) -> dinv.models.Reconstructor:
    return PseudoInverse()


@register_method("tv_pgd default")
def _tv_default(ctx: BenchContext) -> dinv.models.Reconstructor:
    ctx.notes["lambda_tv"] = DEFAULT_TV_LAMBDA
    return TVPGD(lambda_tv=DEFAULT_TV_LAMBDA, max_iter=ctx.n_iter)


@register_method("tv_pgd tuned")
def _tv_tuned(ctx: BenchContext) -> dinv.models.Reconstructor:
    start = time.perf_counter()
    result = grid_search(
        lambda lam: ctx.estimate(TVPGD(lambda_tv=lam, max_iter=ctx.n_iter), ctx.y_cal),
        ctx.x_cal,
        ctx.tv_grid,
        param="lambda_tv",
        metric="psnr",
    )
    ctx.notes.update(
        lambda_tv=result.best,
        lambda_at_grid_edge=result.best in (min(ctx.tv_grid), max(ctx.tv_grid)),
        tuning_metric=result.metric,
        tuning_table={str(k): v for k, v in result.table.items()},
        tuning_seconds=time.perf_counter() - start,
    )
    return TVPGD(lambda_tv=result.best, max_iter=ctx.n_iter)


# ------------------------------------------------------------------------------------- running
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA max allocated during evaluation"
    return "process peak RSS so far (high-water mark of the whole run)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class PeakRSS:
    """Largest increase of the process's resident memory (MiB) while the block runs, polled every
    5 ms in a thread (Linux ``/proc``; ``None`` elsewhere): unlike ``ru_maxrss``, one row's own
    use, not the high-water mark of the whole run."""

    def __enter__(self) -> PeakRSS:
        self.increase_mib: float | None = None
        self._stop = False
        self._base = self._rss()
        self._peak = self._base
        if self._base is not None:
            import threading

            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _rss() -> float | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20
        except OSError:
            return None

    def _poll(self) -> None:
        while not self._stop:
            self._peak = max(self._peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._stop = True
        if self._base is not None:
            self._thread.join()
            self.increase_mib = self._peak - self._base


def save_row(record: dict[str, Any], row: dict[str, Any], out: str, message: str | None) -> None:
    """Append ``row`` to ``record`` and rewrite ``out`` atomically, so that a crash keeps every
    finished row; then print ``message`` (progress) to stderr unless it is ``None``."""
    record["rows"].append(row)
    write_json_atomic(out, record)
    if message is not None:
        print(message, file=sys.stderr, flush=True)


def finish(record: dict[str, Any], out: str) -> dict[str, Any]:
    """Mark ``record`` complete and write it to ``out`` (atomically)."""
    record["complete"] = True
    write_json_atomic(out, record)
    return record


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def evaluate(
    solver: dinv.models.Reconstructor, ctx: BenchContext, x_eval: torch.Tensor, y_eval: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    """Reconstruct the evaluation slices in batches; time only the solver calls."""
    estimates, seconds = [], 0.0
    reset_peak_memory(ctx.device)
    with torch.no_grad(), PeakRSS() as rss:
        for batch in batched(list(range(len(x_eval))), batch_size):
            y = y_eval[batch]
            _sync(ctx.device)
            start = time.perf_counter()
            x_hat = solver(y, ctx.physics)
            _sync(ctx.device)
            seconds += time.perf_counter() - start
            estimates.append(from_physics_domain(x_hat, ctx.physics).cpu())
    peak = peak_memory_mib(ctx.device)
    metrics = image_metrics(torch.cat(estimates), x_eval)
    return {
        "psnr": _summary(metrics["psnr"]),
        "ssim": _summary(metrics["ssim"]),
        "nmse": _summary(metrics["nmse"]),
        "per_slice": metrics,
        "seconds_per_slice": seconds / len(x_eval),
        "peak_memory_mib": peak,
        "rss_increase_mib": rss.increase_mib,
    }


def run(args: argparse.Namespace, specs: dict[str, DatasetSpec] | None = None) -> dict[str, Any]:
    """Every (dataset, task, method) row; ``specs`` are the datasets (default :data:`DATASETS`)."""
    specs = DATASETS if specs is None else specs
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # power iterations (step sizes) draw random vectors
    n_iter = args.n_iter or (QUICK_N_ITER if args.quick else N_ITER)
    tv_grid = tuple(args.grid) if args.grid else (QUICK_TV_GRID if args.quick else TV_GRID)

    record: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "quick": args.quick,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "deepinv_tunable": __version__,
            "deepinv": dinv.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "n_iter": n_iter,
        "tv_grid": list(tv_grid),
        "default_tv_lambda": DEFAULT_TV_LAMBDA,
        "batch_size": args.batch_size,
        "peak_memory_kind": memory_kind(device),
        "datasets": {},
        "tasks": {t: TASKS[t] for t in args.tasks},
        "rows": [],
        "complete": False,
    }
    run_start = time.perf_counter()
    for data_name in args.data:
        spec = specs[data_name]
        data = load_dataset(spec, args.quick)
        record["datasets"][data_name] = {
            "label": spec.label,
            "sample": spec.sample,
            "plane": spec.plane,
            "spacing": spec.spacing,
            "size": list(data.evaluation.shape[-2:]),
            "calibration_slices": data.calibration_idx,
            "evaluation_slices": data.evaluation_idx,
            "percentiles": list(spec.percentiles),
        }
        img_size = tuple(data.evaluation.shape[-2:])
        for task in args.tasks:
            physics = build_physics(TASKS[task], img_size, device=device)
            # Measurements are simulated once per (dataset, task): every method sees the same y.
            y_cal = physics(to_physics_domain(data.calibration.to(device), physics))
            y_eval = physics(to_physics_domain(data.evaluation.to(device), physics))
            for method in args.methods:
                ctx = BenchContext(
                    task, TASKS[task], data_name, physics, device, data.calibration, y_cal, n_iter, tv_grid
                )
                solver = METHODS[method](ctx)
                result = evaluate(solver, ctx, data.evaluation, y_eval, args.batch_size)
                row = {
                    "method": method,
                    "task": task,
                    "data": spec.label,
                    "dataset": data_name,
                    **result,
                    "notes": ctx.notes,
                }
                record["wall_seconds"] = time.perf_counter() - run_start
                message = (
                    f"[{record['wall_seconds']:7.1f}s] {data_name} {task} {method}: "
                    f"PSNR {row['psnr']['mean']:.2f} dB {_notes_text(ctx.notes)}"
                )
                save_row(record, row, args.out, None if args.no_progress else message)
    record["wall_seconds"] = time.perf_counter() - run_start
    return finish(record, args.out)


# ------------------------------------------------------------------------------------- output
def _notes_text(notes: dict[str, Any]) -> str:
    if "lambda_tv" not in notes:
        return ""
    edge = ", grid edge" if notes.get("lambda_at_grid_edge") else ""
    return f"(lambda={notes['lambda_tv']:g}{edge})"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A reST ``list-table`` (for the docs) of ``header`` and string ``rows``."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [list(header)] + [list(r) for r in rows]:
        out.append("   * - " + cells[0])
        out += [f"     - {c}" for c in cells[1:]]
    return "\n".join(out) + "\n"


def markdown_table(record: dict[str, Any]) -> str:
    mem = (
        "peak memory (MiB, CUDA)"
        if record["device"].startswith("cuda")
        else "peak memory (MiB, process RSS high-water)"
    )
    header = ["method", "task", "data", "PSNR (dB)", "SSIM", "seconds/slice", mem]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    for r in record["rows"]:
        method = f"{r['method']} {_notes_text(r['notes'])}".strip()
        cells = [
            method,
            r["task"],
            r["data"],
            f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}",
            f"{r['ssim']['mean']:.3f} ± {r['ssim']['std']:.3f}",
            _fmt(r["seconds_per_slice"], 3),
            _fmt(r["peak_memory_mib"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_gap_table(record: dict[str, Any]) -> str:
    """Default vs tuned TV weight per (task, data), when both rows were run."""
    rows = {(r["method"], r["task"], r["data"]): r for r in record["rows"]}
    lines = []
    for (method, task, data), tuned in rows.items():
        default = rows.get(("tv_pgd default", task, data))
        if method != "tv_pgd tuned" or default is None:
            continue
        gap = tuned["psnr"]["mean"] - default["psnr"]["mean"]
        lines.append(
            f"| {task} | {data} | {default['notes']['lambda_tv']:g} | {default['psnr']['mean']:.2f} | "
            f"{tuned['notes']['lambda_tv']:g}{' (edge)' if tuned['notes'].get('lambda_at_grid_edge') else ''} | "
            f"{tuned['psnr']['mean']:.2f} | {gap:+.2f} |"
        )
    if not lines:
        return ""
    head = (
        "| task | data | default lambda | PSNR default | tuned lambda | PSNR tuned | gain (dB) |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    return head + "\n" + "\n".join(lines)
