r"""Two parameters left to the data together: an outer parameter on a short grid, each value with
its inner parameter chosen by that parameter's own rule, the values ranked on held-out
measurements.

One parameter at a time (:func:`~deepinv_tunable.tuning.tuned.solve_tuned`) cannot express it:
each outer value needs its own inner value before the outer values can be compared. A solver that
offers such a pair implements ``joint_plan(names, y, physics, **kwargs)`` returning a
:class:`JointPlan` (its fits and held-out scores, computed its way); the engine here picks the
value with the lowest score, records the choice as one
:class:`~deepinv_tunable.tuning.select.ParameterChoice` and lets the plan finish the solve.
:class:`~deepinv_tunable.solvers.LatentMAPTV`'s ``(lambda_tv, beta)`` on MRI and CT is the one
user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .select import ParameterChoice


@dataclass
class JointPlan:
    """A call's joint choice of ``(inner, outer)``, as the solver measured it.

    :param str outer: the outer parameter's name.
    :param tuple grid: its candidate values (ties go to the smaller).
    :param list inner_choices: per value, the inner parameter's own choice.
    :param list scores: per value, its held-out score (lower is better).
    :param int n_splits: hold-outs behind each score.
    :param int extra_solves: solves beyond the other values' inner searches (final solves or refits).
    :param Callable finish: ``finish(index, choice)``: the call's reconstruction at the chosen value,
        with both choices in its ``choices``.
    :param tuple bounds: the outer parameter's own limits (a choice at them is not flagged).
    """

    outer: str
    grid: Sequence[float]
    inner_choices: list[ParameterChoice]
    scores: list[float]
    n_splits: int
    extra_solves: int
    finish: Callable[[int, ParameterChoice], object]
    bounds: tuple[float, float] = (0.0, 1.0)


def grid_choice(plan: JointPlan) -> tuple[int, ParameterChoice]:
    """``(index, choice)`` of the grid value with the lowest held-out score (ties to the smaller
    value), recorded as the outer parameter's choice under the splitting rule. Its solves are the
    other values' inner searches plus the plan's extra solves; the chosen value's own search is
    the inner choice's."""
    grid = list(plan.grid)
    best = min(range(len(grid)), key=lambda i: (plan.scores[i], grid[i]))
    others = [i for i in range(len(grid)) if i != best]
    chosen = plan.inner_choices[best]
    return best, ParameterChoice(
        name=plan.outer,
        value=grid[best],
        rule="splitting",
        tried=grid,
        scores=list(plan.scores),
        bounds=plan.bounds,
        at_bound=False,  # the grid spans the parameter's own limits
        sigma=chosen.sigma,
        sigma_estimated=chosen.sigma_estimated,
        n_solves=sum(plan.inner_choices[i].n_solves for i in others) + plan.extra_solves,
        seconds=sum(plan.inner_choices[i].seconds for i in others),
        n_splits=plan.n_splits,
    )


def solve_joint(solver, names: list[str], y: torch.Tensor, physics, kwargs: dict):
    """The call's reconstruction with ``names`` chosen together (``solver.joint_plan``); a solver
    without a plan for them refuses, naming them."""
    call = {key: value for key, value in kwargs.items() if key not in names}
    plan = getattr(solver, "joint_plan", lambda *a, **k: None)(names, y, physics, **call)
    if plan is None:
        raise ValueError(
            f"{type(solver).__name__}: {names} are all 'auto'; it chooses one parameter at a time "
            "from the measurements: set the others"
        )
    index, choice = grid_choice(plan)
    return plan.finish(index, choice)
