"""The bundled volumes the benchmarks read: their calibration / evaluation slices, and the
(dataset, task) cases of the learned-prior studies with TV-PGD grid-tuned on each slice set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import deepinv as dinv
import torch

from deepinv_tunable.data import (
    load_volume,
    percentile_scaling,
    prepare_volume,
    sample_path,
    select_slices,
    volume_to_slices,
)
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import TVPGD
from deepinv_tunable.tuning import grid_search


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
