r"""Solver parameters from the measurements alone: one search, three rules.

A clinician reconstructing a new scan has no ground truth, so a regularisation weight, a
temperature or a denoiser level must be chosen from :math:`y` and the physics. Any scalar
parameter :math:`p` of any solver is chosen here by minimising a ground-truth-free score
:math:`S(p)` over a search interval (a coarse log-spaced grid, then golden-section refinement
around its best point, or root-finding steps towards the discrepancy principle's target). The rules:

``"discrepancy"`` (Morozov)
    :math:`S(p) = |\log(\|A\hat x_p - y\|^2 / (\tau\, m\, \sigma^2))|`: the estimate should explain
    the data down to the noise, no further. :math:`m` counts the non-zero entries of :math:`y`
    (unsampled k-space carries no noise), :math:`\tau` is the safety factor. Cheap (one solve per
    candidate) but blind to errors in the null space of :math:`A`: for under-sampled MRI the
    best estimate leaves a residual of 2 to 20 :math:`m\sigma^2`, so the rule under-regularises
    there. Near-exact for deblurring and CT (:func:`discrepancy_factor`).
``"sure"`` (Stein's unbiased risk estimate)
    deepinv's :class:`~deepinv.loss.SureGaussianLoss` with a Monte-Carlo divergence (two solves per
    candidate): an unbiased estimate of the prediction error :math:`\|A(\hat x_p - x)\|^2` for
    Gaussian noise. Also blind to the null space.
``"splitting"`` (hold-out validation)
    part of :math:`y` is held out (:func:`split_keeps`, the same split for every candidate: whole
    sampled lines on Cartesian MRI, whole views on CT, random non-zero entries elsewhere), the
    solver fits the rest through :func:`masked_physics`, and
    :math:`S(p) = \|(A\hat x_p^{\text{kept}} - y)_H\|^2` (in the norm of
    :func:`~deepinv_tunable.physics.measurement_energy`: ramp-weighted on CT), whose expectation
    is the prediction error on unseen measurements plus a constant. It sees how well the estimate predicts data it was not
    given, which is what under-sampled problems need. The fit sees slightly less data than the
    final solve, so the choice leans towards stronger regularisation.

``"auto"`` takes :func:`default_rule` of the physics: splitting for MRI (and any physics with
unsampled entries), the discrepancy principle otherwise. The noise level is the physics' own
when it states one, else :func:`~deepinv_tunable.physics.estimate_noise_sigma`.

Every choice is reproducible from ``seed`` and records the rule, every candidate and its score,
and whether it sits at a bound of the search interval (then a warning says so).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import deepinv as dinv
import torch

from .physics import estimate_noise_sigma, noise_sigma, physics_domain_adjoint, residual_sq, to_physics_domain
from .progress import progress_bar

RULES = ("discrepancy", "sure", "splitting")

#: Safety factor of the discrepancy principle: the target residual is :math:`\tau m\sigma^2`.
#: On the training subjects of the corpus (never the reserved ones) TV's best weight left a
#: residual of 0.98-1.01 :math:`m\sigma^2` for Gaussian deblurring and 1.16-1.20 for 60-view CT.
DISCREPANCY_TAU = 1.1

#: The same for blur operators: there the best estimate explains the data down to the noise
#: (TV's best weight left 0.98-1.01 :math:`m\sigma^2` on the training subjects), and 1.1 chose a
#: TV weight 6 times too strong (-0.28 dB on the training subject ``pyradiomics_brain1``).
DISCREPANCY_TAU_BLUR = 1.0

#: ``(n_coarse, n_refine)`` of the discrepancy principle's search: a 3-point log grid (its middle
#: first, then the end its sign points to), then 2 safeguarded inverse-quadratic steps towards the
#: root of its monotone log residual ratio: 4 solves where the residual grows with the parameter.
ROOT_SEARCH = (3, 2)

#: ``(n_coarse, n_refine)`` of SURE's and splitting's search: a 5-point grid, then 3 golden-section
#: steps towards the minimum of a noisy score.
MINIMUM_SEARCH = (5, 3)

#: Fraction of the informative entries of ``y`` held out by the splitting rule.
HOLDOUT_FRACTION = 0.1

#: Fraction of the sampled lines held out by the splitting rule on Cartesian MRI.
LINE_HOLDOUT_FRACTION = 0.3

#: Fraction of the views held out by the splitting rule on parallel-beam CT: few-view CT misses
#: whole views, so the score is how well a fit predicts views it was not given. Smaller than
#: on MRI because every held-out view removes information the fit needs.
VIEW_HOLDOUT_FRACTION = 0.1

#: Sampled lines this close to DC are never held out (:func:`line_holdout_mask`).
CENTRE_LINES = 2

#: Entries of ``y`` above this multiple of the median magnitude are never held out (:func:`holdout_mask`).
PROTECT_FACTOR = 20.0

#: A solve for one parameter value: ``solve(value, y, physics, x_init)`` returns an estimate in
#: ``physics``' image domain; ``x_init`` (or ``None``) is a nearby candidate's estimate to warm-start from.
Solve = Callable[[float, torch.Tensor, "dinv.physics.Physics", "torch.Tensor | None"], torch.Tensor]

#: A shared start for every candidate of one fit problem: ``start(y, physics)`` returns an estimate
#: in ``physics``' image domain (e.g. a pilot solve at a middle value), computed once per problem.
Start = Callable[[torch.Tensor, "dinv.physics.Physics"], torch.Tensor]


@dataclass
class ParameterChoice:
    """A parameter chosen from the measurements by :func:`select_parameter`.

    :param str name: parameter name (``"lambda_tv"``, ``"tau"``, ...).
    :param float value: the chosen value.
    :param str rule: ``"discrepancy"``, ``"sure"`` or ``"splitting"``.
    :param list tried: every candidate, in the order tried.
    :param list scores: the score of each candidate (lower is better).
    :param tuple bounds: the search interval.
    :param bool at_bound: the choice is the lowest or highest point of the search interval (the
        best of every candidate, refinements included): the best value may lie outside it.
    :param float sigma: noise std used by the rule.
    :param bool sigma_estimated: ``sigma`` was estimated from ``y`` (the physics did not state it).
    :param int n_solves: solver calls spent on the choice.
    :param float seconds: wall time of the choice.
    :param torch.Tensor estimate: the candidate's estimate of the full problem at the chosen value
        (discrepancy and SURE solve the full problem; ``None`` under splitting), so a solver whose
        candidates match its final solve can return it without solving again.
    :param int n_splits: disjoint hold-outs the splitting score summed over (1 for the other rules).
    :param list resolved: what was done about a first choice at a bound of its interval (the
        search widened beyond it, another rule used), in order; empty when nothing was needed.
    """

    name: str
    value: float
    rule: str
    tried: list[float]
    scores: list[float]
    bounds: tuple[float, float]
    at_bound: bool
    sigma: float
    sigma_estimated: bool
    n_solves: int
    seconds: float
    estimate: torch.Tensor | None = field(default=None, repr=False)
    n_splits: int = 1
    resolved: list[str] = field(default_factory=list)

    def curve(self) -> tuple[list[float], list[float]]:
        """The candidates sorted by value and their scores, for a plot of the score curve."""
        pairs = sorted(zip(self.tried, self.scores))
        return [p for p, _ in pairs], [s for _, s in pairs]

    def as_dict(self) -> dict:
        """JSON-ready record (``metrics.json``, reports)."""
        values, scores = self.curve()
        return {
            "name": self.name,
            "value": self.value,
            "rule": self.rule,
            "bounds": list(self.bounds),
            "at_bound": self.at_bound,
            "sigma": self.sigma,
            "sigma_estimated": self.sigma_estimated,
            "n_solves": self.n_solves,
            "n_splits": self.n_splits,
            "seconds": self.seconds,
            "curve": {"values": values, "scores": scores},
            "resolved": list(self.resolved),
        }


# ------------------------------------------------------------------------------------- splitting
def holdout_mask(
    y: torch.Tensor,
    holdout_fraction: float = HOLDOUT_FRACTION,
    generator: torch.Generator | None = None,
    protect_factor: float | None = None,
    split: int = 0,
) -> torch.Tensor:
    r"""Boolean mask shaped like ``y``: ``False`` on a random hold-out set of its non-zero entries.

    Exactly ``round(holdout_fraction * n)`` of the :math:`n` candidate entries are held out, drawn
    from ``generator`` so the same seed gives the same split. Candidates are the non-zero entries
    (zeros, e.g. unsampled k-space, carry no information and are always kept), except, with
    ``protect_factor``, those whose magnitude exceeds ``protect_factor`` times the median
    magnitude: the k-space centre holds most of an image's energy in a few entries, and a
    held-out DC coefficient would make the score measure the unknown mean intensity instead of
    the regularisation.

    ``split`` picks one of the disjoint hold-out sets of one random order of the candidates:
    generators with the same seed and ``split = 0, 1, ...`` hold out disjoint sets (K-fold
    cross-validation over ``1 / holdout_fraction`` folds at most).

    >>> keep = holdout_mask(torch.ones(1, 10), 0.3, torch.Generator().manual_seed(0))
    >>> int((~keep).sum())
    3
    >>> other = holdout_mask(torch.ones(1, 10), 0.3, torch.Generator().manual_seed(0), split=1)
    >>> bool((keep | other).all())  # the two hold-out sets are disjoint
    True
    """
    try:
        holdout_fraction = float(holdout_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"holdout_fraction must be a number in (0, 1), got {holdout_fraction!r}") from None
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    informative = _holdout_candidates(y, protect_factor)
    total = int(informative.sum())
    n_hold = round(holdout_fraction * total)
    if not 1 <= n_hold <= total - 1:
        raise ValueError(
            f"holdout_fraction={holdout_fraction} of the {total} non-zero entries of y holds out {n_hold}; "
            "at least one entry must be held out and one kept"
        )
    # An exact count (rather than an independent coin per entry) keeps m_H fixed, so the
    # constant m_H sigma^2 in the expected score is the same for every run with the same y.
    candidates = informative.nonzero().flatten()
    order = torch.randperm(total, generator=generator)
    keep_mask = torch.ones(y.numel(), dtype=torch.bool)
    keep_mask[candidates[_fold(order, n_hold, split, f"{total} non-zero entries")]] = False
    return keep_mask.reshape(y.shape).to(y.device)


def sampled_lines(physics) -> torch.Tensor | None:
    """Indices of the sampled k-space lines (last axis) of a Cartesian MRI ``physics`` whose mask
    is the same for every example and constant along the read-out axis; ``None`` otherwise."""
    mask = (
        getattr(physics, "mask", None) if isinstance(physics, (dinv.physics.MRI, dinv.physics.MultiCoilMRI)) else None
    )
    if not isinstance(mask, torch.Tensor) or mask.dim() < 2:
        return None
    plane = mask.reshape(-1, *mask.shape[-2:])
    if not bool((plane == plane[:1]).all()):
        return None
    columns = plane[0].abs().sum(0)
    if not bool(((columns == 0) | (columns == plane.shape[-2])).all()):
        return None
    return (columns > 0).nonzero().flatten()


def measured_views(physics) -> torch.Tensor | None:
    """Indices of the views (last axis of the sinogram) of a :class:`deepinv.physics.Tomography`
    ``physics``; ``None`` for any other physics."""
    if not isinstance(physics, dinv.physics.Tomography):
        return None
    return torch.arange(len(physics.radon.theta))


def whole_line_holdout(
    physics,
    line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> tuple[torch.Tensor, float, int | None] | None:
    """``(lines, fraction, centre)`` of the whole-line hold-out that fits ``physics`` (sampled
    k-space lines of Cartesian MRI, the lines near DC protected; views of CT, none protected), or
    ``None`` where single entries are held out.

    >>> from deepinv_tunable.physics import build_physics
    >>> lines, fraction, centre = whole_line_holdout(build_physics({"kind": "ct", "n_views": 30}, (32, 32)))
    >>> len(lines), fraction, centre
    (30, 0.1, None)
    """
    lines = sampled_lines(physics)
    if lines is not None:
        return lines, line_holdout_fraction, CENTRE_LINES
    views = measured_views(physics)
    if views is not None:
        return views, view_holdout_fraction, None
    return None


def line_holdout_mask(
    y: torch.Tensor,
    lines: torch.Tensor,
    holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    generator: torch.Generator | None = None,
    centre: int | None = CENTRE_LINES,
    split: int = 0,
) -> torch.Tensor:
    r"""Boolean mask shaped like ``y`` (k-space or sinogram ``(..., H, W)``): ``False`` on whole
    lines (last axis), a random ``holdout_fraction`` of ``lines`` outside the ``centre`` lines
    nearest to DC (``None``: any line may be held out). Cartesian MRI misses whole k-space lines
    and few-view CT whole views, so a score on held-out lines measures what the reconstruction
    must do (fill the missing ones); a held-out point of a measured line is predicted by its
    neighbours on the same line whatever the regularisation. ``split`` picks one of the disjoint
    hold-outs of one random order, as in :func:`holdout_mask`.

    >>> keep = line_holdout_mask(torch.ones(1, 2, 4, 16), torch.arange(0, 16, 2), 0.25, torch.Generator().manual_seed(0))
    >>> sorted(set(int(i) for i in (~keep).nonzero()[:, -1]))  # two of the eight lines, none next to DC
    [0, 14]
    """
    candidates = _line_candidates(lines, y.shape[-1], centre)
    n_hold = round(float(holdout_fraction) * len(lines))
    if not 0 < holdout_fraction < 1 or not 1 <= n_hold <= len(candidates):
        raise ValueError(
            f"holdout_fraction={holdout_fraction} of {len(lines)} sampled lines holds out {n_hold}; "
            f"it must hold out between 1 and the {len(candidates)} lines away from the centre"
        )
    order = torch.randperm(len(candidates), generator=generator)
    held = candidates[_fold(order, n_hold, split, f"{len(candidates)} lines away from the centre")]
    keep = torch.ones(y.shape, dtype=torch.bool, device=y.device)
    keep[..., held.to(y.device)] = False
    return keep


def _fold(order: torch.Tensor, n_hold: int, split: int, what: str) -> torch.Tensor:
    """The ``split``-th block of ``n_hold`` entries of a random ``order`` (disjoint hold-outs)."""
    if not 0 <= split < len(order) // n_hold:
        raise ValueError(
            f"split {split} of hold-outs of {n_hold} needs {(split + 1) * n_hold} of the {what}; "
            f"only {len(order) // n_hold} disjoint hold-outs fit"
        )
    return order[split * n_hold : (split + 1) * n_hold]


def _holdout_candidates(y: torch.Tensor, protect_factor: float | None) -> torch.Tensor:
    """Flat boolean mask of the entries :func:`holdout_mask` may hold out."""
    informative = (y != 0).flatten().cpu()
    if protect_factor is not None:
        magnitude = y.detach().abs().flatten().cpu()
        informative &= magnitude <= protect_factor * magnitude[informative].median()
    return informative


def _line_candidates(lines: torch.Tensor, width: int, centre: int | None) -> torch.Tensor:
    """The lines :func:`line_holdout_mask` may hold out: those away from DC (all if ``centre`` is ``None``)."""
    return lines if centre is None else lines[(lines - width // 2).abs() > centre]


def max_splits(
    y: torch.Tensor,
    physics,
    holdout_fraction: float,
    line_holdout_fraction: float,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> int:
    """How many disjoint hold-outs the splitting rule can draw from ``y`` (at least 1), counted
    from the same candidates :func:`line_holdout_mask` / :func:`holdout_mask` draw from."""
    whole_lines = whole_line_holdout(physics, line_holdout_fraction, view_holdout_fraction)
    if whole_lines is not None:
        lines, fraction, centre = whole_lines
        n_candidates, n_hold = len(_line_candidates(lines, y.shape[-1], centre)), round(fraction * len(lines))
    else:
        n_candidates = int(_holdout_candidates(y, PROTECT_FACTOR).sum())
        n_hold = round(holdout_fraction * n_candidates)
    return max(1, n_candidates // max(1, n_hold))


def split_keeps(
    y: torch.Tensor,
    physics,
    seed: int,
    n_splits: int = 1,
    holdout_fraction: float = HOLDOUT_FRACTION,
    line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
    view_holdout_fraction: float = VIEW_HOLDOUT_FRACTION,
) -> list[torch.Tensor]:
    """The keep masks of the splitting rule: up to ``n_splits`` disjoint hold-outs (as many as fit,
    :func:`max_splits`) cut from one random order drawn from ``seed``; whole sampled lines on
    Cartesian MRI and whole views on CT (:func:`line_holdout_mask`), random entries elsewhere
    (:func:`holdout_mask`). On MRI and CT they depend on the acquisition alone, not on the values
    of ``y``."""
    whole_lines = whole_line_holdout(physics, line_holdout_fraction, view_holdout_fraction)
    n_fit = max_splits(y, physics, holdout_fraction, line_holdout_fraction, view_holdout_fraction)
    keeps = []
    for split in range(min(n_splits, n_fit)):
        generator = torch.Generator().manual_seed(seed)
        if whole_lines is not None:
            lines, fraction, centre = whole_lines
            keeps.append(line_holdout_mask(y, lines, fraction, generator, centre=centre, split=split))
        else:
            keeps.append(holdout_mask(y, holdout_fraction, generator, protect_factor=PROTECT_FACTOR, split=split))
    return keeps


def kept_fraction(y: torch.Tensor, keep: torch.Tensor) -> float:
    r"""The fraction :math:`\rho` of the informative (non-zero) entries of ``y`` that ``keep`` keeps:
    how much of the data term a fit on the kept entries sums over.

    >>> kept_fraction(torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([True, False, True, True]))
    0.6666666666666666
    """
    informative = y != 0
    return float((keep & informative).sum()) / float(informative.sum())


def masked_physics(physics, keep_mask: torch.Tensor):
    r"""``physics`` on real single-channel images, observed through a mask on its measurements:
    :math:`A_\text{keep}(x) = m \odot A(\iota x)`, with :math:`\iota` the embedding
    :func:`~deepinv_tunable.physics.to_physics_domain` (so MRI's 2-channel convention is handled
    once, here). A deepinv ``LinearPhysics`` (adjoint :math:`\iota^\top A^\top(m \odot v)`) for
    linear ``physics``; its noise model is kept. Any solver can then fit the kept entries only."""
    keep = keep_mask.to(torch.float32)

    def forward(x, **kwargs):
        return keep * physics.A(to_physics_domain(x, physics))

    if isinstance(physics, dinv.physics.LinearPhysics):
        return dinv.physics.LinearPhysics(
            A=forward,
            A_adjoint=lambda v, **kw: physics_domain_adjoint(physics.A_adjoint(keep * v), physics),
            noise_model=physics.noise_model,
        )
    return dinv.physics.Physics(A=forward, noise_model=physics.noise_model)


# ------------------------------------------------------------------------------------------ rules
def default_rule(physics: dinv.physics.Physics) -> str:
    """The rule ``"auto"`` stands for: ``"splitting"`` for MRI (under-sampled k-space, where the
    discrepancy principle and SURE cannot see the missing frequencies), ``"discrepancy"`` otherwise.

    >>> from deepinv_tunable.physics import build_physics
    >>> default_rule(build_physics({"kind": "mri"}, (8, 8))), default_rule(build_physics({"kind": "blur"}, (8, 8)))
    ('splitting', 'discrepancy')
    """
    if isinstance(physics, (dinv.physics.MRI, dinv.physics.MultiCoilMRI, dinv.physics.Inpainting)):
        return "splitting"
    return "discrepancy"


def discrepancy_factor(physics: dinv.physics.Physics) -> float:
    """The discrepancy principle's default safety factor for ``physics``: :data:`DISCREPANCY_TAU_BLUR`
    for a blur (:class:`deepinv.physics.Blur`, :class:`~deepinv.physics.BlurFFT`), else
    :data:`DISCREPANCY_TAU`.

    >>> from deepinv_tunable.physics import build_physics
    >>> discrepancy_factor(build_physics({"kind": "blur"}, (8, 8))), discrepancy_factor(build_physics({"kind": "ct"}, (8, 8)))
    (1.0, 1.1)
    """
    if isinstance(physics, (dinv.physics.Blur, dinv.physics.BlurFFT)):
        return DISCREPANCY_TAU_BLUR
    return DISCREPANCY_TAU


#: the smallest noise std a solver plans for: data stated or estimated to be noiseless are solved
#: as if this noisy. A denoiser schedule that ends at the estimated std of noiseless data (about
#: 5e-8) leaves every trained range: DPIR with scico's DnCNN on noiseless 4x MRI of a training
#: subject (2 slices) scored 26.94 dB there against 28.95 / 29.24 / 29.24 dB ending at 1e-3 /
#: 3e-3 / 5e-3 (on noiseless deblurring all four within 0.06 dB).
NOISE_FLOOR = 1e-3


def resolve_sigma(y: torch.Tensor, physics, sigma: float | None = None, floor: float = 0.0) -> tuple[float, bool]:
    """``(sigma, estimated)``: the given value, else the physics' noise std, else the mean of
    :func:`~deepinv_tunable.physics.estimate_noise_sigma` over the batch; a stated or estimated std
    is raised to ``floor`` (e.g. :data:`NOISE_FLOOR`; default 0: as it is)."""
    if sigma is not None:
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        return float(sigma), False
    stated = noise_sigma(physics, default=0.0)
    if stated > 0:
        return max(stated, floor), False
    return max(float(estimate_noise_sigma(y, physics).mean()), floor), True


#: SURE's Monte-Carlo probe step as a fraction of the noise std (deepinv's ``tau`` of
#: :class:`~deepinv.loss.SureGaussianLoss`): small enough for the finite difference to be a
#: derivative, large enough to stay above the solver's round-off.
SURE_PROBE = 0.1


def sure_score(
    y: torch.Tensor,
    x: torch.Tensor,
    physics,
    sigma: float,
    probe: Callable[[torch.Tensor, dinv.physics.Physics], torch.Tensor],
    generator: torch.Generator,
) -> torch.Tensor:
    r"""Stein's unbiased risk estimate of one estimate, per example: deepinv's
    :class:`~deepinv.loss.SureGaussianLoss` with a Monte-Carlo divergence,

    .. math::

        \mathrm{SURE} = \tfrac1m \|A\hat x - y\|^2 - \sigma^2
        + \tfrac{2\sigma^2}{m\epsilon}\, b^\top \big(A\hat x(y + \epsilon b) - A\hat x(y)\big),
        \qquad b \sim \mathcal N(0, I),\ \epsilon = 0.1\,\sigma,

    whose expectation over Gaussian noise is the prediction error :math:`\tfrac1m\|A(\hat x - x)\|^2`
    (the image MSE in denoising) :footcite:p:`ramani2008mcsure`.

    :param torch.Tensor y: measurements.
    :param torch.Tensor x: the estimate from ``y``.
    :param deepinv.physics.Physics physics: forward operator.
    :param float sigma: noise std per measurement.
    :param Callable probe: ``probe(y_perturbed, physics) -> x`` re-solves from the perturbed
        measurements. For the divergence to be a derivative it must compute what produced ``x``
        the same way (same start, same iterations); a warm start at ``x`` is only right for a
        solver that converges.
    :param torch.Generator generator: draws :math:`b` (pass a fresh generator with one seed
        for every candidate to compare them under the same probe).
    :return: ``(B,)`` scores, lower is better.
    """
    loss = dinv.loss.SureGaussianLoss(sigma=sigma, tau=SURE_PROBE * sigma, rng=generator)
    with torch.no_grad():
        return loss(y=y, x_net=x, physics=physics, model=probe)


class _Scorer:
    """Scores one candidate value under a rule (lower is better); counts solver calls."""

    def __init__(
        self,
        rule: str,
        solve: Solve,
        y: torch.Tensor,
        physics,
        sigma: float,
        tau: float,
        holdout_fraction: float,
        seed: int,
        warm_start: bool,
        n_splits: int = 1,
        line_holdout_fraction: float = LINE_HOLDOUT_FRACTION,
        start: Start | None = None,
    ):
        self.rule, self.solve, self.y, self.physics, self.sigma, self.tau = rule, solve, y, physics, sigma, tau
        self.warm_start, self.start = warm_start, start
        self.n_solves = 0
        self.keeps: list[torch.Tensor] = []
        self.n_splits = 1
        if rule == "splitting":
            self.keeps = split_keeps(y, physics, seed, n_splits, holdout_fraction, line_holdout_fraction)
            self.n_splits = len(self.keeps)
            self.keep = self.keeps[0]
            # each hold-out's fit problem, built once for every candidate
            self.fits = [(y * keep, masked_physics(physics, keep)) for keep in self.keeps]
        else:
            self.fits = [(y, physics)]
            if rule == "sure":
                # one generator for the whole search: each candidate draws its own probe
                self.sure_generator = torch.Generator(device=y.device).manual_seed(seed)
        # per fit problem: the shared start (computed on first use) and every candidate's estimate
        self.starts: list[torch.Tensor | None] = [None] * len(self.fits)
        self.fit_estimates: list[dict[float, torch.Tensor]] = [{} for _ in self.fits]
        self.m = int((y != 0).sum())
        # discrepancy only: the signed log(residual / target) of every candidate, for the root search
        self.log_ratio: dict[float, float] = {}

    def _initial(self, index: int, value: float) -> torch.Tensor | None:
        """Where a candidate's solve of fit problem ``index`` starts: the shared start, else (with
        ``warm_start``) the nearest earlier candidate's estimate of the same problem, else ``None``."""
        if self.start is not None:
            if self.starts[index] is None:
                self.starts[index] = self.start(*self.fits[index])
                self.n_solves += 1
            return self.starts[index]
        done = self.fit_estimates[index]
        if not self.warm_start or not done:
            return None
        key = min(done, key=lambda v: abs(math.log(v / value)) if v > 0 and value > 0 else abs(v - value))
        return done[key]

    def _fit(self, index: int, value: float) -> torch.Tensor:
        fit_y, fit_physics = self.fits[index]
        x = self.solve(value, fit_y, fit_physics, self._initial(index, value))
        self.n_solves += 1
        self.fit_estimates[index][value] = x
        return x

    def __call__(self, value: float) -> float:
        if self.rule == "splitting":
            score = 0.0
            for index, keep in enumerate(self.keeps):  # summed over the disjoint hold-outs
                x = self._fit(index, value)
                # the fit lives in the masked physics' domain (real images): score on the held-out
                # entries, in the norm that weighs them as the image error behind them
                score += float(residual_sq(x, self.y, self.physics, ~keep, image_norm=True).sum())
            return score
        x = self._fit(0, value)
        if self.rule == "discrepancy":
            ratio = float(residual_sq(x, self.y, self.physics).sum()) / (self.tau * self.m * self.sigma**2)
            self.log_ratio[value] = math.log(max(ratio, 1e-12))
            return abs(self.log_ratio[value])
        self.n_solves += 1
        probe = lambda y_, physics_: self.solve(value, y_, physics_, x)  # noqa: E731
        return float(sure_score(self.y, x, self.physics, self.sigma, probe, self.sure_generator).sum())


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
        Under ``"splitting"`` it receives :func:`masked_physics` (on real single-channel images).
    :param torch.Tensor y: measurements.
    :param deepinv.physics.LinearPhysics physics: forward operator.
    :param tuple bounds: ``(low, high)`` search interval, ``0 < low < high`` when ``log``.
    :param str name: parameter name, for the record.
    :param str rule: ``"auto"`` (:func:`default_rule`), ``"discrepancy"``, ``"sure"`` or ``"splitting"``.
    :param float sigma: noise std (default: the physics', else estimated from ``y``).
    :param float tau: discrepancy safety factor. Default :func:`discrepancy_factor` of ``physics``
        (1.0 for blur, 1.1 otherwise).
    :param float holdout_fraction: splitting hold-out fraction. Default :data:`HOLDOUT_FRACTION`.
    :param float line_holdout_fraction: the same on Cartesian MRI, in sampled lines. Default
        :data:`LINE_HOLDOUT_FRACTION`.
    :param int n_splits: splitting sums the held-out score over this many disjoint hold-outs
        (capped at as many as fit, recorded in ``n_splits`` of the choice). Several smaller
        hold-outs leave the fit closer to the full problem than one large one, at the same
        variance: a single 30 % line hold-out turns 4x MRI into about 5.7x and so leans towards
        a stronger prior. Default 1 (cost: ``n_splits`` solves per candidate).
    :param int n_coarse: coarse grid size (>= 1). Default :data:`ROOT_SEARCH` ``(3, 2)`` for the
        discrepancy principle (usually 4 solves: the grid's middle, the neighbour on the root's
        side, 2 root steps), and :data:`MINIMUM_SEARCH` ``(5, 3)`` for the other rules.
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
    best = min(range(len(tried)), key=lambda i: (scores[i], tried[i]))
    value = tried[best]
    # a bound is suspect only if it beats every refined candidate too (an edge whose neighbourhood
    # holds a better interior point has its optimum inside), and only if it is not the
    # parameter's own limit
    edge = 0 if value == grid[0] else 1 if value == grid[-1] else None
    at_bound = n_coarse > 2 and edge is not None and not hard_bounds[edge]
    if data_scaled and rule == "splitting":
        value *= kept_fraction(y, scorer.keep)
    choice = ParameterChoice(
        name=name,
        value=value,
        rule=rule,
        tried=tried,
        scores=scores,
        bounds=(low, high),
        at_bound=at_bound,
        sigma=sigma_value,
        sigma_estimated=estimated,
        n_solves=scorer.n_solves,
        seconds=time.perf_counter() - began,
        estimate=None if rule == "splitting" else scorer.fit_estimates[0].get(value),
        n_splits=scorer.n_splits,
    )
    return choice


def heldout_scores(
    solve: Solve,
    candidates,
    y: torch.Tensor,
    physics,
    seed: int = 0,
    n_splits: int = 1,
) -> tuple[list[float], int]:
    r"""The splitting rule's score of each of ``candidates`` (any values ``solve`` accepts), and the
    number of solves: each candidate fits the kept entries of the hold-outs of :func:`split_keeps`
    (``seed``, default fractions) through :func:`masked_physics` and is scored on the held-out ones,
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


__all__ = [
    "DISCREPANCY_TAU",
    "DISCREPANCY_TAU_BLUR",
    "discrepancy_factor",
    "HOLDOUT_FRACTION",
    "LINE_HOLDOUT_FRACTION",
    "VIEW_HOLDOUT_FRACTION",
    "MINIMUM_SEARCH",
    "ROOT_SEARCH",
    "line_holdout_mask",
    "max_splits",
    "measured_views",
    "whole_line_holdout",
    "sampled_lines",
    "split_keeps",
    "ParameterChoice",
    "RULES",
    "auto_requested",
    "default_rule",
    "heldout_scores",
    "holdout_mask",
    "kept_fraction",
    "masked_physics",
    "resolve_sigma",
    "search_parameter",
    "select_parameter",
    "SURE_PROBE",
    "sure_score",
]
