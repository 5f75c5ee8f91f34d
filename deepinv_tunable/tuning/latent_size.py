r"""Choosing the latent size :math:`k` of a tunable-complexity prior.

Three routes, from most to least information:

* **Linear theory** (:func:`~deepinv_tunable.tuning.spectrum.linear_denoising_mse`, :func:`~deepinv_tunable.tuning.spectrum.optimal_k_linear`): for a linear
  generator and Gaussian latents the expected error of the :math:`k`-truncated MAP denoiser has a
  closed form, so the best :math:`k` is known exactly. It explains why :math:`k^\star` falls as
  the noise grows.
* **Ground truth on held-out images** (:func:`~deepinv_tunable.tuning.k_rules.sweep_k`): reconstruct for a grid of :math:`k`
  and keep the best score.
* **Measurements only** (:func:`~deepinv_tunable.tuning.k_rules.discrepancy_k`, :func:`~deepinv_tunable.tuning.k_rules.measurement_splitting_k`,
  :func:`~deepinv_tunable.tuning.k_rules.one_standard_error_k`, :func:`select_k`): Morozov's discrepancy principle, Stein's
  unbiased risk estimate (:func:`~deepinv_tunable.tuning.rules.sure_score`), or fitting on part of
  :math:`y` and scoring the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import deepinv as dinv
import torch

from ..physics import measurement_estimate, residual_sq, resolve_sigma
from ..physics.data_fit import measured_count
from .holdout import masked_physics, split_keeps
from .k_rules import discrepancy_k, one_standard_error_k
from .rules import sure_score
from .select import ParameterChoice
from .spectrum import _ks, _nonnegative, closed_form_k
from .tuned import Tuned

# ----------------------------------------------------------------- ground-truth-free k for solvers
#: The rules of :func:`select_k`; ``"auto"`` stands for :func:`default_k_rule` of the physics.
K_RULES = ("auto", "discrepancy", "sure", "splitting", "closed_form")


def default_k_rule(physics) -> str:
    r"""The rule :func:`select_k`'s ``"auto"`` stands for: ``"splitting"`` on CT
    (:class:`deepinv.physics.Tomography`), ``"sure"`` in denoising
    (:class:`deepinv.physics.Denoising`), ``"discrepancy"`` otherwise.

    In denoising SURE estimates the image error itself, without bias, so it needs no assumption
    on how closely the best estimate fits the data. The discrepancy principle does: it takes the
    first ``k`` that fits down to the noise, and with a latent weight (LatentMAP's
    :math:`\gamma = 1`) the best ``k`` can fit slightly less than that. On a non-reserved subject
    (flow, noise 0.1) the best k = 4096 left 1.06 :math:`m\sigma^2`, the discrepancy principle
    took 8192 (-1.6 dB), SURE took 4096.

    A generator that cannot represent a CT slice to the noise level keeps lowering its residual
    by fitting what few views leave unmeasured, so the discrepancy principle, which asks for the
    smallest ``k`` that reaches the noise, lands on large ``k``: on the training CT subject
    (flow, 60 views) it chose 12288 where 4096 was 1.1 dB better. Predicting whole held-out
    views, scored in the image-weighted norm
    (:func:`~deepinv_tunable.physics.measurement.measurement_energy`), sees that error: there it lost 0.6 dB,
    and nothing at 30 views. Elsewhere the discrepancy principle was the better rule (see
    :func:`select_k`); for a regularisation weight such as TV's, the discrepancy principle stays
    right on CT (:func:`~deepinv_tunable.tuning.rules.default_rule`).

    >>> from deepinv_tunable.physics import build_physics
    >>> [default_k_rule(build_physics({"kind": kind}, (8, 8))) for kind in ("ct", "denoising", "mri")]
    ['splitting', 'sure', 'discrepancy']
    """
    if isinstance(physics, dinv.physics.Tomography):
        return "splitting"
    return "sure" if isinstance(physics, dinv.physics.Denoising) else "discrepancy"


def select_k(
    solver,
    y: torch.Tensor,
    physics,
    ks: Sequence[int],
    rule: str = "auto",
    holdout_fraction: float = 0.1,
    tau: float = 1.0,
    seed: int = 0,
    n_splits: int = 3,
    se_factor: float = 1.0,
    x_init: torch.Tensor | None = None,
    fits: Mapping[int, object] | None = None,
    spectrum: torch.Tensor | None = None,
    solve_kwargs: Mapping[str, object] | None = None,
) -> ParameterChoice:
    r"""Choose ``k`` per example from the measurements alone, then reconstruct with it.

    The result is a :class:`~deepinv_tunable.tuning.select.ParameterChoice` named ``"k"``: ``value``
    the ``(B,)`` chosen sizes, ``table`` the ``k -> (B,)`` scores (lower is better; empty for
    ``"closed_form"``), ``reconstruction`` the solver's result at the chosen ``k``, and under
    ``"splitting"`` ``split_scores`` the ``k -> (J, B)`` score of each hold-out.

    ``solver`` is a tunable reconstructor whose ``reconstruct(y, physics, k=...)`` accepts a
    ``(B,)`` tensor of ``k`` (e.g. :class:`~deepinv_tunable.solvers.LatentMAP`).

    - ``"discrepancy"`` (Morozov): reconstruct with every ``k`` of ``ks``; per example, keep the
      smallest ``k`` with :math:`\|A\hat x_k - y\|^2 \le \tau m \sigma^2` (:math:`m` the non-zero
      entries of that example's ``y``, :math:`\sigma` the physics' noise std), or the smallest
      residual if none qualifies (see :func:`~deepinv_tunable.tuning.k_rules.discrepancy_k`).
    - ``"sure"`` (Stein): reconstruct with every ``k``; per example, keep the ``k`` with the
      smallest :func:`~deepinv_tunable.tuning.rules.sure_score`, whose Monte-Carlo probe re-solves
      from :math:`y + \epsilon b` exactly as the fit was made (one more solve per ``k``; the same
      probe :math:`b` for every ``k``, drawn from ``seed``). Unbiased for the prediction error
      :math:`\|A(\hat x_k - x)\|^2`: the image error in denoising, blind to the null space of
      :math:`A` elsewhere.
    - ``"splitting"``: fit every ``k`` on the measurements kept by the package's one splitting
      rule (:func:`~deepinv_tunable.tuning.holdout.split_keeps`: whole views on CT, whole sampled
      lines on Cartesian MRI, random entries elsewhere) through :func:`~deepinv_tunable.tuning.holdout.masked_physics`, score
      the held-out residual per example in the image-weighted norm
      (:func:`~deepinv_tunable.physics.measurement.measurement_energy`) on each of ``n_splits`` disjoint
      hold-outs, keep per example the smallest ``k`` within ``se_factor`` standard errors of the
      best (:func:`~deepinv_tunable.tuning.k_rules.one_standard_error_k`), then reconstruct from all of ``y`` with it.
    - ``"closed_form"``: no sweep: :func:`~deepinv_tunable.tuning.spectrum.closed_form_k` on the generator's ``spectrum`` at the
      noise level (the physics', else estimated from ``y``), then one solve. Denoising and
      single-coil Cartesian MRI only.

    :param list ks: candidate latent sizes.
    :param str rule: ``"auto"`` (default: :func:`default_k_rule`: splitting on CT, SURE in
        denoising, the discrepancy principle elsewhere), ``"discrepancy"``, ``"sure"``,
        ``"splitting"`` or ``"closed_form"``. On the reserved subjects
        (``benchmarks/run_k_study.py``: denoising at 5 noise levels, MRI at 4 accelerations, CT
        at 3 view counts; the shipped flow at :math:`\gamma = 0` and 1, the VAEs at 0) ``"auto"``
        came within 0.5 dB of the oracle k in every measured case, all 14 interior optima
        included (worst -0.39 dB; CT 30 / 60 / 120 views: +0.10 / 0.00 / -0.14 dB with the
        one-standard-error choice, against 0.00 / -0.17 / -0.32 for the plain minimum). The
        discrepancy principle alone misses the flow's interior optimum at :math:`\gamma = 1`,
        noise 0.1, by 2.94 dB (with the latent weight the best estimate fits a little less than
        the noise), and CT 60 / 120 by 0.6 / 0.4 dB; splitting alone loses up to 7 dB in
        denoising (a full-size flow fits the kept pixels and predicts nothing of the held-out
        ones); ``"closed_form"`` is within 0.16 dB on all 18 denoising and MRI cases at
        :math:`\gamma = 0`.
    :param float holdout_fraction: for ``"splitting"`` where single entries are held out. Default 0.1.
    :param float tau: for ``"discrepancy"``. Default 1.
    :param int seed: seeds the hold-out (the same seed, the same split). Default 0.
    :param int n_splits: for ``"splitting"``: the held-out scores are summed over this many
        disjoint hold-outs (as many as fit, :func:`~deepinv_tunable.tuning.holdout.max_splits`), each
        costing one solve per ``k``. At 30 CT views on a training subject, single hold-outs of 10 %
        of the views (three seeds) picked the best k on 1 to 2 of 3 slices, their summed score on
        all 3. Default 3.
    :param float se_factor: for ``"splitting"``: how many standard errors of the paired per-split
        differences a smaller ``k`` may trail the best by (:func:`~deepinv_tunable.tuning.k_rules.one_standard_error_k`; 0: the
        plain minimum of the summed score). Default 1.
    :param torch.Tensor x_init: single-channel start image for the fits on partial data
        (default: the measurement-only estimate of the kept entries, held-out ones zeroed).
    :param dict fits: ``k -> Reconstruction`` of ``y`` already computed (e.g. by a sweep); every
        rule reuses them instead of solving again.
    :param torch.Tensor spectrum: for ``"closed_form"``: the generator's :func:`~deepinv_tunable.tuning.spectrum.generator_spectrum`
        (shipped generators: :func:`~deepinv_tunable.tuning.spectrum.load_spectrum` of their folder).
    :param dict solve_kwargs: passed to every ``solver.reconstruct`` call. A sampler (a solver
        with ``stochastic = True``, e.g. :class:`~deepinv_tunable.solvers.TunableLDMSolver`) needs a
        seed here (``{"seed": 0}``), and ``"sure"`` refuses it without one: the probe must draw
        the noise its fit drew, or the divergence measures the sampler's randomness. ``fits``
        must have been made with the same arguments. Default none.
    """
    ks = _ks(ks)
    started = time.perf_counter()
    solve_kwargs = dict(solve_kwargs or {})
    rule = default_k_rule(physics) if _check_k_rule(rule) == "auto" else rule
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be an integer >= 1, got {n_splits!r}")
    if rule == "closed_form":
        return _closed_form_selection(solver, y, physics, ks, spectrum, fits, solve_kwargs, started)
    if rule == "sure" and getattr(solver, "stochastic", False) and "seed" not in solve_kwargs:
        raise ValueError(  # before the solves, not after them
            f"rule='sure' on a stochastic solver ({type(solver).__name__}) needs solve_kwargs={{'seed': ...}}: "
            "the divergence probe must draw the noise its fit drew"
        )
    if rule in ("discrepancy", "sure"):
        n_fits = sum(k not in (fits or {}) for k in ks)
        fits = {k: (fits or {}).get(k) or solver.reconstruct(y, physics, k=k, **solve_kwargs) for k in ks}
        # the solver's own noise level where it records one, else the physics' (or estimated)
        sigma, estimated = fits[ks[0]].parameters.get("sigma"), False
        if not sigma:
            sigma, estimated = resolve_sigma(y, physics)
        if rule == "sure":
            scores, result = _sure_selection(solver, y, physics, ks, fits, sigma, seed, solve_kwargs)
            n_fits += len(ks)  # one probe solve per k
        else:
            scores, result = _discrepancy_selection(y, physics, ks, fits, sigma, tau)
        choice = _k_choice(rule, ks, result.k, scores, result, sigma, n_fits, started)
        choice.sigma_estimated = bool(estimated)
        return choice
    se_factor = _nonnegative(se_factor, "se_factor")  # before the solves, not after them
    scores, result, chosen, split_scores, n_solves = _splitting_selection(
        solver, y, physics, ks, seed, n_splits, holdout_fraction, se_factor, x_init, fits, solve_kwargs
    )
    choice = _k_choice("splitting", ks, chosen, scores, result, None, n_solves, started)
    choice.split_scores, choice.n_splits = split_scores, len(next(iter(split_scores.values())))
    return choice


def _k_choice(rule, ks, chosen, scores, result, sigma, n_solves, started) -> ParameterChoice:
    """The :class:`~deepinv_tunable.tuning.select.ParameterChoice` of a per-example ``k``."""
    return ParameterChoice(
        name="k",
        value=chosen.cpu(),
        rule=rule,
        tried=list(ks),
        scores=[scores[k] for k in ks] if scores else [],
        bounds=(min(ks), max(ks)),
        at_bound=bool(((chosen == min(ks)) | (chosen == max(ks))).any()) and len(ks) > 1,
        sigma=None if sigma is None else float(sigma),
        sigma_estimated=False,
        n_solves=int(n_solves),
        seconds=time.perf_counter() - started,
        reconstruction=result,  # its x is the estimate: not kept twice
    )


def _closed_form_selection(solver, y, physics, ks, spectrum, fits, solve_kwargs, started) -> ParameterChoice:
    if spectrum is None:
        raise ValueError("rule='closed_form' needs the generator's spectrum (load_spectrum of its folder)")
    sigma, estimated = resolve_sigma(y, physics)
    k = closed_form_k(spectrum, physics, sigma, ks)
    chosen = torch.full((y.shape[0],), k)
    given = (fits or {}).get(k)
    result = given or solver.reconstruct(y, physics, k=k, **solve_kwargs)
    choice = _k_choice("closed_form", ks, chosen, {}, replace(result, k=chosen), sigma, given is None, started)
    choice.sigma_estimated = bool(estimated)
    return choice


def _sure_selection(solver, y, physics, ks, fits, sigma: float, seed: int, solve_kwargs):
    # the probe re-solves exactly as the fit was made (a warm start at the fit would measure
    # the optimiser's progress, not the estimator's divergence); one probe for every k
    scores = {
        k: sure_score(
            y,
            fits[k].x,
            physics,
            sigma,
            lambda y_, physics_, k=k: solver.reconstruct(y_, physics_, k=k, **solve_kwargs).x,
            torch.Generator(device=y.device).manual_seed(seed),
        ).cpu()
        for k in ks
    }
    ordered = sorted(ks)  # argmin keeps the first of equal scores: ties go to the smaller k
    chosen = torch.tensor(ordered)[torch.stack([scores[k] for k in ordered]).argmin(0)]
    return scores, _from_fits(fits, chosen, {"sure": _per_example(scores, chosen)})


def _discrepancy_selection(y, physics, ks, fits, sigma: float, tau: float):
    m = measured_count(y, physics).cpu()
    scores = {k: fit.extras["residual_sq"].detach().cpu() for k, fit in fits.items()}
    chosen = torch.tensor(
        [discrepancy_k({k: float(scores[k][b]) for k in ks}, int(m[b]), sigma, tau) for b in range(y.shape[0])]
    )
    return scores, _from_fits(fits, chosen, {"residual_sq": _per_example(scores, chosen)})


def _splitting_selection(
    solver, y, physics, ks, seed, n_splits, holdout_fraction, se_factor, x_init, fits, solve_kwargs
):
    per_split: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    for keep in split_keeps(y, physics, seed, n_splits, holdout_fraction=holdout_fraction):
        split = masked_physics(physics, keep)
        y_keep = y * keep
        # from the kept entries only: a start computed from all of y hands the held-out entries to
        # the fit (in denoising a full-size generator keeps them where the start put them, and
        # "predicts" them perfectly; a flow's splitting score then chose k = K at every noise level)
        start = measurement_estimate(y_keep, physics) if x_init is None else x_init
        for k in ks:
            x_hat = solver.reconstruct(y_keep, split, k=k, x_init=start, **solve_kwargs).x
            per_split[k].append(residual_sq(x_hat, y, physics, ~keep, image_norm=True).detach().cpu())
    split_scores = {k: torch.stack(v) for k, v in per_split.items()}  # k -> (J, B)
    scores = {k: v.sum(0) for k, v in split_scores.items()}
    chosen = one_standard_error_k(split_scores, se_factor)
    n_solves = sum(len(v) for v in per_split.values())
    if fits is not None and all(int(k) in fits for k in chosen):
        result = _from_fits(fits, chosen, {})
    else:
        result = solver.reconstruct(y, physics, k=chosen.to(y.device), **solve_kwargs)
        n_solves += 1
    return scores, result, chosen, split_scores, n_solves


def _per_example(table: Mapping[int, torch.Tensor], chosen: torch.Tensor) -> torch.Tensor:
    """Entry ``b`` of ``table[chosen[b]]`` for every example ``b``, stacked."""
    return torch.stack([table[int(k)][b] for b, k in enumerate(chosen)])


def _from_fits(fits: Mapping[int, object], chosen: torch.Tensor, extras: dict):
    """A new result holding, per example ``b``, the estimate of ``fits[chosen[b]]`` (the fits may
    belong to the caller, so none is modified)."""
    x = _per_example({k: fit.x for k, fit in fits.items()}, chosen)
    return replace(fits[int(chosen[0])], x=x, k=chosen, chi2=None, extras=extras)


def _check_k_rule(rule: str) -> str:
    if rule not in K_RULES:
        raise ValueError(f"rule must be one of {K_RULES}, got {rule!r}")
    return rule


class AutoK(Tuned):
    r"""A tunable solver whose ``k`` is chosen per example from the measurements alone
    (:func:`select_k`), as a deepinv ``Reconstructor``: :class:`~deepinv_tunable.tuning.tuned.Tuned`
    for the parameter ``k``.

    :param solver: tunable reconstructor accepting ``k`` (e.g. :class:`~deepinv_tunable.solvers.LatentMAP`).
    :param list ks: candidate latent sizes.
    :param str rule: ``"auto"`` (default; see :func:`select_k`), ``"discrepancy"``, ``"splitting"``
        or ``"closed_form"`` (then pass ``spectrum=``).
    :param int seed: seed of the measurement split. Default 0.
    """

    def __init__(self, solver, ks: Sequence[int], rule: str = "auto", seed: int = 0, **select_kwargs):
        super().__init__(solver, "k", rule=_check_k_rule(rule), ks=_ks(ks), seed=int(seed), **select_kwargs)
        self.seed = int(seed)
