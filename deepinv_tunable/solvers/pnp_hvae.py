r"""PnP-HVAE (:footcite:t:`prost2023pnphvae`, Algorithm 2, eq. 19): alternate the tempered HVAE reconstruction
with the data term's proximal operator,

.. math::

    x_{k+1} = \operatorname{prox}_{\gamma^2 f}\big(\mathrm{HVAE}(x_k, \tau)\big)
            = \arg\min_x \frac{\|A x - y\|^2}{2\sigma^2} + \frac{\|x - \mathrm{HVAE}(x_k, \tau)\|^2}{2\gamma^2},

until :math:`\|x_{k+1} - x_k\| / \|x_k\| <` ``tol`` or ``max_iter``. The proximal step is the
physics' own ``prox_l2`` with deepinv's weight :math:`\gamma^2/\sigma^2` (closed form for MRI
masks, inpainting and FFT blur; conjugate gradient otherwise). No gradient goes through the
network, and the network is fully convolutional, so any image size runs.

The **annealed** schedule (``schedule="anneal"``) runs the same HVAE in DPIR's continuation
instead (:class:`~deepinv_tunable.solvers.DPIR`: half-quadratic splitting whose denoiser level
:math:`\sigma_k` falls geometrically from 49/255 to a final level), the temperature of each step
:math:`\tau_k = \tau(\sigma_k)` read from a map measured for the network
(:func:`~deepinv_tunable.priors.corpus_tau_for_sigma` for ``hvae_mri64``):

.. math::

    x_{k+1} = \mathrm{HVAE}\big(\operatorname{prox}_{\gamma_k f}(x_k), \tau(\sigma_k)\big)

(deepinv's HQS order: the data step, then the denoiser, whose output is returned).

Where the measurements see every frequency (CT, deblurring), the fixed point keeps what the
first iterate got wrong (60-view streaks); where k-space lines are missing (accelerated MRI) it is
the better of the two. On 4 slices of subjects no reserved row uses, every parameter chosen from
the measurements (``schedule`` ``"fixed"`` with ``tau="auto"`` against ``"anneal"``): 60-view CT
of ``pyradiomics_lung1`` 27.98 against 31.45 dB; deblurring of ``nibabel_example4d`` and
``dipy_aniso_vox`` 27.58 / 29.24 against 28.38 / 29.96 dB; 4x MRI of the same two 30.79 / 33.69
against 29.86 / 33.14 dB; inpainting of 50 % of the pixels 24.56 / 28.81 against 15.65 / 27.37 dB.
``schedule="auto"`` follows that split (:func:`resolve_schedule`).

Why the fixed point runs its own loop (``_iterate``) rather than deepinv's
:class:`~deepinv.optim.BaseOptim` with the HQS iterator (prior step first), which computes the same
step: deepinv 0.5's fixed-point loop tests convergence only from its third iteration and on the
batch *mean* of relative changes, while a batch of slices here is converged when its *worst*
slice is (and the residual of every iteration is recorded: the automatic temperature reuses a
converged candidate as the answer); and the same loop carries :class:`~deepinv_tunable.solvers.PnPHVAESampler`,
whose data step is a Gaussian draw, not a proximal step. The annealed schedule, whose math is
deepinv's, is deepinv's loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import deepinv as dinv
import torch

from ..nets.hvae import HVAE
from ..physics import NOISE_FLOOR, noise_sigma, physics_domain_adjoint, to_physics_domain
from ..priors import HVAEDenoiser, corpus_tau_for_sigma, tau_for_sigma
from ..tuning import auto_requested, default_rule
from ..utils.checks import require_linear
from ..utils.precision import PASS_PIXELS, in_chunks, network_precision, resolve_precision
from .base import NoiseStream, Reconstruction, TunableReconstructor
from .classical import MeasurementBaseline
from .dpir import DPIR, DPIR_SIGMA_START, dpir_schedule

#: disjoint hold-outs the splitting rule sums over when it chooses tau (``tune_splits``), and the
#: share of the sampled MRI lines each holds out (``tune_line_holdout``): one 30 % hold-out fits
#: a problem harder than the real one (4x becomes about 5.7x) and chose tau 0.1-0.3 too low;
#: three disjoint 15 % hold-outs keep the fit near the real problem without a noisier score
#: (chosen on the MNI template and a training subject, benchmarks/run_tau_holdout.py).
TUNE_SPLITS = 3
#: the share of the sampled MRI lines each of the :data:`TUNE_SPLITS` hold-outs takes (see above)
TUNE_LINE_HOLDOUT = 0.15

#: the pilot every tau candidate of one fit problem starts from (``tune_pilot``: temperature,
#: iterations). At 8x MRI the iteration is still moving after 100 steps, and 20-iteration
#: candidates from the zero-filled image scored how fast each temperature leaves it: the split
#: score chose tau 0.69 where the converged solves peak at 0.9 (-0.86 dB on a training subject).
#: From a shared 30-iteration pilot at 0.8 the same 20 iterations chose 0.81 (-0.08 dB), at 4x
#: 1.0 (-0.05 dB), for 3.9 solves instead of 4.2 (benchmarks/run_tau_holdout.py, training subjects).
TUNE_PILOT = (0.8, 30)

#: noise floor used when the physics is noiseless (the prox weight is gamma^2 / sigma^2): the
#: package's :data:`~deepinv_tunable.physics.noise.NOISE_FLOOR`.
MIN_SIGMA = NOISE_FLOOR

#: the iteration schedules of :class:`PnPHVAE` (``schedule=``)
SCHEDULES = ("auto", "fixed", "anneal")

#: iterations of the annealed schedule: DPIR's own 8 beat 24 on 60-view CT of a training subject
#: (``pyradiomics_lung1``: 32.1 against 30.4 dB), where the longer schedule lingers at low levels
#: and lets the HVAE's texture back into the streaks.
ANNEAL_ITER = 8


def _tau_value(tau: float | list[float]) -> float | list[float]:
    """A temperature as a result reports it: a float, or one float per latent group."""
    return float(tau) if isinstance(tau, (int, float)) else [float(t) for t in tau]


def _tau_text(tau: float | list[float]) -> str:
    value = _tau_value(tau)
    return f"{value:.3g}" if isinstance(value, float) else "[" + ", ".join(f"{t:.3g}" for t in value) + "]"


def resolve_schedule(schedule: str, tau, physics: dinv.physics.Physics) -> str:
    """The schedule a :class:`PnPHVAE` call runs: ``schedule`` itself unless ``"auto"``; then
    ``"anneal"`` when the temperature is left to the solver (``tau="auto"``) and the physics is
    one whose parameters the discrepancy principle chooses (:func:`~deepinv_tunable.tuning.rules.default_rule`:
    CT, blur, denoising, ...), ``"fixed"`` otherwise (MRI and inpainting, where the fixed point is
    better; a given temperature also asks for the fixed point, the only schedule that uses it).

    >>> from deepinv_tunable.physics import build_physics
    >>> mri, blur = (build_physics({"kind": k}, (8, 8)) for k in ("mri", "blur"))
    >>> resolve_schedule("auto", "auto", mri), resolve_schedule("auto", "auto", blur), resolve_schedule("auto", 0.8, blur)
    ('fixed', 'anneal', 'fixed')
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule != "auto":
        return schedule
    return "anneal" if auto_requested(tau) and default_rule(physics) == "discrepancy" else "fixed"


class RealImageDenoiser(dinv.models.Denoiser):
    r"""``denoiser`` on the real image of ``physics``' domain, returned in that domain:
    :math:`x \mapsto E(D_\sigma(E^* x))` with :math:`E` :func:`~deepinv_tunable.physics.domain.to_physics_domain`
    (for 2-channel MRI the real channel is denoised and the imaginary one set to zero, the prior
    "the image is real" that :meth:`PnPHVAE.denoise` also applies; other physics: ``denoiser`` itself).
    On 4x MRI of two training subjects the annealed HVAE reaches the same PSNR this way as when it
    denoises both channels (within 0.02 dB) at half the network evaluations.

    :param deepinv.models.Denoiser denoiser: a denoiser of real single-channel images.
    :param deepinv.physics.Physics physics: the physics whose image domain ``x`` lives in.
    """

    def __init__(self, denoiser: dinv.models.Denoiser, physics: dinv.physics.Physics):
        super().__init__()
        self.denoiser, self.physics = denoiser, physics

    def forward(self, x: torch.Tensor, sigma=None, **kwargs) -> torch.Tensor:
        real = physics_domain_adjoint(x, self.physics)
        return to_physics_domain(self.denoiser(real, sigma), self.physics)


class PnPHVAE(TunableReconstructor):
    r"""PnP-HVAE reconstruction with a hierarchical VAE prior.

    The HVAE acts on real images: for complex (2-channel) MRI it sees the real channel and
    returns an image with zero imaginary part, so the prior also encodes "the image is real".

    :param ~deepinv_tunable.nets.HVAE hvae: trained hierarchical VAE (e.g. ``pretrained.load("hvae_mri64")``).
    :param tau: temperature in (0, 1] (float or one per group), or ``"auto"``: chosen per call from
        the measurements alone by :func:`~deepinv_tunable.tuning.select.select_parameter` (``tune_rule``
        over ``tune_bounds``), recorded in the result's ``choices``. Under the splitting rule (MRI)
        each hold-out gets a pilot of ``tune_pilot`` and 5 candidates of ``tune_iter`` iterations
        from it; under the discrepancy principle (blur, CT) the 5 candidates are full solves and the
        chosen one is returned (5 solves in all). Default ``"auto"``. ``None``: :func:`~deepinv_tunable.priors.tau_for_sigma`
        of the physics' noise std (the paper's 0.95 / 0.8 / 0.6 for 1% / 3% / 5% noise).
    :param float gamma: decoder std :math:`\gamma` in the prox. Default: the HVAE's own.
    :param float sigma: measurement noise std. Default: the physics' Gaussian noise model
        (at least :data:`~deepinv_tunable.solvers.pnp_hvae.MIN_SIGMA`).
    :param int max_iter: iteration cap. Default 50: on MRI 4x (ITK head slices 60-67 and MNI
        template slices 60-67, tau 1.0, ``python -m benchmarks volume_speed --solver pnp_hvae
        --sweep``) 50 iterations gave 29.63 / 31.70 dB and 100 gave 29.50 / 31.64 (the fixed point
        drifts after about 50), 30 gave 29.31 / 31.60.
    :param float tol: stop when the relative change of every image is below this. Default 1e-4.
    :param bool pad: pad image sizes that are not a multiple of the HVAE stride. Default True.
    :param int tune_splits: disjoint hold-outs the splitting rule sums its score over when
        ``tau="auto"``. Default :data:`~deepinv_tunable.solvers.pnp_hvae.TUNE_SPLITS` (3; each adds a pilot and 5 short solves).
    :param float tune_line_holdout: share of the sampled MRI lines each hold-out takes. Default
        :data:`~deepinv_tunable.solvers.pnp_hvae.TUNE_LINE_HOLDOUT` (0.15).
    :param tuple tune_pilot: ``(tau, iterations)`` of the pilot solve every candidate of one fit
        problem starts from, or ``None`` to start them from the measurement baseline. Default
        :data:`~deepinv_tunable.solvers.pnp_hvae.TUNE_PILOT` (0.8, 30).
    :param str schedule: ``"fixed"``: the fixed-point iteration above at one temperature;
        ``"anneal"``: DPIR's continuation with the temperature of each level from ``anneal_tau_map``
        (``tau`` must then be ``"auto"``; ``gamma``, ``max_iter`` and ``tol`` are not used);
        ``"auto"``: :func:`~deepinv_tunable.solvers.pnp_hvae.resolve_schedule` (the annealed one for CT, blur and denoising when
        ``tau="auto"``, the fixed point otherwise). The schedule run is in the result's
        ``extras["schedule"]``. Default ``"auto"``.
    :param int anneal_iter: iterations of the annealed schedule. Default :data:`~deepinv_tunable.solvers.pnp_hvae.ANNEAL_ITER` (8).
    :param anneal_sigma: the annealed schedule's final denoiser level: a number; ``"noise"``: the
        measurement noise std (the physics', else estimated from ``y``; DPIR's own choice; at least
        :data:`~deepinv_tunable.solvers.pnp_hvae.MIN_SIGMA`); or
        ``"auto"``: chosen per call from the measurements (:class:`~deepinv_tunable.solvers.DPIR`'s
        rule, between 0.5 and 3 times the noise std; 5 solves), recorded in
        ``choices["anneal_sigma"]``. Default ``"noise"``: on 60-view CT of a training subject the
        discrepancy principle chose 2.6 times the noise std and lost 0.8 dB to it (30.63 against
        31.45 dB on 4 slices of ``pyradiomics_lung1``; equal on deblurring), at 5 times the cost.
    :param Callable anneal_tau_map: denoiser level -> temperature of the annealed schedule; it is
        a property of the network (measure one for another HVAE with
        ``benchmarks/run_hvae_tau_map.py``). Default :func:`~deepinv_tunable.priors.corpus_tau_for_sigma`
        (measured for ``hvae_mri64``).
    :param str precision: the HVAE's precision (:mod:`deepinv_tunable.utils.precision`): ``"fp32"``,
        ``"bf16"`` or ``"auto"``. Default ``"fp32"``: bf16 was 2.3x faster on reserved MRI 4x slices
        (+0.08 dB), but its rounding (about 4e-3 relative) sits above the fixed point's stopping
        tolerance ``tol`` (1e-4), which a bf16 iteration cannot be relied on to reach.
    :param int pass_pixels: pixels one HVAE pass holds at most; a larger batch goes through in
        groups of slices (:func:`~deepinv_tunable.utils.precision.in_chunks`; same result, lower peak
        memory). Default :data:`~deepinv_tunable.utils.precision.PASS_PIXELS` (16 slices of 128x128,
        4 of 256x256: 16 slices of the 256x256x189 MNI volume per batch then peaked at 2,002 MiB
        resident instead of 3,967 in one pass, ``python -m benchmarks volume --solver pnp_hvae
        --slices 60 140 16``); ``None``: the whole batch at once.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.nets import HVAE
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.01}, (16, 16))
        >>> solver = PnPHVAE(HVAE(width=8, groups_per_scale=(1, 1)), max_iter=5, tol=0.0)  # run all 5
        >>> out = solver.reconstruct(physics(torch.rand(1, 1, 16, 16)), physics)
        >>> out.x.shape, out.n_iter, len(out.extras["residuals"])
        (torch.Size([1, 1, 16, 16]), 5, 5)
    """

    unit_range = True

    tunable = ("tau",)

    def __init__(
        self,
        hvae: HVAE,
        tau: float | list[float] | str | None = "auto",
        gamma: float | None = None,
        sigma: float | None = None,
        max_iter: int = 50,
        tol: float = 1e-4,
        pad: bool = True,
        tune_rule: str = "auto",
        tune_bounds: tuple[float, float] = (0.5, 1.0),
        tune_iter: int = 20,
        seed: int = 0,
        tune_splits: int = TUNE_SPLITS,
        tune_line_holdout: float = TUNE_LINE_HOLDOUT,
        tune_pilot: tuple[float, int] | None = TUNE_PILOT,
        schedule: str = "auto",
        anneal_iter: int = ANNEAL_ITER,
        anneal_sigma: float | str = "noise",
        anneal_tau_map: Callable[[float], float] = corpus_tau_for_sigma,
        precision: str = "fp32",
        pass_pixels: int | None = PASS_PIXELS,
    ):
        super().__init__()
        resolve_precision(precision, "cpu")  # validates
        if pass_pixels is not None and pass_pixels < 1:
            raise ValueError(f"pass_pixels must be >= 1 or None, got {pass_pixels}")
        self.precision, self.pass_pixels = precision, pass_pixels
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if schedule == "anneal" and not auto_requested(tau):
            raise ValueError(
                f"schedule='anneal' takes each step's temperature from anneal_tau_map; tau must be 'auto', got {tau!r}"
            )
        named = isinstance(anneal_sigma, str) and anneal_sigma in ("noise", "auto")
        if not named and not (isinstance(anneal_sigma, (int, float)) and anneal_sigma > 0):
            raise ValueError(f"anneal_sigma must be a positive noise level, 'noise' or 'auto', got {anneal_sigma!r}")
        dpir_schedule(0.01 if named else anneal_sigma, anneal_iter)  # validates anneal_iter
        self.schedule, self.anneal_iter, self.anneal_sigma = schedule, int(anneal_iter), anneal_sigma
        self.anneal_tau_map = anneal_tau_map
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if gamma is not None and gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if tau is not None and not auto_requested(tau):
            hvae.temperatures(tau)  # validates
        self.hvae = hvae
        self.tune_rule, self.tune_bounds, self.tune_iter, self.seed = tune_rule, tune_bounds, int(tune_iter), int(seed)
        self.tune_splits, self.tune_line_holdout = tune_splits, tune_line_holdout
        if tune_pilot is not None:
            try:
                pilot_tau, pilot_iter = float(tune_pilot[0]), int(tune_pilot[1])
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"tune_pilot must be (tau, iterations) or None, got {tune_pilot!r}") from None
            if not 0 < pilot_tau <= 1 or pilot_iter < 1:
                raise ValueError(f"tune_pilot needs a tau in (0, 1] and >= 1 iterations, got {tune_pilot!r}")
            tune_pilot = (pilot_tau, pilot_iter)
        self.tune_pilot = tune_pilot
        self.tau, self.gamma, self.sigma = tau, gamma, sigma
        self.max_iter, self.tol, self.pad = int(max_iter), float(tol), pad

    def denoise(self, x: torch.Tensor, physics: dinv.physics.Physics, tau) -> torch.Tensor:
        """:math:`\\mathrm{HVAE}(x, \\tau)` for ``x`` in the physics' image domain."""
        real = physics_domain_adjoint(x, physics)
        with network_precision(self.precision, real.device):
            estimate = in_chunks(lambda part: self.hvae.reconstruct(part, tau, pad=self.pad), real, self.pass_pixels)
        estimate = estimate.to(real.dtype)
        return to_physics_domain(estimate, physics)

    #: the solver's own noise (deterministic: none; a call's ``seed=`` still gives one)
    noise = NoiseStream()

    def _step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        physics,
        tau,
        gamma: float,
        sigma: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One iteration: the prox of the data term at the tempered HVAE reconstruction."""
        return physics.prox_l2(self.denoise(x, physics, tau), y, gamma**2 / sigma**2)

    def auto_parameters(self, physics, kwargs) -> list[str]:
        """``tau="auto"`` is searched under the fixed-point schedule only; the annealed schedule
        sets its temperatures by its map."""
        if resolve_schedule(self.schedule, self.tau, physics) == "anneal":
            return []
        return super().auto_parameters(physics, kwargs)

    def _context(self, y, physics, seed, generator) -> tuple[float, float, torch.Generator | None]:
        """``(sigma, gamma, generator)`` of one fixed-point call (whose physics must be linear)."""
        require_linear(physics, f"{type(self).__name__} (its data step is the physics' prox_l2)")
        sigma = max(self.sigma if self.sigma is not None else noise_sigma(physics, default=MIN_SIGMA), MIN_SIGMA)
        gamma = self.gamma if self.gamma is not None else self.hvae.gamma
        return sigma, gamma, self.noise.generator(y.device, seed, generator)

    def tuning_plan(self, name, y, physics, **call):
        """``tau="auto"`` under the fixed-point schedule (``tune_rule`` over ``tune_bounds``);
        ``call`` holds ``_solve``'s keywords."""
        from ..tuning.tuned import TuningPlan

        x_init, return_iterates = call.get("x_init"), call.get("return_iterates", False)
        sigma, gamma, generator = self._context(y, physics, call.get("seed"), call.get("generator"))
        rule = default_rule(physics) if self.tune_rule == "auto" else self.tune_rule
        full_solves: dict[float, list[float]] = {}  # tau -> residuals of a candidate that is the final solve
        pilot = None
        if rule == "discrepancy":
            # the residual of a short solve says little about the fixed point: on 60-view CT
            # it falls with tau after 20 iterations, while the converged residual is smallest
            # at the best tau (0.9) and grows again above it, where the iteration drifts into
            # artefacts (a training subject). Candidates are full solves, so the chosen one is
            # returned as it is: 5 solves in all.
            def candidate(t, y_, ph_, x0):
                x, residuals, _ = self._iterate(y_, ph_, t, gamma, sigma, generator, None, self.max_iter, False)
                full_solves[t] = residuals
                return x

        else:
            if self.tune_pilot is not None:
                pilot_tau, pilot_iter = self.tune_pilot
                pilot = lambda y_, ph_: self._iterate(  # noqa: E731
                    y_, ph_, pilot_tau, gamma, sigma, generator, None, pilot_iter, False
                )[0]

            def candidate(t, y_, ph_, x0):
                return self._iterate(y_, ph_, t, gamma, sigma, generator, x0, self.tune_iter, False)[0]

        def finish(choice):
            tau = choice.value
            if choice.estimate is not None and tau in full_solves and x_init is None and not return_iterates:
                solved = choice.estimate, full_solves[tau], None  # the candidate is this solve
            else:
                solved = self._iterate(y, physics, tau, gamma, sigma, generator, x_init, self.max_iter, return_iterates)
            return self._fixed_point_result(*solved, tau, gamma, sigma, tuned=True)

        return TuningPlan(
            candidate=candidate,
            bounds=self.tune_bounds,
            finish=finish,
            rule=rule,
            options={
                "log": False,
                "n_coarse": 3,
                "n_refine": 2,
                "start": pilot,
                "hard_bounds": (False, self.tune_bounds[1] >= 1.0),  # a temperature above 1 does not exist
                "seed": self.seed,
                "n_splits": self.tune_splits,
                "line_holdout_fraction": self.tune_line_holdout,
            },
        )

    @torch.no_grad()
    def accepts_x_init(self, physics) -> bool:
        """The fixed-point schedule starts from ``x_init``; the annealed one from the measurements."""
        return resolve_schedule(self.schedule, self.tau, physics) == "fixed"

    def _solve(
        self,
        y,
        physics,
        x_init: torch.Tensor | None = None,
        return_iterates: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ):
        require_linear(physics, f"{type(self).__name__} (its data step is the physics' prox_l2)")
        if resolve_schedule(self.schedule, self.tau, physics) == "anneal":
            if x_init is not None or return_iterates:
                raise ValueError(
                    "the annealed schedule starts from the measurements and keeps no iterates; use schedule='fixed'"
                )
            return self._anneal(y, physics)
        sigma, gamma, generator = self._context(y, physics, seed, generator)
        tau = self.tau if self.tau is not None else tau_for_sigma(sigma)
        solved = self._iterate(y, physics, tau, gamma, sigma, generator, x_init, self.max_iter, return_iterates)
        return self._fixed_point_result(*solved, tau, gamma, sigma, tuned=False)

    def _fixed_point_result(
        self, x, residuals: list[float], iterates, tau, gamma: float, sigma: float, tuned: bool
    ) -> Reconstruction:
        n = len(residuals)
        converged = residuals[-1] < self.tol
        if not converged and not self.stochastic:
            # not a fixed point: the tempered HVAE is not contractive enough on these inputs
            hint = "tau chosen from the measurements" if tuned else "a lower tau (or tau='auto') usually converges"
            warnings.warn(
                f"PnP-HVAE stopped after {n} iterations at relative change {residuals[-1]:.1e} "
                f"(tol {self.tol:g}) with tau {_tau_text(tau)}; {hint}",
                RuntimeWarning,
                stacklevel=6 if tuned else 5,  # the caller of reconstruct()
            )
        return Reconstruction(
            x=x,
            wall_time=0.0,
            n_iter=n,
            nfe=n,
            iterates=iterates,
            converged=None if self.stochastic else converged,
            parameters={"tau": _tau_value(tau), "gamma": float(gamma), "sigma": float(sigma)},
            extras={"residuals": residuals, "schedule": "fixed"},
        )

    def _anneal(self, y, physics) -> Reconstruction:
        """The annealed schedule: the package's :class:`DPIR` with the HVAE at ``anneal_tau_map(sigma_k)``."""
        # the map is measured up to 0.12 and constant (0.6) above; DPIR starts at 49/255, so a
        # level beyond that start is a final level outside what was measured, and warns
        denoiser = RealImageDenoiser(
            HVAEDenoiser(
                self.hvae, tau_map=self.anneal_tau_map, pad=self.pad, sigma_range=(0.0, DPIR_SIGMA_START + 1e-6)
            ),
            physics,
        )
        # DPIR resolves "noise" at NOISE_FLOOR (= MIN_SIGMA): noiseless data (a stated or estimated
        # std of 0) end at the same floor as the fixed point's prox
        dpir = DPIR(
            sigma=self.anneal_sigma,
            denoiser=denoiser,
            max_iter=self.anneal_iter,
            tune_rule=self.tune_rule,
            seed=self.seed,
            precision=self.precision,
        )
        out = dpir._solve_auto(y, physics)
        final = out.parameters["sigma"]
        choices = {}
        if "sigma" in out.choices:
            choices["anneal_sigma"] = out.choices["sigma"]
            choices["anneal_sigma"].name = "anneal_sigma"
        solves = choices["anneal_sigma"].n_solves if choices else 1
        return Reconstruction(
            x=out.x,
            wall_time=0.0,
            n_iter=self.anneal_iter,
            nfe=self.anneal_iter * solves,
            parameters={"anneal_sigma": final, "tau_final": float(self.anneal_tau_map(final))},
            choices=choices,
            extras={"schedule": "anneal"},
        )

    @torch.no_grad()  # the candidates of tau="auto" run here too, outside _solve
    def _iterate(
        self, y, physics, tau, gamma: float, sigma: float, generator, x_init, max_iter: int, return_iterates: bool
    ):
        """Run the iteration from ``x_init`` (default: the measurement baseline) for at most ``max_iter`` steps."""
        x = MeasurementBaseline()(y, physics) if x_init is None else to_physics_domain(x_init, physics)
        residuals: list[float] = []
        iterates = [x] if return_iterates else None
        for _ in range(max_iter):
            x_next = self._step(x, y, physics, tau, gamma, sigma, generator)
            change = (x_next - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
            residuals.append(float(change.max()))
            x = x_next
            if iterates is not None:
                iterates.append(x)
            if residuals[-1] < self.tol:
                break
        return x, residuals, iterates
