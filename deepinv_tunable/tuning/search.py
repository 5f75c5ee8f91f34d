"""Scalar search over a log-scaled interval: a coarse grid, then golden-section refinement of a
minimum or root steps towards a target."""

from __future__ import annotations

import math
from collections.abc import Callable

#: ``(n_coarse, n_refine)`` of the discrepancy principle's search: a 3-point log grid (its middle
#: first, then the end its sign points to), then 2 safeguarded inverse-quadratic steps towards the
#: root of its monotone log residual ratio: 4 solves where the residual grows with the parameter.
ROOT_SEARCH = (3, 2)


#: ``(n_coarse, n_refine)`` of SURE's and splitting's search: a 5-point grid, then 3 golden-section
#: steps towards the minimum of a noisy score.
MINIMUM_SEARCH = (5, 3)


# ----------------------------------------------------------------------------------------- search
_GOLDEN = (math.sqrt(5) - 1) / 2


def _search(
    score: Callable[[float], float],
    low: float,
    high: float,
    n_coarse: int,
    n_refine: int,
    log: bool,
    signed: Callable[[float], float] | None = None,
) -> tuple[list[float], list[float], list[float]]:
    """Coarse grid over ``[low, high]`` then ``n_refine`` refinement steps. Returns
    ``(tried, scores, grid)``: every evaluated value in order with its score, and the coarse grid
    (ascending; with ``signed`` not all of it need have been evaluated).

    Without ``signed``: the whole grid, from ``high`` down to ``low`` (with warm starts a
    continuation path), then golden-section steps inside the best grid point's two cells (a minimum).
    With ``signed`` (a tried value's signed score, e.g. the discrepancy's log ratio, whose
    zero is the target and ``score`` its magnitude; positive where the parameter is too large, as
    a residual that grows with the regularisation): the grid is walked out from its middle point,
    towards smaller values where the middle's sign is positive, and stops at the first cell where
    the sign changes; :func:`_root_steps` then work inside it. A root of a smooth monotone curve is
    pinned in 2 steps to a precision that golden section needs 5 or more to reach, and a 3-point
    grid costs 2 solves instead of 3 whenever the first step brackets the root. Where no cell
    brackets it (the target is never met inside the interval, or the curve is not monotone), the
    rest of the grid is evaluated and golden section minimises the magnitude instead: the
    candidate that comes closest to the target."""
    fwd = (lambda v: math.log(v)) if log else (lambda v: v)
    inv = (lambda t: math.exp(t)) if log else (lambda t: t)
    a, b = fwd(low), fwd(high)
    grid = [inv(a + (b - a) * i / (n_coarse - 1)) for i in range(n_coarse)] if n_coarse > 1 else [inv((a + b) / 2)]
    tried, scores = [], []

    def evaluate(v: float) -> float:
        s = score(v)
        if not math.isfinite(s):
            s = math.inf
        tried.append(v)
        scores.append(s)
        return s

    if signed is not None and n_coarse > 2:
        span = _bracket(evaluate, signed, grid)
        if span is not None and (
            span[0] == span[1] or _root_steps(evaluate, signed, grid[span[0] : span[1] + 1], fwd, inv, n_refine)
        ):
            return tried, scores, grid
    # strongest regularisation first: with warm starts the sweep is then a continuation path
    for v in reversed(grid):
        if v not in tried:
            evaluate(v)
    if signed is not None and _root_steps(evaluate, signed, grid, fwd, inv, n_refine):
        return tried, scores, grid
    score_of = dict(zip(tried, scores))
    best = min(range(n_coarse), key=lambda i: (score_of[grid[i]], -i))
    lo, hi = fwd(grid[max(best - 1, 0)]), fwd(grid[min(best + 1, n_coarse - 1)])
    if n_refine > 0 and hi > lo:
        c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        fc, fd = evaluate(inv(c)), evaluate(inv(d)) if n_refine > 1 else math.inf
        for _ in range(n_refine - 2):
            if fc <= fd:
                hi, d, fd = d, c, fc
                c = hi - _GOLDEN * (hi - lo)
                fc = evaluate(inv(c))
            else:
                lo, c, fc = c, d, fd
                d = lo + _GOLDEN * (hi - lo)
                fd = evaluate(inv(d))
    return tried, scores, grid


def _bracket(
    evaluate: Callable[[float], float], signed: Callable[[float], float], grid: list[float]
) -> tuple[int, int] | None:
    """Walk the ascending ``grid`` out from its middle point, one point at a time, towards the side
    its signed score points to (smaller values where it is positive), until two neighbours differ
    in sign: their indices ``(i, i + 1)`` (``(i, i)`` where a point meets the target exactly);
    ``None`` if the walk reaches the end of the grid first (or a score is not finite)."""
    i = (len(grid) - 1) // 2
    evaluate(grid[i])
    f = signed(grid[i])
    if f is None or not math.isfinite(f):
        return None
    if f == 0:
        return (i, i)
    step = -1 if f > 0 else 1
    while 0 <= i + step < len(grid):
        j = i + step
        evaluate(grid[j])
        g = signed(grid[j])
        if g is None or not math.isfinite(g):
            return None
        if g * f <= 0:
            return (min(i, j), max(i, j))
        i, f = j, g
    return None


def _root_steps(
    evaluate: Callable[[float], float],
    signed: Callable[[float], float],
    grid: list[float],
    fwd: Callable[[float], float],
    inv: Callable[[float], float],
    n_steps: int,
) -> bool:
    """``n_steps`` evaluations towards a root of ``signed``, in the search coordinate ``fwd(value)``.

    The evaluated ``grid`` (ascending) brackets a sign change in some cell (of several, the cell
    whose ends lie closest to zero); without one nothing is evaluated and ``False`` returned.
    Each step takes the inverse quadratic interpolation through the three points with the
    smallest ``|signed|`` so far (a
    log residual curve is convex over a decade, where a secant through the cell's ends creeps in
    from one side), and bisects the bracket when that lands outside it (Brent's safeguard).
    """
    points = [(fwd(v), signed(v)) for v in grid]
    cells = [i for i in range(len(grid) - 1) if points[i][1] * points[i + 1][1] <= 0]
    if not cells:
        return False
    i = min(cells, key=lambda c: min(abs(points[c][1]), abs(points[c + 1][1])))
    (ta, fa), (tb, fb) = points[i], points[i + 1]
    for _ in range(n_steps):
        if fa == 0 or fb == 0:
            break
        t = _inverse_quadratic(sorted(points, key=lambda p: abs(p[1]))[:3])
        if t is None or not min(ta, tb) < t < max(ta, tb):
            t = (ta + tb) / 2
        value = inv(t)
        evaluate(value)
        f = signed(value)
        if not math.isfinite(f):
            break
        points.append((t, f))
        if (f > 0) == (fb > 0):
            tb, fb = t, f
        else:
            ta, fa = t, f
    return True


def _inverse_quadratic(points: list[tuple[float, float]]) -> float | None:
    """Where the quadratic in ``f`` through three ``(t, f)`` points (distinct ``f``) has ``f = 0``;
    the secant through two points; ``None`` if the ``f`` coincide."""
    (t0, f0), (t1, f1), *rest = points
    if rest and len({f0, f1, rest[0][1]}) == 3:
        t2, f2 = rest[0]
        return (
            t0 * f1 * f2 / ((f0 - f1) * (f0 - f2))
            + t1 * f0 * f2 / ((f1 - f0) * (f1 - f2))
            + t2 * f0 * f1 / ((f2 - f0) * (f2 - f1))
        )
    return None if f0 == f1 else t1 - f1 * (t1 - t0) / (f1 - f0)
