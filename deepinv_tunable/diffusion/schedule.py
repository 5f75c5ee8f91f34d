r"""The variance-preserving diffusion mechanics every latent sampler shares.

The noise schedule is a :class:`diffusers.DDIMScheduler` (its ``alphas_cumprod``
:math:`\bar\alpha_t` and its DDIM sub-schedule of timesteps). This module adds the three
formulas the package's samplers need, each defined here only:

* the forward marginal :math:`z_t = \sqrt{\bar\alpha_t}\, z_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon`
  (:func:`add_noise`),
* Tweedie's estimate :math:`\hat z_0 = (z_t - \sqrt{1 - \bar\alpha_t}\, \hat\epsilon) / \sqrt{\bar\alpha_t}`
  (:func:`tweedie_z0`),
* the DDIM update with stochasticity :math:`\eta` (Song et al. 2021, eq. 12)

  .. math::

      z_{t'} = \sqrt{\bar\alpha_{t'}}\, \hat z_0 + \sqrt{1 - \bar\alpha_{t'} - s^2}\, \hat\epsilon + s\, \xi,
      \qquad s = \eta \sqrt{\frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}\Big)}

  (:func:`ddim_update`), on the steps returned by :func:`reverse_steps`; DiffPIR's transition
  (:footcite:t:`zhu2023diffpir`) is the same update with :math:`s^2 = \zeta (1 - \bar\alpha_{t'})` and
  :math:`\hat\epsilon` re-derived from the corrected :math:`\hat z_0` (``zeta=`` of :func:`reverse_steps`),

and the one reverse step every latent sampler takes (:func:`latent_reverse_step`: noise
prediction, Tweedie, data consistency, DDIM, truncation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..nets.truncation import truncate

if TYPE_CHECKING:
    import diffusers


@dataclass(frozen=True)
class ReverseStep:
    """One DDIM transition ``t -> t_prev`` with its schedule values (``t_prev = -1``: to clean)."""

    t: int
    t_prev: int
    alpha_bar: float
    alpha_bar_prev: float
    noise_std: float  # s in the module docstring
    rederive_eps: bool = False  # DiffPIR: the direction term uses the eps of the corrected z0_hat


def reverse_steps(
    scheduler: diffusers.DDIMScheduler,
    n_steps: int,
    eta: float,
    start: int | None = None,
    zeta: float | None = None,
) -> list[ReverseStep]:
    """The ``n_steps`` DDIM transitions of ``scheduler``'s sub-schedule, from high to low noise.

    :param diffusers.DDIMScheduler scheduler: holds :math:`\\bar\\alpha` (``set_timesteps`` is called on it).
    :param int n_steps: length of the sub-schedule (e.g. 50 on CPU).
    :param float eta: DDIM stochasticity in ``[0, 1]``.
    :param int start: keep only the steps with ``t <= start`` (to start the reverse process midway).
    :param float zeta: DiffPIR's transition instead of DDIM's: a fraction :math:`\\zeta \\in [0, 1]` of
        the next step's noise variance is fresh noise, :math:`s^2 = \\zeta (1 - \\bar\\alpha_{t'})`, and the
        rest follows the noise re-derived from the corrected clean estimate (``eta`` is then unused).
        ``zeta = 1`` re-noises the corrected estimate.

    >>> from diffusers import DDIMScheduler
    >>> step = reverse_steps(DDIMScheduler(), 10, 0.0, zeta=1.0)[0]
    >>> abs(step.noise_std**2 - (1 - step.alpha_bar_prev)) < 1e-9, step.rederive_eps
    (True, True)
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if zeta is not None and not 0 <= zeta <= 1:
        raise ValueError(f"zeta must be in [0, 1] (or None for DDIM), got {zeta}")
    scheduler.set_timesteps(n_steps)
    ts = [int(t) for t in scheduler.timesteps]
    ab = scheduler.alphas_cumprod
    final = float(scheduler.final_alpha_cumprod)
    steps = []
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        a, a_prev = float(ab[t]), float(ab[t_prev]) if t_prev >= 0 else final
        if zeta is None:
            std = eta * max((1 - a_prev) / (1 - a) * (1 - a / a_prev), 0.0) ** 0.5
        else:
            std = (zeta * (1 - a_prev)) ** 0.5
        steps.append(ReverseStep(t, t_prev, a, a_prev, std, rederive_eps=zeta is not None))
    if start is not None:
        steps = [s for s in steps if s.t <= start]
    return steps


def add_noise(z0: torch.Tensor, eps: torch.Tensor, alpha_bar: float | torch.Tensor) -> torch.Tensor:
    """Forward marginal sample :math:`\\sqrt{\\bar\\alpha} z_0 + \\sqrt{1-\\bar\\alpha}\\,\\epsilon`."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=z0.dtype, device=z0.device)
    alpha_bar = alpha_bar.reshape(-1, *([1] * (z0.ndim - 1))) if alpha_bar.ndim else alpha_bar
    return alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * eps


def tweedie_z0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Tweedie's clean-latent estimate from a noise prediction.

    >>> z0, eps = torch.randn(2, 3), torch.randn(2, 3)
    >>> torch.allclose(tweedie_z0(add_noise(z0, eps, 0.3), eps, 0.3), z0, atol=1e-5)
    True
    """
    return (z_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def ddim_update(
    z0: torch.Tensor,
    eps: torch.Tensor,
    step: ReverseStep,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM move to ``step.t_prev`` from a clean estimate ``z0`` and noise estimate ``eps``; the
    fresh noise :math:`\\xi` is ``noise`` when given, else drawn from ``generator``."""
    s = step.noise_std
    direction = max(1 - step.alpha_bar_prev - s**2, 0.0) ** 0.5
    z_prev = step.alpha_bar_prev**0.5 * z0 + direction * eps
    if s > 0:
        if noise is None:
            noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
        z_prev = z_prev + s * noise
    return z_prev


def snr(alpha_bar: float | torch.Tensor) -> float | torch.Tensor:
    r"""Signal-to-noise ratio :math:`\bar\alpha / (1 - \bar\alpha)` of the forward marginal."""
    return alpha_bar / (1 - alpha_bar)


def latent_reverse_step(
    unet,
    z: torch.Tensor,
    step: ReverseStep,
    consistency,
    problem,
    k=None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One reverse step ``t -> t_prev`` of a latent sampler with a data-consistency step.

    .. code-block:: text

        e      = eps_theta(z_t, t)
        z0_hat = (z_t - sqrt(1 - abar_t) e) / sqrt(abar_t)          # Tweedie
        z0_hat = consistency.correct_z0(z0_hat)                     # e.g. Adam-DC
        e      = (z_t - sqrt(abar_t) z0_hat) / sqrt(1 - abar_t)   # DiffPIR steps only
        z_t'   = DDIM(z0_hat, e, t -> t', eta)
        z_t'   = T_k(consistency.correct_prev(z_t', ...))           # e.g. LDPS, PSLD

    :param unet: noise network ``unet(z_t, t)``.
    :param torch.Tensor z: the current latents ``z_t``.
    :param ReverseStep step: the transition.
    :param consistency: a :class:`~deepinv_tunable.diffusion.consistency.DataConsistency`.
    :param problem: its :class:`~deepinv_tunable.diffusion.consistency.LatentProblem` (for the same examples as ``z``).
    :param k: latent size(s) kept after the step (``None``: all).
    :param torch.Generator generator: DDIM noise.
    :param torch.Tensor noise: the DDIM noise itself (shape of ``z``), instead of drawing it.
    :return: ``(z_prev, z0_hat)``, both detached.
    """
    # graphs are switched on here, not by the caller: solvers are often called under no_grad
    with torch.set_grad_enabled(consistency.needs_graph):
        z_t = z.detach().requires_grad_(consistency.needs_graph)
        eps = unet(z_t, step.t)
        z0 = tweedie_z0(z_t, eps, step.alpha_bar)
        z0_dc = consistency.correct_z0(z0, step, problem)
        if step.rederive_eps:
            eps = (z_t - step.alpha_bar**0.5 * z0_dc) / (1 - step.alpha_bar) ** 0.5
        z_prev = ddim_update(z0_dc.detach(), eps.detach(), step, generator, noise)
        z_prev = consistency.correct_prev(z_prev, z_t, z0, step, problem)
    return truncate(z_prev.detach(), k), z0_dc.detach()
