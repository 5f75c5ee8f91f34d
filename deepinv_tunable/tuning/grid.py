r"""Grid search of one solver parameter on calibration images with ground truth.

Baselines must be tuned before they are compared with a learned method: on real brain
slices an untuned TV weight can lose several dB. The calibration images must be disjoint from
the ones a result is reported on; the recipe runner enforces that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from ..utils.metrics import image_metrics
from ..utils.progress import progress_bar
from .select import ParameterChoice

#: the former name of a grid's result, now the one result type :class:`~deepinv_tunable.tuning.select.ParameterChoice`
GridSearchResult = ParameterChoice


def grid_search(
    reconstruct: Callable[[float], torch.Tensor],
    reference: torch.Tensor,
    grid: Sequence[float],
    param: str = "lambda",
    metric: str = "psnr",
    progress: bool | None = None,
) -> ParameterChoice:
    r"""Evaluate ``reconstruct(value)`` for every value of ``grid`` against ``reference``; the
    result (:class:`~deepinv_tunable.tuning.select.ParameterChoice`, rule ``"ground truth"``) has the
    best value in ``best`` and ``{value: mean metric}`` in ``table``.

    :param Callable reconstruct: maps a parameter value to a ``(B, 1, H, W)`` estimate.
    :param torch.Tensor reference: ground truth of the calibration images.
    :param list grid: values to try (at least one): numbers, or tuples (or lists) of numbers to tune
        several parameters jointly (``reconstruct`` then receives the tuple).
    :param str param: parameter name, for the record.
    :param str metric: ``"psnr"`` or ``"ssim"`` (higher is better) or ``"nmse"`` (lower is better).
    :param bool progress: a tqdm bar over the grid. Default ``None``: only on a terminal.

    >>> ref = torch.ones(1, 1, 16, 16)
    >>> grid_search(lambda v: ref * v, ref, [0.5, 0.9, 1.2]).best
    0.9
    >>> grid_search(lambda ab: ref * ab[0] * ab[1], ref, [(0.5, 2.0), (0.5, 1.0)]).best
    (0.5, 2.0)
    """
    if len(grid) == 0:
        raise ValueError("grid must hold at least one value")
    if metric not in ("psnr", "ssim", "nmse"):
        raise ValueError(f"metric must be 'psnr', 'ssim' or 'nmse', got '{metric}'")
    start = time.perf_counter()
    table = {}
    for value in progress_bar(grid, progress, desc=f"tuning {param} ({metric})", leave=False):
        value = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)
        scores = image_metrics(reconstruct(value), reference)[metric]
        table[value] = sum(scores) / len(scores)
    higher_is_better = metric != "nmse"
    best = (max if higher_is_better else min)(table, key=table.get)
    scalar = not isinstance(best, tuple)
    bounds = (min(table), max(table)) if scalar else None
    return ParameterChoice(
        name=param,
        value=best,
        rule="ground truth",
        tried=list(table),
        scores=list(table.values()),
        bounds=bounds,
        at_bound=scalar and len(table) > 1 and best in bounds,
        sigma=None,
        sigma_estimated=False,
        n_solves=len(table),
        seconds=time.perf_counter() - start,
        higher_is_better=higher_is_better,
        metric=metric,
    )
