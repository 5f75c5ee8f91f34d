"""What every solver of the package shares: the :class:`Reconstruction` result and a
``reconstruct`` method that returns it, beside deepinv's plain ``forward``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import deepinv as dinv
import torch

from ..physics import check_gaussian_noise, check_measurement_shape, check_unit_range, physics_in_dtype
from ..physics.data_fit import CHI2_OVERFIT, CHI2_UNDERFIT, fit_labels, try_chi2
from ..utils.checks import check_finite


@dataclass
class SolverDiagnostics:
    r"""What a reconstruction says about itself, JSON-ready: ``metrics.json``, the report and the
    warnings of a recipe run read it (:meth:`Reconstruction.diagnostics`).

    :param int iterations: iterations performed (``None`` when not counted).
    :param bool converged: the stopping test was met (``None``: the solver runs a fixed budget
        or samples, and has no convergence test).
    :param nfe: network evaluations, one number or one per example.
    :param list chi2: per-example reduced chi-square
        :math:`\|A\hat x - y\|^2 / (m\sigma^2)` of the returned image (``None`` when the physics
        states no Gaussian noise level).
    :param list fit: its band per example (:func:`~deepinv_tunable.physics.data_fit.fit_labels`):
        ``"fits the noise"`` (:math:`\chi^2 < 0.5`), ``"consistent"``, ``"leaves signal in the
        residual"`` (:math:`\chi^2 > 2`).
    :param dict parameters: the parameter values the solve used (chosen or given).
    :param dict choices: for each parameter chosen from the measurements, its record
        (:meth:`~deepinv_tunable.tuning.select.ParameterChoice.as_dict`: value, rule, score curve,
        ``at_bound``).
    :param dict per_example: solver-specific per-example fields (Flash: ``sigma_hat``,
        ``start_step``, ``out_of_range``, ``fallback``, ...).
    """

    iterations: int | None = None
    converged: bool | None = None
    nfe: int | list[int] | None = None
    chi2: list[float] | None = None
    fit: list[str] | None = None
    parameters: dict[str, float] = field(default_factory=dict)
    choices: dict[str, dict] = field(default_factory=dict)
    per_example: dict[str, list] = field(default_factory=dict)

    @property
    def at_bound(self) -> list[str]:
        """Names of the chosen parameters that sit at an end of their search interval."""
        return [name for name, choice in self.choices.items() if choice.get("at_bound")]

    def doubts(self, who: str = "solver", examples: Sequence[int] | None = None) -> list[str]:
        """One sentence per reason to doubt the result (empty when there is none): no
        convergence, a chosen parameter at its search bound, examples that fit the noise or leave
        signal in the residual, samples that fell back to the measurement baseline or whose
        severity was out of range. ``examples`` names the examples (e.g. slice indices)."""
        names = list(examples) if examples is not None else None

        def which(flags: Sequence[bool]) -> list:
            return [names[i] if names is not None else i for i, f in enumerate(flags) if f]

        out = []
        if self.converged is False:
            out.append(f"{who} did not converge in {self.iterations} iterations")
        for name in self.at_bound:
            choice = self.choices[name]
            out.append(
                f"{who}: {name} = {choice['value']:.4g} chosen at the edge of its search interval "
                f"{choice['bounds']}; the best value may lie outside it"
            )
        if self.fit is not None:
            for label, meaning in (
                ("fits the noise", f"chi2 < {CHI2_OVERFIT:g}: it reproduces the measurement noise"),
                ("leaves signal in the residual", f"chi2 > {CHI2_UNDERFIT:g}: measured signal is left unexplained"),
            ):
                bad = which([f == label for f in self.fit])
                if bad:
                    out.append(f"{who}, examples {bad}: {label} ({meaning})")
        for key, meaning in (
            ("fallback", "explained the data worse than the measurement baseline and were replaced by it"),
            ("out_of_range", "had a severity outside the trained range"),
        ):
            flags = self.per_example.get(key)
            if flags and any(flags):
                out.append(f"{who}: examples {which(flags)} {meaning}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (``choices`` included; ``at_bound`` added)."""
        record = asdict(self)
        record["at_bound"] = self.at_bound
        return record


def _json_ready(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return value


@dataclass
class Reconstruction:
    """Result of :meth:`TunableReconstructor.reconstruct`.

    :param torch.Tensor x: the reconstruction, in the physics' image domain (deepinv convention).
    :param float wall_time: seconds spent in the solver.
    :param int n_iter: iterations performed, when the solver counts them.
    :param k: latent size used (int or per-example ``(B,)`` tensor), for tunable priors.
    :param nfe: network evaluations (decoder / denoiser calls), one number or ``(B,)`` per example.
    :param list iterates: intermediate estimates, when asked for (``return_iterates=True``).
    :param bool converged: the solver's stopping test was met (``None``: no such test).
    :param dict parameters: the parameter values the solve used, given or chosen
        (``{"lambda_tv": 0.01}``, ``{"tau": 0.7, "gamma": 0.02, "sigma": 0.01}``, ...).
    :param dict choices: name -> :class:`~deepinv_tunable.tuning.select.ParameterChoice` for the
        parameters chosen from the measurements (``"auto"``).
    :param torch.Tensor chi2: ``(B,)`` reduced chi-square of ``x`` (set by
        :meth:`TunableReconstructor.reconstruct` when the physics states its noise level).
    :param dict extras: solver-specific tensors (latents, residual histories, ...).
    """

    x: torch.Tensor
    wall_time: float
    n_iter: int | None = None
    k: Any = None
    nfe: int | torch.Tensor | None = None
    iterates: list[torch.Tensor] | None = None
    converged: bool | None = None
    parameters: dict[str, float] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    chi2: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def per_example(self) -> dict[str, torch.Tensor]:
        """Solver-specific per-example fields for :meth:`diagnostics`; subclasses add theirs."""
        return {}

    def diagnostics(self) -> SolverDiagnostics:
        """The typed, JSON-ready :class:`SolverDiagnostics` of this result."""
        k = _json_ready(self.k)
        parameters = {name: _json_ready(v) for name, v in self.parameters.items()}
        if k is not None:
            parameters.setdefault("k", k)
        return SolverDiagnostics(
            iterations=self.n_iter,
            converged=self.converged,
            nfe=_json_ready(self.nfe),
            chi2=None if self.chi2 is None else self.chi2.tolist(),
            fit=None if self.chi2 is None else fit_labels(self.chi2),
            parameters=parameters,
            choices={name: choice.as_dict() for name, choice in self.choices.items()},
            per_example={name: _json_ready(v) for name, v in self.per_example().items() if v is not None},
        )


class NoiseStream:
    r"""The noise of a stochastic solver, one mechanism for all of them: the solver's own
    generator, seeded once, so successive calls draw fresh but reproducible noise; a call's
    ``seed=`` (a fresh generator) or ``generator=`` overrides it; without any seed, ``None``
    (torch's global RNG). The generator is made on first use on the device asked for (a CPU
    generator cannot feed CUDA noise).

    :param int seed: the stream's seed, or ``None``.

    >>> stream = NoiseStream(seed=0)
    >>> a, b = (torch.randn(2, generator=stream.generator()) for _ in range(2))
    >>> bool((a != b).all()), torch.equal(a, torch.randn(2, generator=torch.Generator().manual_seed(0)))
    (True, True)
    >>> NoiseStream().generator() is None
    True
    """

    def __init__(self, seed: int | None = None):
        self.seed = None if seed is None else int(seed)
        self._generator: torch.Generator | None = None

    def generator(
        self, device: torch.device | str = "cpu", seed: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Generator | None:
        """The generator of one call (see the class)."""
        if generator is not None:
            return generator
        device = torch.device(device)
        if seed is not None:
            return torch.Generator(device=device).manual_seed(int(seed))
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device.type != device.type:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


class TunableReconstructor(dinv.models.Reconstructor):
    """A deepinv :class:`~deepinv.models.Reconstructor` whose :meth:`reconstruct` also reports
    timing and solver details. Subclasses implement ``_solve``, which only ever sees numbers: a
    parameter named in ``tunable`` and set to ``"auto"`` is chosen from the measurements by
    :class:`~deepinv_tunable.tuning.tuned.Tuned` on the plan of :meth:`tuning_plan`."""

    #: the parameters a call may leave to the data (``"auto"``), each an attribute of the solver
    #: and a keyword of its calls
    tunable: tuple[str, ...] = ()

    #: whether repeated calls draw different (posterior) samples
    stochastic = False
    #: the data term assumes Gaussian noise of one level (checked on every call)
    gaussian_noise = True
    #: a learned prior trained on images in [0, 1]: measurements of images far outside are refused
    unit_range = False

    def accepts_x_init(self, physics: dinv.physics.Physics) -> bool:
        """Whether a call on ``physics`` may start from ``x_init`` (an image in the physics'
        domain, e.g. the neighbouring slice's answer: a warm start along a volume). Default False."""
        return False

    def forward(self, y: torch.Tensor, physics: dinv.physics.Physics, **kwargs) -> torch.Tensor:
        return self.reconstruct(y, physics, **kwargs).x

    def compute_dtype(self) -> torch.dtype:
        """The real dtype the solver computes in: its networks' (first floating parameter or
        buffer), float32 without any."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def reconstruct(self, y: torch.Tensor, physics: dinv.physics.Physics, **kwargs) -> Reconstruction:
        """Reconstruct from ``y`` and return a :class:`Reconstruction` (``forward`` returns its ``x``).

        ``y`` of another real dtype than the solver's (float64, float16) is computed in the
        solver's (:meth:`compute_dtype`) and ``x`` returned in ``y``'s; a physics of another
        dtype (a float64 mask from NumPy) is used through a cast copy. Refused with a
        ``ValueError`` naming the problem: non-finite ``y``, a ``y`` whose shape the physics
        cannot produce (:func:`~deepinv_tunable.physics.validation.check_measurement_shape`), a non-Gaussian or per-image noise
        model (:func:`~deepinv_tunable.physics.validation.check_gaussian_noise`) and, for learned priors,
        measurements of images far outside [0, 1] (:func:`~deepinv_tunable.physics.validation.check_unit_range`).
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of measurements, got {type(y).__name__}")
        who = type(self).__name__
        if not torch.is_complex(y):
            check_finite(y, "measurements y")
        if self.gaussian_noise:
            check_gaussian_noise(physics, who)
        input_dtype, dtype = y.dtype, self.compute_dtype()
        if y.is_floating_point() and input_dtype != dtype:
            y = y.to(dtype)
        physics = physics_in_dtype(physics, dtype)
        check_measurement_shape(y, physics, who)
        if self.unit_range:
            check_unit_range(y, physics, who)
        start = time.perf_counter()
        out = self._solve_auto(y, physics, **kwargs)
        if not isinstance(out, Reconstruction):
            x, n_iter, extras = out
            out = Reconstruction(x=x, wall_time=0.0, n_iter=n_iter, extras=extras)
        out.wall_time = time.perf_counter() - start
        if out.chi2 is None:  # after the clock: the data-fit check is not the solver's time
            out.chi2 = try_chi2(out.x, y, physics)
        if input_dtype.is_floating_point and out.x.is_floating_point() and out.x.dtype != input_dtype:
            out.x = out.x.to(input_dtype)
        return out

    def auto_parameters(self, physics: dinv.physics.Physics, kwargs: dict) -> list[str]:
        """The ``tunable`` parameters this call leaves to the data (``"auto"`` in ``kwargs``, or
        in the solver's attribute where the call does not set it)."""
        if not self.tunable:
            return []
        from ..tuning.tuned import requested_auto

        return requested_auto(self, kwargs)

    def tuning_plan(self, name: str, y: torch.Tensor, physics: dinv.physics.Physics, **kwargs):
        """How this call searches ``name`` (:class:`~deepinv_tunable.tuning.tuned.TuningPlan`);
        solvers with ``tunable`` parameters implement it."""
        raise NotImplementedError(f"{type(self).__name__} declares no plan to tune {name!r}")

    def _solve_auto(self, y, physics, **kwargs):
        """``_solve``, with an ``"auto"`` parameter first chosen from the measurements
        (:func:`~deepinv_tunable.tuning.tuned.solve_tuned`; two together:
        :func:`~deepinv_tunable.tuning.joint.solve_joint`, for a solver with a ``joint_plan``); no
        input checks (:meth:`reconstruct` makes them)."""
        auto = self.auto_parameters(physics, kwargs)
        if not auto:
            return self._solve(y, physics, **kwargs)
        if len(auto) > 1:
            from ..tuning.joint import solve_joint

            return solve_joint(self, auto, y, physics, kwargs)
        from ..tuning.tuned import solve_tuned

        return solve_tuned(self, auto[0], y, physics, kwargs)

    def _solve(self, y, physics, **kwargs) -> tuple[torch.Tensor, int | None, dict] | Reconstruction:
        """Return a :class:`Reconstruction` (its ``wall_time`` and ``chi2`` are set here) or
        ``(x, n_iter, extras)``."""
        raise NotImplementedError
