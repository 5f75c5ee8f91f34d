"""Choosing one scalar solver parameter from the measurements: the search over candidates, the
rule's scores, the bound check, and the record of the choice (:class:`ParameterChoice`)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..physics import (
    resolve_sigma,
)
from ..utils.progress import progress_bar
from .holdout import HOLDOUT_FRACTION, LINE_HOLDOUT_FRACTION, kept_fraction
from .rules import RULES, Solve, Start, _Scorer, default_rule, discrepancy_factor
from .search import MINIMUM_SEARCH, ROOT_SEARCH, _search


@dataclass
class ParameterChoice:
    """A parameter chosen by any of the package's choosers, the one result type: from the
    measurements by :func:`select_parameter` (a solver's ``"auto"``), by the hold-out residual of
    :func:`~deepinv_tunable.tuning.k_rules.measurement_splitting_k`, or against ground truth by
    :func:`~deepinv_tunable.tuning.grid.grid_search` and :func:`~deepinv_tunable.tuning.k_rules.sweep_k`
    (oracle rows of a benchmark, never a default). ``best``, ``param`` and ``table`` read it
    as a grid (value, name, ``{candidate: score}``).

    :param str name: parameter name (``"lambda_tv"``, ``"tau"``, ...).
    :param float value: the chosen value.
    :param str rule: ``"discrepancy"``, ``"sure"``, ``"splitting"`` or ``"ground truth"``.
    :param list tried: every candidate, in the order tried (numbers, or tuples of numbers for a
        joint grid).
    :param list scores: the score of each candidate (lower is better unless ``higher_is_better``).
    :param tuple bounds: the search interval (``None`` for a joint grid).
    :param bool at_bound: the choice is the lowest or highest point of the search interval (the
        best of every candidate, refinements included): the best value may lie outside it.
    :param float sigma: noise std used by the rule (``None`` where none was used).
    :param bool sigma_estimated: ``sigma`` was estimated from ``y`` (the physics did not state it).
    :param int n_solves: solver calls spent on the choice.
    :param float seconds: wall time of the choice.
    :param torch.Tensor estimate: the candidate's estimate of the full problem at the chosen value
        (discrepancy and SURE solve the full problem; ``None`` under splitting), so a solver whose
        candidates match its final solve can return it without solving again.
    :param int n_splits: disjoint hold-outs the splitting score summed over (1 for the other rules).
    :param list resolved: what was done about a first choice at a bound of its interval (the
        search widened beyond it, another rule used), in order; empty when nothing was needed.
    :param bool higher_is_better: the scores are a quality (PSNR, SSIM), not an error. Default False.
    :param str metric: the ground-truth metric of an oracle grid (``None`` for the other rules).
    :param reconstruction: the solver's :class:`~deepinv_tunable.solvers.Reconstruction` at the
        chosen value, where the chooser makes one (:func:`~deepinv_tunable.tuning.latent_size.select_k`).
    :param dict split_scores: splitting with several hold-outs, per example: ``candidate -> (J, B)``
        held-out score of each hold-out, from which the one-standard-error rule chose (``scores``
        hold their sum). ``None`` otherwise.

    A choice made per example (:func:`~deepinv_tunable.tuning.latent_size.select_k`) holds a
    ``(B,)`` tensor in ``value`` and one ``(B,)`` tensor per candidate in ``scores``.

    >>> choice = ParameterChoice("lambda", 0.01, "ground truth", [0.001, 0.01], [30.1, 31.2], (0.001, 0.01),
    ...                          True, None, False, 2, 0.5, higher_is_better=True, metric="psnr")
    >>> choice.best, choice.param, choice.table
    (0.01, 'lambda', {0.001: 30.1, 0.01: 31.2})
    """

    name: str
    value: float | tuple[float, ...]
    rule: str
    tried: list
    scores: list[float]
    bounds: tuple[float, float] | None
    at_bound: bool
    sigma: float | None
    sigma_estimated: bool
    n_solves: int
    seconds: float
    estimate: torch.Tensor | None = field(default=None, repr=False)
    n_splits: int = 1
    resolved: list[str] = field(default_factory=list)
    higher_is_better: bool = False
    metric: str | None = None
    reconstruction: object | None = field(default=None, repr=False)
    split_scores: dict | None = field(default=None, repr=False)

    @property
    def best(self) -> float | tuple[float, ...]:
        """The chosen value (a grid's name for it)."""
        return self.value

    @property
    def param(self) -> str:
        """The parameter's name (a grid's name for it)."""
        return self.name

    @property
    def table(self) -> dict:
        """``{candidate: score}`` in the order tried."""
        return dict(zip(self.tried, self.scores))

    def curve(self) -> tuple[list[float], list[float]]:
        """The candidates sorted by value and their scores, for a plot of the score curve."""
        pairs = sorted(zip(self.tried, self.scores))
        return [p for p, _ in pairs], [s for _, s in pairs]

    def as_dict(self) -> dict:
        """JSON-ready record (``metrics.json``, reports)."""
        values, scores = self.curve()
        return {
            "name": self.name,
            "value": _plain(self.value),
            "rule": self.rule,
            "bounds": None if self.bounds is None else list(self.bounds),
            "at_bound": self.at_bound,
            "sigma": self.sigma,
            "sigma_estimated": self.sigma_estimated,
            "n_solves": self.n_solves,
            "n_splits": self.n_splits,
            "seconds": self.seconds,
            "curve": {"values": values, "scores": [_plain(score) for score in scores]},
            "resolved": list(self.resolved),
        }


def _plain(value):
    """A tensor as a (nested) list for JSON; anything else as is."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


def select_parameter(
    solve: Solve,
    y: torch.Tensor,
    physics,
    bounds: tuple[float, float],
    *,
    resolve_bounds: bool = True,
    warn: bool = True,
    **options,
) -> ParameterChoice:
    r"""Choose one scalar parameter of a solver from the measurements alone (:func:`search_parameter`,
    whose keyword arguments ``options`` are), and do not return a choice at a bound of the search
    interval without trying to resolve it: with ``resolve_bounds`` and a log-scale search (a
    positive weight or level; a linear search's domain is bounded), a first choice at an edge
    (not a ``hard_bounds`` one) is searched again over the interval of the same log-width beyond
    that edge; if the best of both searches is still at the outer edge and the rule is not the
    discrepancy principle, the discrepancy principle (a root, not a minimum: it cannot run to an
    edge of a score that keeps falling) chooses over the original interval instead. What was done
    is recorded in the choice's ``resolved``; a choice still at a bound after that is returned
    with ``at_bound`` and a warning (``warn``).

    On unseen 8x MRI the splitting rule's score kept falling with the TV weight and ended at its
    upper bound, at the zero-filled image's PSNR; these steps exist for such cases.

    >>> from deepinv_tunable.physics import build_physics
    >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
    >>> y = physics(torch.full((1, 1, 32, 32), 0.5))
    >>> shrink = lambda a, y, physics, x0: a * y + (1 - a) * y.mean()
    >>> choice = select_parameter(shrink, y, physics, (0.6, 1.0), rule="discrepancy", tau=0.25, n_refine=8)
    >>> round(choice.value, 1), choice.at_bound, choice.resolved[0].startswith("widened")
    (0.5, False, True)

    (The planted crossing at 0.5 lies below the interval; the search beyond its lower edge, over
    (0.36, 0.6), finds it.)
    """
    choice = search_parameter(solve, y, physics, bounds, **options)
    # on a linear scale the parameter has a bounded domain (a temperature, a mixing weight in
    # [0, 1]) that a search cannot step out of: such a choice is flagged, not widened
    if choice.at_bound and resolve_bounds and options.get("log", True):
        choice = _resolve_bound(choice, solve, y, physics, options)
    if warn and choice.at_bound:
        warnings.warn(
            f"{choice.name} = {choice.value:.4g} chosen by the {choice.rule} rule sits at a bound of the search "
            f"interval {choice.bounds}"
            + (f" after {'; '.join(choice.resolved)}" if choice.resolved else "")
            + ": the best value may lie outside it",
            RuntimeWarning,
            stacklevel=2,
        )
    return choice


def _resolve_bound(choice: ParameterChoice, solve: Solve, y, physics, options: dict) -> ParameterChoice:
    """:func:`select_parameter`'s steps for a first choice at a bound (see there)."""
    log = options.get("log", True)
    low, high = choice.bounds
    at_low = choice.value <= min(choice.tried)
    if log:
        beyond = (low * low / high, low) if at_low else (high, high * high / low)
    else:
        beyond = (low - (high - low), low) if at_low else (high, high + (high - low))
    if log and beyond[0] <= 0:
        return choice
    further = search_parameter(solve, y, physics, beyond, **options)
    union = (min(low, beyond[0]), max(high, beyond[1]))
    best = further if min(further.scores) < min(choice.scores) else choice
    outer = (best is further) and further.at_bound and (further.value <= min(further.tried)) == at_low
    merged = dataclasses.replace(
        best,
        tried=choice.tried + further.tried,
        scores=choice.scores + further.scores,
        bounds=union,
        at_bound=outer,
        n_solves=choice.n_solves + further.n_solves,
        seconds=choice.seconds + further.seconds,
        resolved=[f"widened to {tuple(round(v, 6) for v in union)} from {tuple(round(v, 6) for v in (low, high))}"],
    )
    if not merged.at_bound or merged.rule == "discrepancy":
        return merged
    other = search_parameter(solve, y, physics, (low, high), **{**options, "rule": "discrepancy"})
    if other.at_bound:
        return merged
    return dataclasses.replace(
        other,
        n_solves=merged.n_solves + other.n_solves,
        seconds=merged.seconds + other.seconds,
        resolved=[
            *merged.resolved,
            f"the {merged.rule} rule's score kept falling to {merged.value:.4g} at the edge: the discrepancy rule chose",
        ],
    )


def _search_settings(
    physics, rule: str, bounds, n_splits, n_coarse: int | None, n_refine: int | None, log: bool, tau: float | None
) -> tuple[str, float, float, int, int, float]:
    """:func:`search_parameter`'s arguments checked, with their defaults resolved for ``physics``:
    ``(rule, low, high, n_coarse, n_refine, tau)``."""
    if rule == "auto":
        rule = default_rule(physics)
    if rule not in RULES:
        raise ValueError(f"rule must be 'auto' or one of {RULES}, got {rule!r}")
    try:
        low, high = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be (low, high), got {bounds!r}") from None
    if not (low < high and (low > 0 or not log)):
        raise ValueError(f"bounds must satisfy {'0 < ' if log else ''}low < high, got {bounds!r}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    default_coarse, default_refine = ROOT_SEARCH if rule == "discrepancy" else MINIMUM_SEARCH
    n_coarse = default_coarse if n_coarse is None else int(n_coarse)
    n_refine = default_refine if n_refine is None else int(n_refine)
    if n_coarse < 1 or n_refine < 0:
        raise ValueError(f"n_coarse must be >= 1 and n_refine >= 0, got {n_coarse} and {n_refine}")
    if tau is None:
        tau = discrepancy_factor(physics)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return rule, low, high, n_coarse, n_refine, tau


def _searched(
    scorer: _Scorer, name: str, rule: str, low, high, n_coarse: int, n_refine: int, log: bool, progress
) -> tuple[list[float], list[float], list[float]]:
    """The scalar search of ``scorer``'s score with a progress bar over its solves: the values
    tried, their scores and the coarse grid."""
    total = n_coarse + (n_refine if n_coarse > 1 else 0)
    with progress_bar(
        total=total, progress=progress, desc=f"choosing {name} ({rule})", unit="solve", leave=False
    ) as bar:

        def scored(value: float) -> float:
            score = scorer(value)
            bar.update(1)
            return score

        signed = scorer.log_ratio.get if rule == "discrepancy" else None
        tried, scores, grid = _search(scored, low, high, n_coarse, n_refine, log, signed)
    return tried, scores, grid


def _best_choice(
    name: str,
    rule: str,
    tried: list[float],
    scores: list[float],
    grid: list[float],
    bounds: tuple[float, float],
    can_flag: bool,
    hard_bounds: tuple[bool, bool],
    data_scaled: bool,
    y: torch.Tensor,
    scorer: _Scorer,
    sigma_estimated: bool,
    began: float,
) -> ParameterChoice:
    """The best scored candidate of a search, as the record of the choice."""
    best = min(range(len(tried)), key=lambda i: (scores[i], tried[i]))
    value = tried[best]
    # a bound is suspect only if it beats every refined candidate too (an edge whose neighbourhood
    # holds a better interior point has its optimum inside), and only if it is not the
    # parameter's own limit
    edge = 0 if value == grid[0] else 1 if value == grid[-1] else None
    at_bound = can_flag and edge is not None and not hard_bounds[edge]
    if data_scaled and rule == "splitting":
        value *= kept_fraction(y, scorer.keep)
    choice = ParameterChoice(
        name=name,
        value=value,
        rule=rule,
        tried=tried,
        scores=scores,
        bounds=bounds,
        at_bound=at_bound,
        sigma=scorer.sigma,
        sigma_estimated=sigma_estimated,
        n_solves=scorer.n_solves,
        seconds=time.perf_counter() - began,
        estimate=None if rule == "splitting" else scorer.fit_estimates[0].get(value),
        n_splits=scorer.n_splits,
    )
    return choice


def search_parameter(
    solve: Solve,
    y: torch.Tensor,
    physics,
    bounds: tuple[float, float],
    *,
    name: str = "param",
    rule: str = "auto",
    sigma: float | None = None,
    tau: float | None = None,
    holdout_fraction: float = HOLDOUT_FRACTION,
    line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    n_splits: int = 1,
    n_coarse: int | None = None,
    n_refine: int | None = None,
    log: bool = True,
    seed: int = 0,
    warm_start: bool = False,
    start: Start | None = None,
    hard_bounds: tuple[bool, bool] = (False, False),
    data_scaled: bool = False,
    progress: bool | None = None,
) -> ParameterChoice:
    r"""One search for a scalar parameter of a solver from the measurements alone (what
    :func:`select_parameter` runs, once or a few times).

    Minimises the rule's score :math:`S(p)` (see the module docstring) over ``bounds``: ``n_coarse``
    log-spaced candidates (strongest first), then ``n_refine`` refinement steps: golden section
    between the best candidate's neighbours for SURE and splitting, whose scores have a minimum;
    safeguarded inverse-quadratic root steps for the discrepancy principle, whose residual ratio is monotone in a
    regularisation parameter, so its target is a root. One value is chosen
    for the whole batch (e.g. a few slices of one volume, then applied to all of it); call once
    per example for per-slice values. Cost: ``n_coarse + n_refine`` solves (twice that for SURE,
    ``n_splits`` times that for splitting); the discrepancy principle walks its grid out from the
    middle and stops at the first cell that brackets the target, so a residual that grows with the
    parameter (a regularisation weight) costs ``2 + n_refine`` solves when the root lies in a cell
    next to the middle, as it does with the default 3-point grid.

    :param Callable solve: ``solve(value, y, physics, x_init) -> x`` in ``physics``' image domain.
        Under ``"splitting"`` it receives :func:`~deepinv_tunable.tuning.holdout.masked_physics` (on real single-channel images).
    :param torch.Tensor y: measurements.
    :param deepinv.physics.LinearPhysics physics: forward operator.
    :param tuple bounds: ``(low, high)`` search interval, ``0 < low < high`` when ``log``.
    :param str name: parameter name, for the record.
    :param str rule: ``"auto"`` (:func:`~deepinv_tunable.tuning.rules.default_rule`), ``"discrepancy"``, ``"sure"`` or ``"splitting"``.
    :param float sigma: noise std (default: the physics', else estimated from ``y``).
    :param float tau: discrepancy safety factor. Default :func:`~deepinv_tunable.tuning.rules.discrepancy_factor` of ``physics``
        (1.0 for blur, 1.1 otherwise).
    :param float holdout_fraction: splitting hold-out fraction. Default :data:`~deepinv_tunable.tuning.holdout.HOLDOUT_FRACTION`.
    :param float line_holdout_fraction: the same on Cartesian MRI, in sampled lines. Default
        :data:`~deepinv_tunable.tuning.holdout.LINE_HOLDOUT_FRACTION`.
    :param int n_splits: splitting sums the held-out score over this many disjoint hold-outs
        (capped at as many as fit, recorded in ``n_splits`` of the choice). Several smaller
        hold-outs leave the fit closer to the full problem than one large one, at the same
        variance: a single 30 % line hold-out turns 4x MRI into about 5.7x and so leans towards
        a stronger prior. Default 1 (cost: ``n_splits`` solves per candidate).
    :param int n_coarse: coarse grid size (>= 1). Default :data:`~deepinv_tunable.tuning.search.ROOT_SEARCH` ``(3, 2)`` for the
        discrepancy principle (usually 4 solves: the grid's middle, the neighbour on the root's
        side, 2 root steps), and :data:`~deepinv_tunable.tuning.search.MINIMUM_SEARCH` ``(5, 3)`` for the other rules.
    :param int n_refine: refinement evaluations (default: see ``n_coarse``).
    :param bool log: search on a log scale. Default True.
    :param int seed: seeds the hold-out split and SURE's probe: the same seed, the same choice.
    :param bool warm_start: start each candidate from the nearest candidate's estimate. Default
        ``False``: in under-sampled problems the null-space content of a weakly regularised
        estimate is whatever it started from, so warm starts make weak candidates inherit the
        strong ones' smoothness and the score no longer tells them apart (seen with TV on 4x MRI).
    :param Callable start: ``start(y, physics) -> x``: one shared start per fit problem (the full
        problem, or each hold-out), computed once and given to every candidate as ``x_init``
        (counted in ``n_solves``); overrides ``warm_start``. For a slowly converging iteration a
        pilot solve at a middle value lets candidates of a few iterations reach their own
        estimates instead of being scored on how fast each leaves a cold start: PnP-HVAE's
        20-iteration candidates from the zero-filled image favoured a colder temperature at 8x
        MRI than their converged solves did. Every candidate still starts from the same point,
        so none inherits another's estimate. Default ``None``.
    :param tuple hard_bounds: ``(low, high)``: whether each bound is the parameter's own limit
        (a temperature cannot exceed 1): a choice there is then the constrained optimum, not a sign
        that the interval is too narrow, and is not flagged ``at_bound``. Default ``(False, False)``.
    :param bool data_scaled: the parameter weighs a regulariser against the data term
        :math:`\tfrac12\|Ax - y\|^2` (TV's :math:`\lambda`). The splitting fit's data term sums over
        a fraction :math:`\rho` of the entries only, so the same weight regularises it
        :math:`1/\rho` times harder; the choice is rescaled by :math:`\rho` for the full data.
        Default False (temperatures, noise levels).
    :param bool progress: a tqdm bar over the candidates (``n_coarse + n_refine``). Default
        ``None``: only on a terminal.
    :return: :class:`ParameterChoice`.

    >>> from deepinv_tunable.physics import build_physics
    >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
    >>> y = physics(torch.full((1, 1, 32, 32), 0.5))
    >>> shrink = lambda a, y, physics, x0: a * y + (1 - a) * y.mean()  # planted: residual grows with 1 - a
    >>> choice = search_parameter(shrink, y, physics, (0.01, 1.0), rule="discrepancy", tau=0.25, n_refine=8)
    >>> round(choice.value, 1)  # ||(1 - a)(y - mean)||^2 = tau m sigma^2 at 1 - a = 0.5
    0.5
    """
    rule, low, high, n_coarse, n_refine, tau = _search_settings(
        physics, rule, bounds, n_splits, n_coarse, n_refine, log, tau
    )
    began = time.perf_counter()
    sigma_value, estimated = resolve_sigma(y, physics, sigma)
    scorer = _Scorer(
        rule,
        solve,
        y,
        physics,
        sigma_value,
        tau,
        holdout_fraction,
        seed,
        warm_start,
        n_splits,
        line_holdout_fraction,
        start,
    )
    tried, scores, grid = _searched(scorer, name, rule, low, high, n_coarse, n_refine, log, progress)
    can_flag = n_coarse > 2
    return _best_choice(
        name, rule, tried, scores, grid, (low, high), can_flag, hard_bounds, data_scaled, y, scorer, estimated, began
    )


def heldout_scores(
    solve: Solve,
    candidates,
    y: torch.Tensor,
    physics,
    seed: int = 0,
    n_splits: int = 1,
) -> tuple[list[float], int]:
    r"""The splitting rule's score of each of ``candidates`` (any values ``solve`` accepts), and the
    number of solves: each candidate fits the kept entries of the hold-outs of :func:`~deepinv_tunable.tuning.holdout.split_keeps`
    (``seed``, default fractions) through :func:`~deepinv_tunable.tuning.holdout.masked_physics` and is scored on the held-out ones,
    exactly as :func:`select_parameter` scores a value. For choices that are not a search over
    one interval: a few discrete configurations of a solver, each with its own other parameters.

    >>> from deepinv_tunable.physics import build_physics
    >>> physics = build_physics({"kind": "inpainting", "keep_fraction": 0.8, "noise_sigma": 0.01}, (16, 16))
    >>> y = physics(torch.full((1, 1, 16, 16), 0.5))
    >>> scores, n_solves = heldout_scores(lambda c, y_, ph_, x0: torch.full_like(y_, c), [0.5, 0.0], y, physics)
    >>> scores[0] < scores[1], n_solves  # the constant 0.5 predicts the held-out pixels
    (True, 2)
    """
    # sigma and tau only enter the discrepancy and SURE scores
    scorer = _Scorer("splitting", solve, y, physics, 0.0, 1.0, HOLDOUT_FRACTION, seed, False, n_splits)
    return [scorer(c) for c in candidates], scorer.n_solves


def auto_requested(value) -> bool:
    """Whether a solver parameter asks for automatic selection (the string ``"auto"``)."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"expected a number or 'auto', got {value!r}")
        return True
    return False
