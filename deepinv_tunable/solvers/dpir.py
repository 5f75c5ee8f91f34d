r"""DPIR (Zhang et al., 2021) with any deepinv denoiser and any iteration count: deepinv's
:class:`~deepinv.optim.DPIR` fixes 8 iterations, which is short for accelerated MRI.

Half-quadratic splitting with a plug-and-play denoiser whose noise level decreases
geometrically from :math:`\sigma_1 = 49/255` to the target :math:`\sigma`, as in deepinv's
``get_DPIR_params``:

.. math::

    \sigma_k = \sigma_1 (\sigma / \sigma_1)^{k / (K - 1)},\qquad
    x_{k+1} = D_{\sigma_k}\big(\operatorname{prox}_{\gamma_k f}(x_k)\big),\qquad
    \gamma_k = \frac{1}{0.23} \Big(\frac{\sigma_k}{\max(\sigma, 0.01)}\Big)^2,

run by deepinv's own HQS iterator (:class:`~deepinv.optim.BaseOptim`), so the data step is the
physics' ``prox_l2`` (closed form for MRI masks and FFT blur, conjugate gradient for CT).
"""

from __future__ import annotations

import deepinv as dinv
import torch
from deepinv.optim.optimizers import create_iterator

from ..physics import NOISE_FLOOR, resolve_sigma
from ..utils.precision import at_precision, resolve_precision
from .base import Reconstruction, TunableReconstructor

DPIR_SIGMA_START = 49.0 / 255.0


def dpir_schedule(sigma: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoiser noise levels and HQS step sizes of DPIR for ``max_iter`` iterations.

    >>> levels, steps = dpir_schedule(0.01, 8)
    >>> round(float(levels[0]), 4), round(float(levels[-1]), 4), len(levels)
    (0.1922, 0.01, 8)
    """
    if not sigma > 0:
        raise ValueError(f"DPIR's target noise level sigma must be positive, got {sigma}")
    if max_iter < 2:
        raise ValueError(f"DPIR needs max_iter >= 2, got {max_iter}")
    start = torch.tensor(max(DPIR_SIGMA_START, sigma), dtype=torch.float32)
    levels = torch.logspace(torch.log10(start), torch.log10(torch.tensor(sigma, dtype=torch.float32)), max_iter)
    steps = (levels / max(0.01, sigma)) ** 2 / 0.23
    return levels, steps


class DPIR(TunableReconstructor):
    r"""DPIR with a plug-and-play ``denoiser`` (deepinv :class:`~deepinv.models.Denoiser`), with
    deepinv's :class:`deepinv.optim.DPIR` signature (``sigma``, ``denoiser``, ``device``) and
    this package's extras as keywords.

    :param sigma: final denoiser noise level: a number (a larger value regularises more);
        ``"noise"``: the measurement noise std of each call (the physics', else estimated from
        ``y``, at least :data:`~deepinv_tunable.physics.noise.NOISE_FLOOR`), deepinv's own choice
        and one solve; or ``"auto"``: chosen per call from the measurements alone by
        :func:`~deepinv_tunable.tuning.select.select_parameter` between ``tune_bounds`` times that
        std (4 solves or more), recorded in the result's ``choices``. Default ``"noise"``: on 9
        rows of training subjects (4 slices each, noise 0.01 unless stated) it was ahead of
        ``"auto"`` on 4x MRI (+0.97 / +0.50 dB), 60-view CT (+1.57), deblurring (+0.18 / 0.00)
        and denoising at 0.05 (+5.1: the rule chose the top of its interval), behind it on 8x MRI
        (-0.26) and on 4x MRI at noise 0.003 / 0.03 (-0.74 / -0.20), at a fifth of the cost; on
        the MNI template (32 slices, 4x) +0.57 dB.
    :param deepinv.models.Denoiser denoiser: e.g. :class:`~deepinv_tunable.priors.DnCNNDenoiser`;
        ``None`` (default) loads the package's default pixel prior
        (:func:`~deepinv_tunable.priors.load_pixel_denoiser`).
    :param str, torch.device device: where the denoiser runs. Default ``"cpu"``.
    :param int max_iter: HQS iterations. Default 8 (deepinv's DPIR).
    :param str tune_rule: the rule of ``sigma="auto"``. Default ``"auto"``.
    :param tuple tune_bounds: the search interval of ``sigma="auto"``, in noise stds. Default ``(0.5, 3)``.
    :param int seed: seed of the rule's random splits. Default 0.
    :param str precision: the network's precision (:mod:`deepinv_tunable.utils.precision`): ``"fp32"``,
        ``"bf16"`` (autocast of the network calls only, never the physics) or ``"auto"`` (bf16 where
        the hardware computes it natively). Default ``"auto"``: on reserved MRI 4x slices bf16 was
        1.9-2.2x faster at +0.00 / +0.02 dB (benchmarks/inference_precision.py).

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> from deepinv_tunable.priors import DnCNNDenoiser
        >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (32, 32))
        >>> x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 1
        >>> y = physics(x)
        >>> x_hat = DPIR(sigma=0.05, denoiser=DnCNNDenoiser.from_pretrained())(y, physics)
        >>> bool((x_hat - x).pow(2).mean() < (y - x).pow(2).mean() / 4)
        True

    Reference: K. Zhang, Y. Li, W. Zuo, L. Zhang, L. Van Gool and R. Timofte, "Plug-and-play image
    restoration with deep denoiser prior", IEEE TPAMI 2021.
    """

    unit_range = True

    tunable = ("sigma",)

    def __init__(
        self,
        sigma: float | str = "noise",
        denoiser: dinv.models.Denoiser | None = None,
        device: str | torch.device = "cpu",
        *,
        max_iter: int = 8,
        tune_rule: str = "auto",
        tune_bounds: tuple[float, float] = (0.5, 3.0),
        seed: int = 0,
        precision: str = "auto",
    ):
        super().__init__()
        if isinstance(sigma, torch.nn.Module):
            raise TypeError(
                "DPIR takes deepinv's argument order DPIR(sigma, denoiser, device): the first argument is a "
                f"{type(sigma).__name__}; pass it as DPIR(denoiser=...)"
            )
        named = isinstance(sigma, str)
        if named and sigma not in ("noise", "auto"):
            raise ValueError(f"sigma must be a positive noise level, 'noise' or 'auto', got {sigma!r}")
        dpir_schedule(0.01 if named else sigma, max_iter)  # validates
        if denoiser is None:
            from ..priors import load_pixel_denoiser

            denoiser = load_pixel_denoiser(device=device)
        self.denoiser = denoiser.to(device)
        self.sigma = sigma if named else float(sigma)
        self.max_iter = int(max_iter)
        self.tune_rule, self.tune_bounds, self.seed = tune_rule, tune_bounds, int(seed)
        resolve_precision(precision, device)  # validates
        self.precision = precision

    def _hqs(self, y, physics, sigma: float, max_iter: int) -> torch.Tensor:
        levels, steps = dpir_schedule(sigma, max_iter)
        prior = dinv.optim.PnP(denoiser=at_precision(self.denoiser, self.precision))
        solver = dinv.optim.BaseOptim(
            create_iterator("HQS", prior=prior, cost_fn=None, g_first=False),
            max_iter=max_iter,
            data_fidelity=dinv.optim.L2(),
            prior=prior,
            early_stop=False,
            params_algo={"stepsize": steps.tolist(), "g_param": levels.tolist()},
        )
        with torch.no_grad():
            return solver(y, physics)

    def tuning_plan(self, name, y, physics, max_iter: int | None = None, **kwargs):
        """``sigma="auto"``: the search interval is ``tune_bounds`` times the noise level (on
        noiseless data, the noise floor: the schedule ends inside the denoiser's range), resolved
        once here; the chosen candidate is the final solve."""
        from ..tuning.tuned import TuningPlan

        max_iter = self.max_iter if max_iter is None else int(max_iter)
        noise, estimated = resolve_sigma(y, physics, floor=NOISE_FLOOR)

        def finish(choice):
            reused = choice.estimate is not None
            x = choice.estimate if reused else self._hqs(y, physics, choice.value, max_iter)
            return self._result(x, choice.value, max_iter, solves=choice.n_solves + (0 if reused else 1))

        return TuningPlan(
            candidate=lambda s, y_, ph_, x0: self._hqs(y_, ph_, s, max_iter),
            bounds=tuple(float(b) * noise for b in self.tune_bounds),
            finish=finish,
            rule=self.tune_rule,
            # the interval is DPIR's plan around the noise level (on noiseless data, around the
            # noise floor): a choice at its edge is flagged, not searched beyond
            options={"sigma": noise, "seed": self.seed, "resolve_bounds": False},
            sigma_estimated=estimated,
        )

    @staticmethod
    def _result(x: torch.Tensor, sigma: float, max_iter: int, solves: int = 1) -> Reconstruction:
        """``nfe``: the denoiser's passes per image, the search's candidate solves included."""
        return Reconstruction(x, 0.0, n_iter=max_iter, nfe=max_iter * solves, parameters={"sigma": float(sigma)})

    def _solve(self, y, physics, sigma: float | str | None = None, max_iter: int | None = None, **kwargs):
        sigma = self.sigma if sigma is None else sigma
        sigma = resolve_sigma(y, physics, floor=NOISE_FLOOR)[0] if sigma == "noise" else float(sigma)
        max_iter = self.max_iter if max_iter is None else int(max_iter)
        return self._result(self._hqs(y, physics, sigma, max_iter), sigma, max_iter)
