r"""One mechanism for ``"auto"``: a solver parameter chosen from the measurements alone.

Every solver of the package that has a parameter a user may leave to the data (TV's
:math:`\lambda`, DPIR's final level, PnP-HVAE's temperature, the latent size :math:`k`, the
generator weight of :class:`~deepinv_tunable.solvers.LatentMAPTV`) declares it in its
``tunable`` tuple and describes, per call, how a candidate value is solved
(:class:`TuningPlan`). :class:`Tuned` runs the search of :func:`~deepinv_tunable.tuning.select.select_parameter`
on that plan, finishes the solve at the chosen value and records the choice; a solver's
``"auto"`` is this wrapper, applied by the solver's own ``reconstruct``.
Wrapping explicitly changes the rule or the interval without touching the solver::

    Tuned(TVPGD(), "lambda_tv", rule="sure", bounds=(1e-3, 0.1))

For the latent size ``k`` of a tunable prior the candidates are a discrete set, each example
chooses its own, and the rules include the closed form of a linear generator; ``Tuned(solver,
"k", ks=...)`` runs :func:`~deepinv_tunable.tuning.latent_size.select_k` instead
(:class:`~deepinv_tunable.tuning.latent_size.AutoK` is that configuration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..solvers.base import Reconstruction, TunableReconstructor
from .rules import Solve
from .select import ParameterChoice, select_parameter


@dataclass
class TuningPlan:
    """How one call of a solver searches one of its parameters (returned by the solver's
    ``tuning_plan``).

    :param Callable candidate: ``candidate(value, y, physics, x_init)``, the estimate at one value
        (:data:`~deepinv_tunable.tuning.rules.Solve`).
    :param tuple bounds: the search interval.
    :param Callable finish: ``finish(choice)``: the call's :class:`~deepinv_tunable.solvers.base.Reconstruction`
        at the chosen value (the chosen candidate itself where it already is that solve).
    :param str rule: the solver's rule (``"auto"``: the physics' default).
    :param dict options: further keyword arguments of
        :func:`~deepinv_tunable.tuning.select.select_parameter` (search sizes, ``log``, ``sigma``, ...).
    :param bool sigma_estimated: the noise level the plan gives in ``options`` was estimated from
        ``y`` (recorded in the choice); ``None`` leaves the search's own record.
    """

    candidate: Solve
    bounds: tuple[float, float]
    finish: Callable[[ParameterChoice], Reconstruction]
    rule: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    sigma_estimated: bool | None = None


def requested_auto(solver: TunableReconstructor, kwargs: dict) -> list[str]:
    """The ``tunable`` parameters of ``solver`` left to the data in this call: ``"auto"`` in the
    call's keyword arguments, or in the solver's attribute of that name when the call does not
    set it (or passes ``None``). Another named value (DPIR's ``sigma="noise"``) is the solver's
    to resolve."""
    given = {name: kwargs.get(name) for name in solver.tunable}
    values = {name: getattr(solver, name) if given[name] is None else given[name] for name in solver.tunable}
    return [name for name, value in values.items() if isinstance(value, str) and value == "auto"]


def solve_tuned(
    solver: TunableReconstructor,
    name: str,
    y: torch.Tensor,
    physics,
    kwargs: dict,
    rule: str | None = None,
    bounds: tuple[float, float] | None = None,
    **options,
) -> Reconstruction:
    """Choose ``name`` for this call (``solver.tuning_plan``, ``rule`` and ``bounds`` overriding
    the plan's, ``options`` added to its search options) and return the solve at the chosen value
    with the choice in its ``choices``."""
    call = {key: value for key, value in kwargs.items() if key != name}
    plan = solver.tuning_plan(name, y, physics, **call)
    choice = select_parameter(
        plan.candidate,
        y,
        physics,
        plan.bounds if bounds is None else tuple(bounds),
        name=name,
        rule=plan.rule if rule is None else rule,
        **{**plan.options, **options},
    )
    if plan.sigma_estimated is not None:
        choice.sigma_estimated = plan.sigma_estimated
    out = plan.finish(choice)
    out.choices = {**out.choices, name: choice}
    return out


class Tuned(TunableReconstructor):
    r"""A solver with one parameter chosen per call from the measurements alone.

    ``Tuned(solver, name)`` is what ``name="auto"`` on the solver does; the wrapper also lets a
    user change the rule (``"discrepancy"``, ``"sure"``, ``"splitting"``), the search interval or
    the search options of any solver that declares ``name`` in its ``tunable`` parameters, and
    composes with deepinv like any :class:`~deepinv.models.Reconstructor`.

    :param solver: a :class:`~deepinv_tunable.solvers.base.TunableReconstructor`.
    :param str name: the parameter, one of ``solver.tunable`` (or ``"k"`` for a tunable prior's
        latent size, with ``ks``).
    :param str rule: the rule; default ``None``: the solver's own (``tune_rule``).
    :param tuple bounds: the search interval; default ``None``: the solver's own.
    :param list ks: ``name="k"`` only: the candidate latent sizes
        (:func:`~deepinv_tunable.tuning.latent_size.select_k`).
    :param options: further options of the search (:func:`~deepinv_tunable.tuning.select.select_parameter`,
        or :func:`~deepinv_tunable.tuning.latent_size.select_k` for ``k``).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> from deepinv_tunable.solvers import TVPGD
        >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> result = Tuned(TVPGD(max_iter=20), "lambda_tv", rule="discrepancy").reconstruct(physics(x), physics)
        >>> result.choices["lambda_tv"].rule, 3e-4 < result.parameters["lambda_tv"] < 0.3
        ('discrepancy', True)
    """

    def __init__(
        self,
        solver: TunableReconstructor,
        name: str,
        rule: str | None = None,
        bounds: tuple[float, float] | None = None,
        ks: Sequence[int] | None = None,
        **options,
    ):
        super().__init__()
        if not isinstance(solver, TunableReconstructor):
            raise TypeError(f"solver must be a TunableReconstructor, got {type(solver).__name__}")
        if name == "k":
            if ks is None:
                raise ValueError("Tuned(solver, 'k') needs the candidate latent sizes ks=[...]")
        elif name not in solver.tunable:
            raise ValueError(
                f"{type(solver).__name__} has no parameter {name!r} to tune; it declares {list(solver.tunable)}"
            )
        if bounds is not None and not (len(bounds) == 2 and float(bounds[0]) < float(bounds[1])):
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        self.solver, self.name, self.rule, self.bounds, self.options = solver, name, rule, bounds, options
        self.ks = None if ks is None else list(ks)
        self.stochastic = solver.stochastic
        self.gaussian_noise = solver.gaussian_noise
        self.unit_range = solver.unit_range

    def compute_dtype(self) -> torch.dtype:
        return self.solver.compute_dtype()

    def _solve(self, y, physics, **kwargs) -> Reconstruction:
        if self.name == "k":
            from .latent_size import select_k

            rule = "auto" if self.rule is None else self.rule
            options = dict(self.options)
            if kwargs:  # the call's own keywords reach every candidate solve
                options["solve_kwargs"] = {**(options.get("solve_kwargs") or {}), **kwargs}
            sel = select_k(self.solver, y, physics, self.ks, rule=rule, **options)
            result = sel.reconstruction
            result.extras = {**result.extras, "k_scores": sel.table, "k_rule": sel.rule}
            return result
        return solve_tuned(self.solver, self.name, y, physics, kwargs, self.rule, self.bounds, **self.options)
