r"""The stochastic counterpart of :class:`~deepinv_tunable.solvers.PnPHVAE`: a Gibbs sampler on
the HVAE's joint model, for posterior samples and the uncertainty audit."""

from __future__ import annotations

from ..diffusion.consistency import gaussian_posterior_sample
from ..nets.hvae import HVAE
from ..physics import physics_domain_adjoint, to_physics_domain
from ..utils.checks import renamed_keyword
from .base import NoiseStream
from .pnp_hvae import PnPHVAE


class PnPHVAESampler(PnPHVAE):
    r"""Posterior sampling with a hierarchical VAE prior: the stochastic counterpart of
    :class:`PnPHVAE`, a Gibbs sampler on the joint model
    :math:`p(y|x)\,\mathcal{N}(x; \mu_\theta(z), \gamma^2 I)\,p(z)`:

    .. math::

        z &\sim q_\tau(z \mid x_k) \quad\text{(tempered encoder, group by group)}, \\
        x_{k+1} &\sim p(x \mid z, y) \propto \exp\Big(-\frac{\|Ax - y\|^2}{2\sigma^2}
                 - \frac{\|x - \mu_\theta(z)\|^2}{2\gamma^2}\Big).

    Where :class:`PnPHVAE` takes the mode of each conditional (tempered mode, then prox), this
    draws from them: the :math:`z`-step samples each group from the tempered distribution
    (:func:`~deepinv_tunable.nets.hvae.tempered_gaussian`), the :math:`x`-step is an exact
    Gaussian draw (:func:`~deepinv_tunable.diffusion.consistency.gaussian_posterior_sample`, the physics'
    ``prox_l2`` on perturbed inputs). The chain starts at the measurement baseline (or
    ``x_init``) and one call returns its state after ``max_iter`` steps, one posterior sample per
    batch element; independent samples come from repeated calls or a repeated batch (see
    :class:`~deepinv_tunable.audit.uncertainty.PosteriorSampler`). The encoder is an amortised
    approximation of :math:`p(z|x)` and :math:`\tau < 1` sharpens it, so the spread is only
    approximately the posterior's: calibrate intervals with
    :class:`~deepinv_tunable.audit.uncertainty.ConformalCalibrator` before trusting them.

    :param ~deepinv_tunable.nets.HVAE hvae: trained hierarchical VAE.
    :param tau: temperature in (0, 1]. Default: :func:`~deepinv_tunable.priors.tau_for_sigma`.
    :param float gamma: decoder std. Default: the HVAE's own.
    :param float sigma: measurement noise std. Default: the physics' noise model.
    :param int max_iter: Gibbs steps per sample (burn-in included). Default 30 (``n_iter``: its former name, deprecated).
    :param bool pad: pad sizes that are not a multiple of the stride. Default True.
    :param int seed: seeds the sampler's own generator (successive calls continue its stream);
        a call's ``seed=`` or ``generator=`` overrides it. Default ``None`` (torch's global RNG).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.nets import HVAE
        >>> from deepinv_tunable.physics import build_physics
        >>> physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.01}, (16, 16))
        >>> sampler = PnPHVAESampler(HVAE(width=8, groups_per_scale=(1, 1)), max_iter=3)
        >>> y = physics(torch.rand(1, 1, 16, 16))
        >>> a, b = sampler(y, physics, seed=1), sampler(y, physics, seed=2)
        >>> bool((a - b).abs().max() > 0), torch.equal(a, sampler(y, physics, seed=1))
        (True, True)
    """

    stochastic = True

    def __init__(
        self,
        hvae: HVAE,
        tau: float | list[float] | None = None,
        gamma: float | None = None,
        sigma: float | None = None,
        max_iter: int = 30,
        pad: bool = True,
        seed: int | None = None,
        n_iter: int | None = None,
    ):
        max_iter = renamed_keyword("PnPHVAESampler", "n_iter", n_iter, "max_iter", max_iter)
        super().__init__(hvae, tau=tau, gamma=gamma, sigma=sigma, max_iter=max_iter, tol=0.0, pad=pad, schedule="fixed")
        self.noise = NoiseStream(seed)

    def _step(self, x, y, physics, tau, gamma, sigma, generator):
        real = physics_domain_adjoint(x, physics)
        mean = to_physics_domain(
            self.hvae.reconstruct(real, tau, pad=self.pad, sample=True, generator=generator), physics
        )
        return gaussian_posterior_sample(physics, y, mean, gamma, sigma, generator)
