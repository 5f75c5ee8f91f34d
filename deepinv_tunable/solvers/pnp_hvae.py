r"""PnP-HVAE (ALGORITHMS 3.3, paper Algorithm 2): alternate the tempered HVAE reconstruction
with the data term's proximal operator,

.. math::

    x_{k+1} = \operatorname{prox}_{\gamma^2 f}\big(\mathrm{HVAE}(x_k, \tau)\big)
            = \arg\min_x \frac{\|A x - y\|^2}{2\sigma^2} + \frac{\|x - \mathrm{HVAE}(x_k, \tau)\|^2}{2\gamma^2},

until :math:`\|x_{k+1} - x_k\| / \|x_k\| <` ``tol`` or ``max_iter``. The proximal step is the
physics' own ``prox_l2`` with deepinv's weight :math:`\gamma^2/\sigma^2` (closed form for MRI
masks, inpainting and FFT blur; conjugate gradient otherwise). No gradient goes through the
network, and the network is fully convolutional, so any image size runs.
"""

from __future__ import annotations

import warnings

import deepinv as dinv
import torch

from ..nets.hvae import HVAE
from ..physics import physics_domain_adjoint, to_physics_domain
from ..priors import tau_for_sigma
from .base import Reconstruction, TunableReconstructor
from .classical import MeasurementBaseline
from .latent_map import noise_sigma

#: noise floor used when the physics is noiseless (the prox weight is gamma^2 / sigma^2).
MIN_SIGMA = 1e-3


class PnPHVAE(TunableReconstructor):
    r"""PnP-HVAE reconstruction with a hierarchical VAE prior.

    The HVAE acts on real images: for complex (2-channel) MRI it sees the real channel and
    returns an image with zero imaginary part, so the prior also encodes "the image is real".

    :param ~deepinv_tunable.nets.HVAE hvae: trained hierarchical VAE (e.g. ``pretrained.load("hvae_mri64")``).
    :param tau: temperature in (0, 1] (float or one per group). Default: :func:`tau_for_sigma`
        of the physics' noise std (the paper's 0.95 / 0.8 / 0.6 for 1% / 3% / 5% noise).
    :param float gamma: decoder std :math:`\gamma` in the prox. Default: the HVAE's own.
    :param float sigma: measurement noise std. Default: the physics' Gaussian noise model
        (at least :data:`MIN_SIGMA`).
    :param int max_iter: iteration cap. Default 100.
    :param float tol: stop when the relative change of every image is below this. Default 1e-4.
    :param bool pad: pad image sizes that are not a multiple of the HVAE stride. Default True.

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

    def __init__(self, hvae: HVAE, tau: float | list[float] | None = None, gamma: float | None = None,
                 sigma: float | None = None, max_iter: int = 100, tol: float = 1e-4, pad: bool = True):
        super().__init__()
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if gamma is not None and gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if tau is not None:
            hvae.temperatures(tau)  # validates
        self.hvae = hvae
        self.tau, self.gamma, self.sigma = tau, gamma, sigma
        self.max_iter, self.tol, self.pad = int(max_iter), float(tol), pad

    def denoise(self, x: torch.Tensor, physics: dinv.physics.Physics, tau) -> torch.Tensor:
        """:math:`\\mathrm{HVAE}(x, \\tau)` for ``x`` in the physics' image domain."""
        real = physics_domain_adjoint(x, physics)
        return to_physics_domain(self.hvae.reconstruct(real, tau, pad=self.pad), physics)

    @torch.no_grad()
    def _solve(self, y, physics, x_init: torch.Tensor | None = None, return_iterates: bool = False, **kwargs):
        if not isinstance(physics, dinv.physics.LinearPhysics):
            raise TypeError(f"PnPHVAE needs a linear physics (its prox_l2), got {type(physics).__name__}")
        sigma = max(self.sigma if self.sigma is not None else noise_sigma(physics, default=MIN_SIGMA), MIN_SIGMA)
        tau = self.tau if self.tau is not None else tau_for_sigma(sigma)
        gamma = self.gamma if self.gamma is not None else self.hvae.gamma
        weight = gamma ** 2 / sigma ** 2
        x = MeasurementBaseline()(y, physics) if x_init is None else to_physics_domain(x_init, physics)
        residuals: list[float] = []
        iterates = [x] if return_iterates else None
        for _ in range(self.max_iter):
            x_next = physics.prox_l2(self.denoise(x, physics, tau), y, weight)
            change = (x_next - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
            residuals.append(float(change.max()))
            x = x_next
            if iterates is not None:
                iterates.append(x)
            if residuals[-1] < self.tol:
                break
        n = len(residuals)
        if residuals[-1] >= self.tol:
            # not a fixed point: the tempered HVAE is not contractive enough on these inputs
            warnings.warn(f"PnP-HVAE stopped after {n} iterations at relative change {residuals[-1]:.1e} "
                          f"(tol {self.tol:g}) with tau {tau}; a lower tau (calibrated on slices with ground "
                          "truth, see benchmarks/run_pnp_hvae.py) usually converges", RuntimeWarning, stacklevel=3)
        return Reconstruction(x=x, wall_time=0.0, n_iter=n, nfe=n, iterates=iterates,
                              extras={"residuals": residuals, "tau": tau, "gamma": gamma, "sigma": sigma,
                                      "converged": residuals[-1] < self.tol})
