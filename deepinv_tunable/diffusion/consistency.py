r"""Data-consistency steps for latent samplers, interchangeable in every sampler.

A latent sampler (e.g. :class:`~deepinv_tunable.solvers.TunableLDMSolver`) calls, at each
reverse step, :meth:`DataConsistency.correct_z0` on Tweedie's clean estimate
:math:`\hat z_0` and :meth:`DataConsistency.correct_prev` on the next latent. Each method
below overrides one of the two:

* :class:`AdamDC`: a few Adam steps on :math:`\lambda_f \overline{(A(D(T_k z)) - y)^2} +
  \tfrac12 \|T_k(z - \hat z_0)\|^2 / s_t^2` (:footcite:t:`tunable_complexity`, Algorithm 2), the move kept only if the data
  error drops, within a trust radius :math:`\propto s_t`;
* :class:`LDPS`: :math:`z_{t'} \leftarrow z_{t'} - \eta_t \nabla_{z_t} \|A(D(\hat z_0(z_t))) - y\|^2`,
  :math:`\eta_t = \eta / \|A(D(\hat z_0)) - y\|` (:footcite:t:`fabian2023adapt`, LDPS);
* :class:`PSLD`: LDPS plus the gluing term
  :math:`\|\hat z_0 - E(A^\top y + (I - A^\top A) D(\hat z_0))\|^2` (linear physics only);
* :class:`DDSLocalMAP`: :math:`x^\star = \arg\min_x \|Ax - y\|^2 + \gamma \|x - D(\hat z_0)\|^2`
  by the physics' own ``prox_l2`` (closed form or CG), then :math:`\hat z_0 \leftarrow E(x^\star)`;
  :class:`ScheduledLocalMAP` sets :math:`\gamma_t` by DiffPIR's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import deepinv as dinv
import torch

from ..nets.truncation import truncate
from ..physics import from_physics_domain, keeps_what_it_measures, to_physics_domain
from ..physics.data_fit import measured_count
from ..physics.noise import NOISE_FLOOR, resolve_sigma
from ..utils.checks import renamed_keyword, require_linear
from .schedule import ReverseStep


@dataclass
class LatentProblem:
    """What a data-consistency step needs: the autoencoder, the physics, ``y`` and ``k``.

    ``model`` has ``decode(z, k)`` and ``encode_mean(x)`` on single-channel images; latents seen
    by the steps are in diffusion units, :math:`c` times the autoencoder's (``scale`` = :math:`c`).
    """

    model: torch.nn.Module
    physics: dinv.physics.Physics
    y: torch.Tensor
    k: int | torch.Tensor | None
    scale: float = 1.0
    rows: torch.Tensor | None = None

    @cached_property
    def noise_std(self) -> float:
        """The measurements' noise std (the physics', else estimated from ``y``; at least
        ``NOISE_FLOOR``), resolved once per problem."""
        return resolve_sigma(self.y, self.physics, floor=NOISE_FLOOR)[0]

    @cached_property
    def keeps_what_it_measures(self) -> bool:
        """:func:`~deepinv_tunable.physics.measurement.keeps_what_it_measures` of the physics, once per problem."""
        return keeps_what_it_measures(self.y, self.physics)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`D(T_k z / c)` in the physics' domain (:math:`c` the latent ``scale``)."""
        return to_physics_domain(self.model.decode(z / self.scale, self.k), self.physics)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`c\, E(x)` for a single-channel image."""
        return self.scale * self.model.encode_mean(x)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """Per-example :math:`\\|A(D(T_k z)) - y\\|^2`."""
        x = self.image(z)
        if self.rows is None:
            return (self.physics.A(x) - self.y).abs().pow(2).flatten(1).sum(1)
        return (self.physics.A(self.whole_batch(x))[self.rows] - self.y[self.rows]).abs().pow(2).flatten(1).sum(1)

    def whole_batch(self, x: torch.Tensor) -> torch.Tensor:
        """An image of this problem's rows placed in a zero batch of ``y``'s size (``x`` itself on
        the whole batch): the physics may hold per-example operators (masks), so a subset is
        passed through it at its own rows and the other rows' outputs are discarded."""
        if self.rows is None:
            return x
        return x.new_zeros((self.y.shape[0], *x.shape[1:])).index_copy(0, self.rows, x)

    def subset(self, rows: torch.Tensor) -> LatentProblem:
        """The same problem restricted to the examples ``rows`` (indices into ``y``'s batch): latents
        passed to it hold only those rows. PSLD's gluing uses ``y`` beyond :meth:`residual` and
        refuses a subset; DDS's prox runs on :meth:`whole_batch`."""
        k = self.k[rows] if isinstance(self.k, torch.Tensor) and self.k.ndim > 0 and self.k.numel() > 1 else self.k
        return LatentProblem(self.model, self.physics, self.y, k, self.scale, rows)


class DataConsistency:
    """Identity step; subclasses override :meth:`correct_z0` and/or :meth:`correct_prev`.

    ``needs_graph``: the sampler must compute :math:`\\hat z_0` with a graph back to :math:`z_t`.
    """

    needs_graph = False

    def correct_z0(self, z0: torch.Tensor, step: ReverseStep, problem: LatentProblem) -> torch.Tensor:
        r"""The clean estimate :math:`\hat z_0` of a reverse step, corrected (here unchanged)."""
        return z0

    def correct_prev(
        self, z_prev: torch.Tensor, z_t: torch.Tensor, z0: torch.Tensor, step: ReverseStep, problem: LatentProblem
    ) -> torch.Tensor:
        """The next latent ``z_prev`` of a reverse step, corrected (here unchanged)."""
        return z_prev

    def finish(self, x: torch.Tensor, step: ReverseStep, problem: LatentProblem) -> torch.Tensor:
        """The sampler's image from its decoded final latent ``x`` (physics domain; here unchanged)."""
        return x


def _require_whole_batch(problem: LatentProblem, step: str) -> None:
    if problem.rows is not None:
        raise ValueError(
            f"{step} uses y beyond the data residual and needs the whole batch; "
            "it cannot run on a subset of examples (LatentProblem.subset)"
        )


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


class AdamDC(DataConsistency):
    r"""Algorithm 2's M-step: Adam on the latent, tethered to :math:`\hat z_0`.

    :param int max_iter: Adam steps :math:`M`. Default 3 (``n_iter``: its former name, deprecated).
    :param float lr: Adam step size. Default ``1e-2``.
    :param float lambda_f: weight of the mean squared data error. Default 1.
    :param float trust: trust radius per coordinate, in units of :math:`s_t`. Default 1.
    :param float min_std: floor of :math:`s_t` (the last step has :math:`s_t = 0`). Default ``1e-2``.
    """

    def __init__(
        self,
        max_iter: int = 3,
        lr: float = 1e-2,
        lambda_f: float = 1.0,
        trust: float = 1.0,
        min_std: float = 1e-2,
        n_iter: int | None = None,
    ):
        max_iter = renamed_keyword("AdamDC", "n_iter", n_iter, "max_iter", max_iter)
        self.max_iter, self.lr, self.lambda_f, self.trust, self.min_std = max_iter, lr, lambda_f, trust, min_std

    @torch.enable_grad()
    def correct_z0(self, z0, step, problem):
        s = max(step.noise_std, self.min_std)
        z0 = z0.detach()
        with torch.no_grad():
            before = problem.residual(z0)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        m = problem.y[0].numel()
        for _ in range(self.max_iter):
            opt.zero_grad()
            loss = (
                self.lambda_f * problem.residual(z) / m
                + 0.5 * truncate(z - z0, problem.k).flatten(1).pow(2).sum(1) / s**2
            )
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            move = truncate(z - z0, problem.k)
            limit = self.trust * s * (move[0].numel() ** 0.5)
            norm = move.flatten(1).norm(dim=1).clamp_min(1e-12)
            move = move * _per_example((limit / norm).clamp(max=1.0), move)
            candidate = z0 + move
            better = problem.residual(candidate) < before
            return torch.where(_per_example(better, z0), candidate, z0)


class LDPS(DataConsistency):
    r"""Latent DPS guidance through the noise network and the decoder.

    :param float eta: normalised step size :math:`\eta`. Default 1.5 (paper).
    """

    needs_graph = True

    def __init__(self, eta: float = 1.5):
        self.eta = eta

    def guidance(self, z_t: torch.Tensor, z0: torch.Tensor, problem: LatentProblem) -> torch.Tensor:
        """Per-example :math:`\\eta_t \\nabla_{z_t}\\|A(D(\\hat z_0(z_t))) - y\\|^2`, truncated."""
        residual = problem.residual(z0)
        (grad,) = torch.autograd.grad(residual.sum(), z_t)
        scale = self.eta / residual.detach().sqrt().clamp_min(1e-12)
        return truncate(grad, problem.k) * _per_example(scale, grad)

    def correct_prev(self, z_prev, z_t, z0, step, problem):
        return z_prev - self.guidance(z_t, z0, problem)


class PSLD(LDPS):
    r"""LDPS plus the "gluing" term that keeps :math:`\hat z_0` a fixed point of
    encode(measurement-consistent decode); linear physics only.

    :param float eta: LDPS step. Default 1.5.
    :param float gamma: gluing weight (normalised like :math:`\eta`). Default 0.1.
    """

    def __init__(self, eta: float = 1.5, gamma: float = 0.1):
        super().__init__(eta)
        self.gamma = gamma

    def correct_prev(self, z_prev, z_t, z0, step, problem):
        _require_whole_batch(problem, "PSLD")
        require_linear(problem.physics, "PSLD's gluing term")
        physics, x0 = problem.physics, problem.image(z0)
        glued = physics.A_adjoint(problem.y) + x0 - physics.A_adjoint(physics.A(x0))
        target = problem.encode(from_physics_domain(glued, physics).real)
        glue = (z0 - target).flatten(1).pow(2).sum(1)
        (grad,) = torch.autograd.grad(glue.sum(), z_t, retain_graph=True)
        scale = self.gamma / glue.detach().sqrt().clamp_min(1e-12)
        z_prev = z_prev - truncate(grad, problem.k) * _per_example(scale, grad)
        return super().correct_prev(z_prev, z_t, z0, step, problem)


class DDSLocalMAP(DataConsistency):
    r"""DDS-style local MAP in image space, then back to the latent by the encoder:
    :math:`x^\star = \arg\min_x \|Ax - y\|^2 + \gamma \|x - D(\hat z_0)\|^2`,
    :math:`\hat z_0 \leftarrow T_k E(x^\star)`.

    :param float gamma: weight :math:`\gamma` of the proximity to the decoded estimate. Default 1.

    The physics' iterative settings (``physics.max_iter``, ``physics.tol``) govern the CG solve
    where there is no closed form; they are not changed here.
    """

    def __init__(self, gamma: float = 1.0):
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def data_weight(self, step: ReverseStep, problem: LatentProblem) -> float:
        """deepinv's ``prox_l2`` weight :math:`1/\\gamma` of the data term at ``step``."""
        return 1.0 / self.gamma

    def image_step(self, x0: torch.Tensor, step: ReverseStep, problem: LatentProblem) -> torch.Tensor:
        """The proximal step on an image ``x0`` of the physics' domain (its output, same domain)."""
        with torch.no_grad():
            # deepinv: prox_l2(z, y, g) = argmin g/2 ||Ax - y||^2 + 1/2 ||x - z||^2, per example
            out = problem.physics.prox_l2(problem.whole_batch(x0), problem.y, self.data_weight(step, problem))
            return out if problem.rows is None else out[problem.rows]

    def correct_z0(self, z0, step, problem):
        with torch.no_grad():
            x = self.image_step(problem.image(z0.detach()), step, problem)
            return truncate(problem.encode(from_physics_domain(x, problem.physics).real), problem.k)

    def finish(self, x, step, problem):
        """The last step's proximal image of the decoded latent: the sampler ends on the step's own
        output, so that the autoencoder's round trip (33 dB on a noisy reserved subject, an error
        above the noise) is not left in the data misfit."""
        return self.image_step(x, step, problem)


class ScheduledLocalMAP(DDSLocalMAP):
    r"""The image-space local MAP with DiffPIR's noise-scheduled weight (:footcite:t:`zhu2023diffpir`):

    .. math::

        \gamma_t = \lambda\, \sigma_y^2 / \bar\sigma_t^2, \qquad \bar\sigma_t^2 = (1 - \bar\alpha_t) / \bar\alpha_t,

    with :math:`\bar\sigma_t` the error scale of Tweedie's latent estimate at step :math:`t` and
    :math:`\sigma_y` the noise std of the measurements (the physics', estimated from ``y`` when it
    states none). Early, noisy estimates are pulled to the data; late ones are kept.

    ``lambda_="auto"`` (default) takes :data:`AUTO_LAMBDA`'s value for the operator: 1 where it keeps
    what it measures (:func:`~deepinv_tunable.physics.measurement.keeps_what_it_measures`: MRI, inpainting,
    denoising; the step only re-weights measured coefficients), 100 otherwise (blur, CT: the step
    divides by small singular values, and the noise it amplifies, up to
    :math:`\bar\sigma_t / (2\sqrt\lambda)` per coefficient, passes through the encoder into the latent).
    Both were measured on subjects outside the reserved ones (the LDM's validation subject
    ``nibabel_example4d`` and the training CT subject ``pyradiomics_lung1``, ``docs/tunable_results``);
    the PSNR is flat over
    :math:`\lambda \in [0.3, 3]` for the first kind and peaks at 30-100 for blur.

    :param lambda_: :math:`\lambda`, or ``"auto"``. Default ``"auto"``.
    :param float sigma: the measurement noise std (``None``: the physics' own, else estimated).
    """

    def __init__(self, lambda_: float | str = "auto", sigma: float | None = None):
        if lambda_ != "auto" and not (isinstance(lambda_, (int, float)) and lambda_ > 0):
            raise ValueError(f"lambda_ must be > 0 or 'auto', got {lambda_!r}")
        super().__init__(gamma=1.0)
        self.lambda_, self.sigma = lambda_, sigma

    def resolved_lambda(self, problem: LatentProblem) -> float:
        """:math:`\\lambda` for this problem (``"auto"`` resolved from the physics)."""
        if self.lambda_ != "auto":
            return float(self.lambda_)
        return AUTO_LAMBDA[problem.keeps_what_it_measures]

    def data_weight(self, step: ReverseStep, problem: LatentProblem) -> float:
        sigma = problem.noise_std if self.sigma is None else resolve_sigma(problem.y, problem.physics, self.sigma)[0]
        error_var = (1 - step.alpha_bar) / step.alpha_bar
        return error_var / (self.resolved_lambda(problem) * sigma**2)


#: :class:`ScheduledLocalMAP`'s ``lambda_="auto"``: by whether the operator keeps what it measures
AUTO_LAMBDA: dict[bool, float] = {True: 1.0, False: 100.0}


def gaussian_posterior_sample(
    physics: dinv.physics.LinearPhysics,
    y: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_std: float,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""One exact draw from the Gaussian posterior of a linear inverse problem,

    .. math::

        p(x | y) \propto \exp\Big(-\frac{\|Ax - y\|^2}{2\sigma^2} - \frac{\|x - \mu\|^2}{2 s^2}\Big),

    by perturb-and-optimise (Papandreou & Yuille, 2010): perturb the prior mean and the data,
    :math:`\tilde\mu = \mu + s\,\epsilon_1`, :math:`\tilde y = y + \sigma\,\epsilon_2`, and solve
    :math:`\arg\min_x \|Ax - \tilde y\|^2/(2\sigma^2) + \|x - \tilde\mu\|^2/(2s^2)` with the
    physics' own ``prox_l2`` (weight :math:`s^2/\sigma^2`; closed form for MRI masks,
    inpainting and FFT blur, conjugate gradient otherwise). The minimiser is affine in the
    Gaussian perturbations, with exactly the posterior's mean and covariance. With
    ``prior_std=0`` and ``sigma=0`` it would be the deterministic prox; both must be positive.

    This is the :math:`x`-step of :class:`~deepinv_tunable.solvers.PnPHVAESampler`, where
    :math:`\mu` is the decoder mean and :math:`s = \gamma`.

    :param physics: linear deepinv physics.
    :param torch.Tensor y: measurements.
    :param torch.Tensor prior_mean: :math:`\mu`, in the physics' image domain.
    :param float prior_std: :math:`s > 0`.
    :param float sigma: measurement noise std :math:`\sigma > 0`.
    :param torch.Generator generator: noise source (default: torch's global RNG).

    :Examples:

        >>> import deepinv as dinv
        >>> _ = torch.manual_seed(0)
        >>> physics = dinv.physics.Inpainting((1, 1, 2), mask=torch.tensor([[[1.0, 0.0]]]))
        >>> y = physics.A(torch.ones(1, 1, 1, 2))
        >>> xs = torch.cat([gaussian_posterior_sample(physics, y, torch.zeros(1, 1, 1, 2), 1.0, 1.0)
        ...                 for _ in range(4000)])
        >>> # observed pixel: N(1/2, 1/2); unobserved: the prior N(0, 1)
        >>> [round(v, 1) + 0.0 for v in xs.mean(0).flatten().tolist()], [round(v, 1) for v in xs.var(0).flatten().tolist()]
        ([0.5, 0.0], [0.5, 1.0])
    """
    if not (prior_std > 0 and sigma > 0):
        raise ValueError(f"prior_std and sigma must be > 0, got prior_std={prior_std}, sigma={sigma}")
    noise_x = torch.randn(prior_mean.shape, generator=generator, device=prior_mean.device, dtype=prior_mean.dtype)
    noise_y = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return physics.prox_l2(prior_mean + prior_std * noise_x, y + sigma * noise_y, prior_std**2 / sigma**2)


#: The latent samplers' data-consistency steps by name (recipes' ``consistency`` key, the
#: benchmarks' ``--consistency``).
CONSISTENCY_STEPS: dict[str, type[DataConsistency]] = {
    "local_map": ScheduledLocalMAP,
    "adam_dc": AdamDC,
    "ldps": LDPS,
    "psld": PSLD,
    "dds": DDSLocalMAP,
}


def consistency_step(consistency: DataConsistency | str, eta: float = 1.5) -> DataConsistency:
    """A data-consistency step, or the one named in :data:`CONSISTENCY_STEPS` at its defaults
    (``"ldps"`` with step ``eta``)."""
    if isinstance(consistency, DataConsistency):
        return consistency
    if consistency not in CONSISTENCY_STEPS:
        raise ValueError(
            f"consistency must be a DataConsistency or one of {sorted(CONSISTENCY_STEPS)}, got {consistency!r}"
        )
    return LDPS(eta) if consistency == "ldps" else CONSISTENCY_STEPS[consistency]()


@dataclass
class WeightedConsistency:
    """Result of :func:`weighted_data_consistency`: the corrected images and, per example, the
    data weight :math:`\\gamma` used and the reduced chi-square before the correction."""

    x: torch.Tensor
    gamma: torch.Tensor
    chi2_before: torch.Tensor


def weighted_data_consistency(
    x: torch.Tensor,
    y: torch.Tensor,
    physics: dinv.physics.LinearPhysics,
    sigma: float | None = None,
    n_probes: int = 4,
    seed: int = 0,
) -> WeightedConsistency:
    r"""Final data-consistency step of a generative sampler, weighted by how far its estimate is
    from the data: the MAP image of a Gaussian prior centred on the estimate :math:`\hat x`,

    .. math::

        x^\star = \arg\min_x \frac{\gamma}{2} \|A x - y\|^2 + \frac12 \|x - \hat x\|^2
        = \operatorname{prox}_{\gamma f}(\hat x), \qquad
        \gamma = \frac{s^2}{\sigma^2}, \quad
        s^2 = \frac{\max(\|A\hat x - y\|^2 - m\sigma^2,\ 0)}{\|A\|_F^2},

    with :math:`s^2` the estimate's error variance per pixel, read from its data residual (the
    part beyond the noise), and :math:`\|A\|_F^2 = \mathbb E\|A v\|^2` by Hutchinson probes
    :math:`v \sim \mathcal N(0, I)`. An estimate that already explains the data to the noise level
    is left unchanged (:math:`\gamma = 0`); one far from it is pulled onto the data, in the
    components the physics measures only. For single-coil MRI, :math:`\gamma = \chi^2 - 1` (up to
    the probes' few-% spread): the
    measured k-space becomes the precision-weighted average of the estimate's and the data's.
    The proximal step is the physics' own ``prox_l2`` (closed form for MRI and FFT blur, conjugate
    gradients otherwise).

    :param torch.Tensor x: estimates in the physics' image domain ``(B, ...)``; not modified.
    :param torch.Tensor y: measurements.
    :param deepinv.physics.LinearPhysics physics: forward model.
    :param float sigma: noise std. Default ``None``: the physics' Gaussian noise level.
    :param int n_probes: Hutchinson probes for :math:`\|A\|_F^2`. Default 4.
    :param int seed: seed of the probes (the step is deterministic). Default 0.

    :Examples:

        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (32, 32))
        >>> x = torch.zeros(1, 2, 32, 32); x[:, 0] = torch.rand(32, 32)
        >>> y = physics(x)
        >>> out = weighted_data_consistency(torch.zeros_like(x), y, physics)
        >>> bool(out.chi2_before > 100), bool(torch.isclose(out.gamma, out.chi2_before - 1, rtol=0.05))
        (True, True)
    """
    from ..physics import noise_sigma, physics_rows, residual_sq

    sigma = noise_sigma(physics) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"weighted_data_consistency needs a positive noise std, got {sigma}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    with torch.no_grad():
        gen = torch.Generator(device="cpu").manual_seed(seed)
        probes = torch.randn((n_probes, *x.shape[1:]), generator=gen).to(x)
        b = x.shape[0]
        # one operator shared by the batch (checked once), or one per example (batched_mri's masks)
        first = physics_rows(physics, torch.tensor([0], device=x.device), b, x[:1])
        operators = (
            [physics] * b
            if first is physics
            else [physics_rows(physics, torch.tensor([i], device=x.device), b, x[i : i + 1]) for i in range(b)]
        )
        if any(op is None for op in operators):
            raise ValueError(
                "weighted_data_consistency needs an operator shared by the batch or one MRI mask per "
                f"example (batched_mri), got a {type(physics).__name__} it cannot cut into examples"
            )
        frobenius = {id(op): float(op.A(probes).abs().pow(2).sum()) / n_probes for op in operators}
        frobenius_sq = torch.tensor([frobenius[id(op)] for op in operators], device=x.device)
        m = measured_count(y, physics).to(x.device)
        residual = residual_sq(x, y, physics)
        chi_before = residual / (m * sigma**2)  # the audit's chi2, from the one residual
        excess = (residual - m * sigma**2).clamp_min(0)
        gamma = excess / frobenius_sq / sigma**2
        out = x.clone()
        for i in (gamma > 0).nonzero().flatten().tolist():  # prox_l2 takes one weight per call
            out[i : i + 1] = operators[i].prox_l2(x[i : i + 1], y[i : i + 1], float(gamma[i]))
    return WeightedConsistency(out, gamma.cpu(), chi_before.cpu())
