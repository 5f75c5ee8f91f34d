"""The method registry of the benchmark tables and its classical baselines (``pseudo_inverse``,
``tv_pgd default``, ``tv_pgd tuned``).

Adding a method: register a builder in :data:`METHODS` (see :func:`register_method`). A builder
receives a :class:`BenchContext` (physics, task config, calibration data, iteration budget)
and returns a deepinv ``Reconstructor``; anything worth reporting (a chosen parameter) goes in
``ctx.notes``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import deepinv as dinv
import torch

from deepinv_tunable.physics import from_physics_domain
from deepinv_tunable.solvers import DEFAULT_TV_LAMBDA, TVPGD, PseudoInverse
from deepinv_tunable.tuning import grid_search

#: Log grid of TV weights for ``tv_pgd tuned`` (``--quick`` uses :data:`QUICK_TV_GRID`).
TV_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
QUICK_TV_GRID = (0.003, 0.01, 0.03)
N_ITER, QUICK_N_ITER = 100, 20


@dataclass
class BenchContext:
    """What a method builder may use. Calibration tensors are the only ground truth it sees.

    :param str task: the task's row label in the study's task table (``benchmarks.tasks``);
        ``task_config`` its physics config.
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
