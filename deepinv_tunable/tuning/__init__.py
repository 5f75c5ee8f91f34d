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
    there. Near-exact for deblurring and CT (:func:`~deepinv_tunable.tuning.rules.discrepancy_factor`).
``"sure"`` (Stein's unbiased risk estimate)
    deepinv's :class:`~deepinv.loss.SureGaussianLoss` with a Monte-Carlo divergence (two solves per
    candidate): an unbiased estimate of the prediction error :math:`\|A(\hat x_p - x)\|^2` for
    Gaussian noise. Also blind to the null space.
``"splitting"`` (hold-out validation)
    part of :math:`y` is held out (:func:`~deepinv_tunable.tuning.holdout.split_keeps`, the same split for every candidate: whole
    sampled lines on Cartesian MRI, whole views on CT, random non-zero entries elsewhere), the
    solver fits the rest through :func:`~deepinv_tunable.tuning.holdout.masked_physics`, and
    :math:`S(p) = \|(A\hat x_p^{\text{kept}} - y)_H\|^2` (in the norm of
    :func:`~deepinv_tunable.physics.measurement.measurement_energy`: ramp-weighted on CT), whose expectation
    is the prediction error on unseen measurements plus a constant. It sees how well the estimate predicts data it was not
    given, which is what under-sampled problems need. The fit sees slightly less data than the
    final solve, so the choice leans towards stronger regularisation.

``"auto"`` takes :func:`~deepinv_tunable.tuning.rules.default_rule` of the physics: splitting for MRI (and any physics with
unsampled entries), the discrepancy principle otherwise. The noise level is the physics' own
when it states one, else :func:`~deepinv_tunable.physics.noise.estimate_noise_sigma`.

Every choice is reproducible from ``seed`` and records the rule, every candidate and its score,
and whether it sits at a bound of the search interval (then a warning says so).

``"auto"`` on a solver is :class:`~deepinv_tunable.tuning.tuned.Tuned` (:mod:`.tuned`): the solver
declares the parameter and how a candidate is solved, the wrapper searches and records.

The package, one module per concern: :mod:`.select` (the search and its record),
:mod:`.rules` (the scores), :mod:`.holdout` (measurement splitting's masks), :mod:`.search`
(the scalar search), :mod:`.grid` (ground-truth grid search for benchmarks),
:mod:`.latent_size`, :mod:`.k_rules` and :mod:`.spectrum` (the latent size k of a tunable prior).
Each name is imported on first use (:mod:`deepinv_tunable.utils.lazy`).
"""

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "GridSearchResult": "grid",
    "grid_search": "grid",
    "CENTRE_LINES": "holdout",
    "HOLDOUT_FRACTION": "holdout",
    "LINE_HOLDOUT_FRACTION": "holdout",
    "PROTECT_FACTOR": "holdout",
    "VIEW_HOLDOUT_FRACTION": "holdout",
    "holdout_mask": "holdout",
    "kept_fraction": "holdout",
    "line_holdout_mask": "holdout",
    "masked_physics": "holdout",
    "max_splits": "holdout",
    "measured_views": "holdout",
    "sampled_lines": "holdout",
    "split_keeps": "holdout",
    "whole_line_holdout": "holdout",
    "SweepResult": "k_rules",
    "discrepancy_k": "k_rules",
    "measurement_splitting_k": "k_rules",
    "nearest_k": "spectrum",
    "one_standard_error_k": "k_rules",
    "sweep_k": "k_rules",
    "AutoK": "latent_size",
    "K_RULES": "latent_size",
    "default_k_rule": "latent_size",
    "select_k": "latent_size",
    "DISCREPANCY_TAU": "rules",
    "DISCREPANCY_TAU_BLUR": "rules",
    "RULES": "rules",
    "SURE_PROBE": "rules",
    "default_rule": "rules",
    "discrepancy_factor": "rules",
    "sure_score": "rules",
    "MINIMUM_SEARCH": "search",
    "ROOT_SEARCH": "search",
    "ParameterChoice": "select",
    "Solve": "select",
    "Start": "select",
    "auto_requested": "select",
    "heldout_scores": "select",
    "search_parameter": "select",
    "select_parameter": "select",
    "Tuned": "tuned",
    "TuningPlan": "tuned",
    "solve_tuned": "tuned",
    "SPECTRUM_FILE": "spectrum",
    "closed_form_k": "spectrum",
    "effective_noise_sigma": "spectrum",
    "generator_spectrum": "spectrum",
    "linear_denoising_mse": "spectrum",
    "load_spectrum": "spectrum",
    "optimal_k_linear": "spectrum",
    "save_spectrum": "spectrum",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
