"""The ground-truth-free scores a parameter is chosen by: the discrepancy principle, SURE and
measurement splitting (:data:`RULES`), and the rule a physics gets by default."""

from __future__ import annotations

import math
from collections.abc import Callable

import deepinv as dinv
import torch

from ..physics import residual_sq
from ..physics.data_fit import measured_count
from .holdout import LINE_HOLDOUT_FRACTION, masked_physics, split_keeps

#: A solve for one parameter value: ``solve(value, y, physics, x_init)`` returns an estimate in
#: ``physics``' image domain; ``x_init`` (or ``None``) is a nearby candidate's estimate to warm-start from.
Solve = Callable[[float, torch.Tensor, "dinv.physics.Physics", "torch.Tensor | None"], torch.Tensor]


#: A shared start for every candidate of one fit problem: ``start(y, physics)`` returns an estimate
#: in ``physics``' image domain (e.g. a pilot solve at a middle value), computed once per problem.
Start = Callable[[torch.Tensor, "dinv.physics.Physics"], torch.Tensor]


#: the measurement-only rules a parameter can be chosen by (``"auto"`` picks one per physics,
#: :func:`default_rule`)
RULES = ("discrepancy", "sure", "splitting")


#: Safety factor of the discrepancy principle: the target residual is :math:`\tau m\sigma^2`.
#: On the training subjects of the corpus (never the reserved ones) TV's best weight left a
#: residual of 0.98-1.01 :math:`m\sigma^2` for Gaussian deblurring and 1.16-1.20 for 60-view CT.
DISCREPANCY_TAU = 1.1


#: The same for blur operators: there the best estimate explains the data down to the noise
#: (TV's best weight left 0.98-1.01 :math:`m\sigma^2` on the training subjects), and 1.1 chose a
#: TV weight 6 times too strong (-0.28 dB on the training subject ``pyradiomics_brain1``).
DISCREPANCY_TAU_BLUR = 1.0


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
        self.m = int(measured_count(y, physics).sum())
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
