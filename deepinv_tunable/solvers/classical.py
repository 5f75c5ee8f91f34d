r"""Classical baselines from deepinv, wrapped with the package's solver interface."""

from __future__ import annotations

import deepinv as dinv
import torch

from ..physics import measurement_baseline, operator_norm_sq, to_physics_domain
from ..tuning import auto_requested
from ..utils.checks import renamed_keyword, require_linear
from .base import Reconstruction, TunableReconstructor

#: TV weight in deepinv's PGD scaling (data term :math:`\tfrac12\|Ax-y\|^2`) for images in
#: [0, 1]. At 4x MRI with 1% noise, a grid search on calibration slices picked 0.02 on both
#: bundled volumes (MNI template, axial; ITK subject, coronal), 0.6-0.8 dB above 0.01. Other
#: tasks want other weights (8x MRI and inpainting: about 0.05; deblurring: about 0.002), so
#: tune per task with :func:`deepinv_tunable.tuning.grid.grid_search` (``benchmarks/run_baselines.py``).
DEFAULT_TV_LAMBDA = 0.02


class PseudoInverse(TunableReconstructor):
    r"""The physics' pseudo-inverse :math:`A^\dagger y` (zero-filled for MRI, least squares by conjugate gradient for CT).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "inpainting", "keep_fraction": 1.0}, (8, 8))
        >>> x = torch.rand(1, 1, 8, 8)
        >>> torch.allclose(PseudoInverse()(physics(x), physics), x)
        True
    """

    gaussian_noise = False  # no data term: any noise

    def _solve(self, y, physics, **kwargs):
        with torch.no_grad():
            return physics.A_dagger(y), None, {}


class MeasurementBaseline(TunableReconstructor):
    r"""The estimate a reader gets from the measurements alone, without a prior.

    :math:`A^\dagger y` (zero-filled MRI, the least-squares pseudo-inverse for CT, zero-filled
    inpainting), except for blur and denoising, where the pseudo-inverse is an unregularised
    inverse filter that amplifies the noise without bound, and the observed image :math:`y`
    itself is the baseline.

    :param bool fbp: for CT, the filtered back-projection instead of the least-squares
        pseudo-inverse (about 50x faster, noisier). Default ``False``.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "blur", "noise_sigma": 0.01}, (16, 16))
        >>> y = physics(torch.rand(1, 1, 16, 16))
        >>> torch.equal(MeasurementBaseline()(y, physics), y)
        True
    """

    gaussian_noise = False  # no data term: any noise

    def __init__(self, fbp: bool = False):
        super().__init__()
        self.fbp = bool(fbp)

    def _solve(self, y, physics, **kwargs):
        return measurement_baseline(y, physics, fbp=self.fbp), None, {}


class SliceStackTVPrior(dinv.optim.TVPrior):
    r"""Total variation of a stack of adjacent slices, through the slice axis too (2.5D):
    :math:`\|D_3 x\|_{1,2}` with :math:`D_3` the finite differences along the batch axis (the
    slices, in order) and in-plane, computed by deepinv's 3D :class:`~deepinv.models.TVDenoiser`
    on the batch seen as depth. The batch must hold consecutive slices of one volume.

    >>> prior = SliceStackTVPrior()
    >>> x = torch.zeros(4, 1, 8, 8); x[1] = 1.0  # one bright slice between dark ones
    >>> out = prior.prox(x, gamma=0.2)
    >>> bool(out[1].mean() < 1.0 and out[0].mean() > 0.0)  # smoothed across slices
    True
    """

    def prox(self, x: torch.Tensor, *args, gamma: float = 1.0, **kwargs) -> torch.Tensor:
        stack = x.permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, slices, H, W)
        return self.TVModel(stack, ths=gamma)[0].permute(1, 0, 2, 3)


#: ``(n_coarse, n_refine)`` of TV's automatic weight, under every rule: 3 log-spaced candidates
#: over ``tune_bounds``, then 2 refinement steps. Under splitting on the training subjects
#: (``pyradiomics_brain1`` 4x / 8x, the MNI template 4x; ``benchmarks/run_autotune.py``) it came
#: within 0.01 / 0.09 / 0.00 dB of the ground-truth oracle where 5 + 3 came within 0.26 / +0.10 /
#: 0.59, at 6 solves instead of 9 (the cost target is 5 solves' time).
TUNE_SEARCH = (3, 2)


class TVPGD(TunableReconstructor):
    r"""Total-variation reconstruction by deepinv's proximal gradient descent:

    .. math::

        \hat x = \arg\min_x \tfrac12 \|A x - y\|_2^2 + \lambda \|D x\|_{1,2}

    solved by :class:`deepinv.optim.PGD` with :class:`deepinv.optim.TVPrior`, started at the
    :class:`MeasurementBaseline` (zero-filled MRI, CT pseudo-inverse, the blurred image, ...), step
    :math:`1 / \|A\|_2^2` (power iteration).

    :param lambda_tv: TV weight :math:`\lambda`, or ``"auto"``: chosen per call from the measurements
        alone by :func:`~deepinv_tunable.tuning.select.select_parameter` (``tune_rule``, over
        ``tune_bounds``; one value for the batch: :data:`~deepinv_tunable.solvers.classical.TUNE_SEARCH`, 5 candidate solves, then the
        final solve under splitting; 4 under the discrepancy principle, whose chosen candidate
        is the answer), recorded in the result's ``choices``.
        Default ``"auto"``. (:data:`~deepinv_tunable.solvers.classical.DEFAULT_TV_LAMBDA` is a fixed value for 4x MRI at 1 % noise.)
    :param int max_iter: PGD iterations. Default 100 (``n_iter``: its former name, deprecated).
    :param int tv_inner_iter: iterations of the (warm-started) TV prox per PGD step. Default 20.
    :param bool through_slices: also penalise differences between consecutive slices of the batch
        (:class:`~deepinv_tunable.solvers.classical.SliceStackTVPrior`, 2.5D); the batch must then be consecutive slices. Default False.
    :param float tol: stop before ``max_iter`` once the relative change of the iterate,
        :math:`\|x_{k+1} - x_k\|_2 / \|x_{k+1}\|_2` averaged over the batch (deepinv's
        ``crit_conv="residual"``), falls below ``tol``; the result's ``n_iter`` is the number of
        iterations run. Meant for warm starts (``x_init`` near the answer, e.g. the neighbouring
        slice of a volume), which then stop after a fraction of ``max_iter``. Default ``None``
        (always ``max_iter`` iterations).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> y = physics(x)
        >>> x_hat = TVPGD(lambda_tv=0.1, max_iter=30)(y, physics)
        >>> bool((x_hat - x).pow(2).mean() < (y - x).pow(2).mean() / 4)
        True
    """

    tunable = ("lambda_tv",)

    def __init__(
        self,
        lambda_tv: float | str = "auto",
        max_iter: int = 100,
        tv_inner_iter: int = 20,
        through_slices: bool = False,
        tune_rule: str = "auto",
        tune_bounds: tuple[float, float] = (3e-4, 0.3),
        tune_iter: int | None = None,
        seed: int = 0,
        n_iter: int | None = None,
        tol: float | None = None,
    ):
        super().__init__()
        max_iter = renamed_keyword("TVPGD", "n_iter", n_iter, "max_iter", max_iter)
        if not auto_requested(lambda_tv) and lambda_tv < 0:
            raise ValueError(f"lambda_tv must be >= 0, got {lambda_tv} (or 'auto')")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.lambda_tv = lambda_tv if auto_requested(lambda_tv) else float(lambda_tv)
        self.max_iter = int(max_iter)
        # candidates run as many iterations as the final solve, from the same start, so that their
        # scores describe the estimate the caller gets
        self.tune_iter = self.max_iter if tune_iter is None else int(tune_iter)
        self.tune_rule, self.tune_bounds, self.seed = tune_rule, tune_bounds, int(seed)
        self.tv_inner_iter = int(tv_inner_iter)
        self.through_slices = bool(through_slices)
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be positive (or None for max_iter iterations), got {tol}")
        self.tol = None if tol is None else float(tol)

    @staticmethod
    def step_size(physics: dinv.physics.Physics, x: torch.Tensor) -> float:
        """:math:`1 / \\|A\\|^2` (:func:`~deepinv_tunable.physics.measurement.operator_norm_sq`, deterministic;
        50 power iterations at most, as deepinv's own default)."""
        norm_sq = operator_norm_sq(physics, tuple(x.shape), max_iter=50, rel_tol=1e-3, device=x.device, dtype=x.dtype)
        return 1.0 / max(norm_sq, 1e-12)

    def _pgd(
        self,
        y,
        physics,
        lam: float,
        n_iter: int,
        x_init: torch.Tensor | None = None,
        memo: dict | None = None,
        tol: float | None = None,
    ) -> tuple[torch.Tensor, int, bool | None]:
        """``n_iter`` PGD steps from ``x_init`` (default: the measurement baseline), fewer when
        ``tol`` stops them (a final solve passes the solver's ``tol``; candidates run all theirs).
        ``memo`` keeps the baseline per ``(y, physics)`` and the step size per physics object for
        one call: the candidates of an automatic choice share them, and on 60-view CT the baseline
        and the power iteration together cost a quarter of a solve. Returns the estimate, the
        iterations run and whether ``tol`` was met (``None`` without ``tol``)."""
        with torch.no_grad():
            memo = {} if memo is None else memo
            if x_init is None:
                if ("start", id(y), id(physics)) not in memo:
                    memo["start", id(y), id(physics)] = MeasurementBaseline()(y, physics)
                x0 = memo["start", id(y), id(physics)]
            else:  # an image or already in the physics' domain
                x0 = to_physics_domain(x_init, physics)
            if ("step", id(physics)) not in memo:
                memo["step", id(physics)] = self.step_size(physics, x0)
            solver = dinv.optim.PGD(
                data_fidelity=dinv.optim.L2(),
                prior=(SliceStackTVPrior if self.through_slices else dinv.optim.TVPrior)(n_it_max=self.tv_inner_iter),
                lambda_reg=lam,
                stepsize=memo["step", id(physics)],
                max_iter=n_iter,
                early_stop=tol is not None,
                crit_conv="residual",
                thres_conv=tol or 0.0,
                custom_init=lambda y_, physics_: {"est": (x0, x0)},
            )
            if tol is None:
                return solver(y, physics), n_iter, None
            x, metrics = solver(y, physics, compute_metrics=True)  # its per-iteration residuals count the iterations
            return x, len(metrics["residual"][0]), bool(solver.has_converged)

    def _final(self, y, physics, lam: float, x_init: torch.Tensor | None, memo: dict | None = None) -> Reconstruction:
        """The solve the caller gets: ``max_iter`` iterations at most, stopped by ``tol``."""
        x, n_iter, converged = self._pgd(y, physics, lam, self.max_iter, x_init, memo, self.tol)
        return self._result(x, lam, n_iter, converged)

    def tuning_plan(self, name, y, physics, x_init: torch.Tensor | None = None, **kwargs):
        """``lambda_tv="auto"``: candidates run as many iterations as the final solve from the same
        start (their scores describe the estimate the caller gets), so the chosen candidate is
        returned as it is when ``tune_iter == max_iter`` (and no ``x_init`` or ``tol`` changes the
        final solve). Candidates never stop early: the choice does not depend on ``tol``."""
        from ..tuning.tuned import TuningPlan

        require_linear(physics, "TVPGD")
        memo: dict = {}  # lives for this call only, with the tensors and physics objects it keys

        def finish(choice):
            if choice.estimate is not None and x_init is None and self.tune_iter == self.max_iter and self.tol is None:
                return self._result(choice.estimate, choice.value, self.max_iter)  # the candidate already is this solve
            return self._final(y, physics, choice.value, x_init, memo)

        return TuningPlan(
            candidate=lambda v, y_, ph_, x0: self._pgd(y_, ph_, v, self.tune_iter, x0, memo)[0],
            bounds=self.tune_bounds,
            finish=finish,
            rule=self.tune_rule,
            options={"seed": self.seed, "data_scaled": True, "n_coarse": TUNE_SEARCH[0], "n_refine": TUNE_SEARCH[1]},
        )

    def accepts_x_init(self, physics) -> bool:
        return True

    @staticmethod
    def _result(x: torch.Tensor, lam: float, n_iter: int, converged: bool | None = None) -> Reconstruction:
        return Reconstruction(x, 0.0, n_iter=n_iter, converged=converged, parameters={"lambda_tv": float(lam)})

    def _solve(self, y, physics, lambda_tv: float | None = None, x_init: torch.Tensor | None = None, **kwargs):
        require_linear(physics, "TVPGD")
        lam = float(self.lambda_tv if lambda_tv is None else lambda_tv)
        return self._final(y, physics, lam, x_init)
