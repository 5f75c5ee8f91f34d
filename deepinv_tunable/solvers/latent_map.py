r"""Latent-MAP inversion with a tunable generator (CSGM :footcite:p:`bora2017csgm` with truncation; :footcite:t:`tunable_complexity`, App. B)."""

from __future__ import annotations

import deepinv as dinv
import torch

from ..nets.truncation import check_k, truncate
from ..physics import measurement_estimate, noise_sigma, residual_sq, to_physics_domain
from ..utils.checks import renamed_keyword
from .base import Reconstruction, TunableReconstructor


class LatentMAP(TunableReconstructor):
    r"""Latent MAP estimate with a tunable generator :math:`D` and latent size :math:`k`:

    .. math::

        z^\star = \arg\min_z \frac{\|A(D(T_k z)) - y\|_2^2}{2\sigma^2} + \frac{\gamma}{2}\|T_k z\|_2^2,
        \qquad \hat x = D(T_k z^\star),

    by Adam on :math:`z`, started at :math:`E(\tilde x)` with :math:`\tilde x` the
    measurement-only estimate (zero-filled MRI, CT pseudo-inverse, ...), or at 0 (``init="zero"``, and always
    for nonlinear physics). Coordinates beyond :math:`k` get zero gradient, so they never move.
    With ``restarts > 1`` the extra starts add Gaussian noise of std 0.5 to the initial latent
    and each example keeps its lowest-objective run (no ground truth involved).

    The model is any generator with ``encode_mean(x)``, ``decode(z, k)``, ``latent_shape``,
    ``latent_dim`` and ``image_size`` (:class:`~deepinv_tunable.nets.TunableVAE`). Images are
    single-channel; :func:`~deepinv_tunable.physics.domain.to_physics_domain` maps them to the physics.

    :param model: the tunable generator (kept frozen; not trained by the solver).
    :param int k: default latent size (``None``: the full :math:`K`); overridable per call.
    :param float gamma: prior weight :math:`\gamma`. Default 1 (the MAP of a unit Gaussian latent).
    :param int max_iter: Adam steps per run. Default 150 (``n_steps``: its former name, deprecated).
    :param float lr: Adam step size. Default 0.05.
    :param int restarts: runs per example. Default 1.
    :param str init: ``"encoder"`` (default) or ``"zero"``.
    :param float sigma: noise std used when the physics has no noise model. Default ``None``.

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.nets import TunableVAE
        >>> from deepinv_tunable.physics import build_physics
        >>> vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
        >>> physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.05}, (32, 32))
        >>> y = physics(torch.rand(1, 2, 32, 32))
        >>> result = LatentMAP(vae, max_iter=3).reconstruct(y, physics, k=64)
        >>> result.x.shape, result.k, result.nfe
        (torch.Size([1, 2, 32, 32]), 64, 5)
    """

    unit_range = True

    def __init__(
        self,
        model,
        k: int | None = None,
        gamma: float = 1.0,
        max_iter: int = 150,
        lr: float = 0.05,
        restarts: int = 1,
        init: str = "encoder",
        sigma: float | None = None,
        n_steps: int | None = None,
    ):
        super().__init__()
        if init not in ("encoder", "zero"):
            raise ValueError(f"init must be 'encoder' or 'zero', got '{init}'")
        max_iter = renamed_keyword("LatentMAP", "n_steps", n_steps, "max_iter", max_iter)
        for name, value, low in (("max_iter", max_iter, 1), ("restarts", restarts, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if gamma < 0 or lr <= 0:
            raise ValueError(f"gamma must be >= 0 and lr > 0, got gamma={gamma}, lr={lr}")
        if k is not None:
            check_k(k, model.latent_dim)
        self.model = model.eval().requires_grad_(False)
        self.k, self.gamma, self.max_iter, self.lr = k, float(gamma), int(max_iter), float(lr)
        self.restarts, self.init, self.sigma = int(restarts), init, sigma

    def _objective(self, z, k, y, physics, sigma):
        x = self.model.decode(z, k)
        residual = residual_sq(x, y, physics, differentiable=True)
        prior = truncate(z, k).flatten(1).pow(2).sum(1)
        return residual / (2 * sigma**2) + 0.5 * self.gamma * prior, residual, x

    @torch.enable_grad()  # the latent is optimised by gradient, also when called under no_grad
    def _solve(
        self,
        y,
        physics,
        k: int | torch.Tensor | None = None,
        return_iterates: bool = False,
        generator: torch.Generator | None = None,
        x_init: torch.Tensor | None = None,
        **kwargs,
    ):
        """``x_init``: a single-channel image to encode instead of the measurement-only estimate."""
        k = self.k if k is None else k
        if k is not None:
            check_k(k, self.model.latent_dim)
        y = y.detach()  # the objective differentiates with respect to z only
        sigma = noise_sigma(physics, self.sigma)
        x_tilde = measurement_estimate(y, physics) if x_init is None else x_init
        self.model.check_images(x_tilde, name="the physics' image (from A^dagger y)")
        linear = isinstance(physics, dinv.physics.LinearPhysics)
        with torch.no_grad():
            z_start = (
                self.model.encode_mean(x_tilde)
                if self.init == "encoder" and linear
                else torch.zeros(x_tilde.shape[0], *self.model.latent_shape, device=y.device)
            )
        best_obj = torch.full((y.shape[0],), float("inf"), device=y.device)
        best_z = z_start.clone()
        iterates = [] if return_iterates else None
        for run in range(self.restarts):
            noise = torch.randn(z_start.shape, generator=generator).to(z_start) if run else 0.0
            z = (z_start + 0.5 * noise).detach().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=self.lr)
            for _ in range(self.max_iter):
                optimizer.zero_grad()
                objective, _, x = self._objective(z, k, y, physics, sigma)
                objective.sum().backward()
                optimizer.step()
                if return_iterates and run == 0:
                    iterates.append(x.detach())
            with torch.no_grad():
                objective, _, _ = self._objective(z, k, y, physics, sigma)
                better = objective < best_obj
                best_obj = torch.where(better, objective, best_obj)
                best_z[better] = z.detach()[better]
        with torch.no_grad():
            objective, residual, x = self._objective(best_z, k, y, physics, sigma)
        k_used = self.model.latent_dim if k is None else k
        return Reconstruction(
            x=to_physics_domain(x, physics),
            wall_time=0.0,
            n_iter=self.max_iter * self.restarts,
            k=k_used,
            nfe=self.restarts * (self.max_iter + 1) + 1,
            iterates=iterates,
            parameters={"sigma": sigma},
            extras={"objective": objective, "residual_sq": residual},
        )
