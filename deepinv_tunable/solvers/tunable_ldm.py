r"""Inversion with a tunable latent diffusion prior (:footcite:t:`tunable_complexity`, Algorithm 2)."""

from __future__ import annotations

import deepinv as dinv
import torch

from ..checks import renamed_keyword
from ..consistency import AdamDC, DataConsistency, LatentProblem
from ..latent import truncate
from .base import Reconstruction
from .latent_diffusion import LatentDiffusionSolver


class TunableLDMSolver(LatentDiffusionSolver):
    r"""Posterior sampling with a latent diffusion prior whose latent size :math:`k` is a call argument.

    .. code-block:: text

        z_T ~ N(0, I);  z_T <- T_k(z_T)
        for each DDIM step t -> t' (max_iter of them):       # diffusion.latent_reverse_step
            e      = eps_theta(z_t, t)
            z0_hat = (z_t - sqrt(1 - abar_t) e) / sqrt(abar_t)             # Tweedie
            z0_hat = consistency.correct_z0(z0_hat)                        # e.g. Adam-DC
            z_t'   = DDIM(z0_hat, e, t -> t', eta)                         # eta > 0
            z_t'   = consistency.correct_prev(z_t', ...)                   # e.g. LDPS, PSLD
            z_t'   = T_k(z_t')
        return D(T_k z_0)

    The data-consistency step is any :class:`~deepinv_tunable.consistency.DataConsistency`
    (default :class:`~deepinv_tunable.consistency.AdamDC`, Algorithm 2's M-step); the physics may be
    nonlinear (gradients come from autograd). Latents are in diffusion units: the VAE's latent
    times its ``scaling_factor``.

    :param vae: tunable autoencoder (``decode(z, k)``, ``encode_mean``, ``latent_shape``, ``config["scaling_factor"]``).
    :param unet: noise network (:class:`~deepinv_tunable.nets.LatentUNet`).
    :param int k: default latent size (``None``: full). Overridable per call.
    :param int max_iter: DDIM steps :math:`N`. Default 50 (``n_steps``: its former name, deprecated).
    :param float eta: DDIM stochasticity; must be > 0 (the paper: :math:`\eta = 0` is unstable). Default 0.1.
    :param consistency: data-consistency step. Default ``AdamDC()``.
    :param int seed: seeds the solver's own generator (successive calls continue its stream);
        a call's ``seed=`` or ``generator=`` overrides it. Default ``None`` (torch's global RNG).

    :Examples:

        >>> import torch
        >>> from deepinv_tunable.nets import LatentUNet, TunableVAE
        >>> from deepinv_tunable.physics import build_physics
        >>> vae = TunableVAE(image_size=(16, 16), block_out_channels=(8, 8), latent_channels=2)
        >>> unet = LatentUNet(latent_channels=2, latent_size=8, block_out_channels=(8, 16))
        >>> physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05}, (16, 16))
        >>> y = physics(torch.rand(2, 1, 16, 16))
        >>> out = TunableLDMSolver(vae, unet, max_iter=4).reconstruct(y, physics, k=64, seed=0)
        >>> out.x.shape, out.k, out.nfe
        (torch.Size([2, 1, 16, 16]), 64, 4)
    """

    def __init__(
        self,
        vae,
        unet,
        k: int | None = None,
        max_iter: int = 50,
        eta: float = 0.1,
        consistency: DataConsistency | None = None,
        seed: int | None = None,
        n_steps: int | None = None,
    ):
        max_iter = renamed_keyword("TunableLDMSolver", "n_steps", n_steps, "max_iter", max_iter)
        if not eta > 0:
            raise ValueError(f"eta must be > 0 (eta = 0 makes Algorithm 2 unstable), got {eta}")
        consistency = consistency if consistency is not None else AdamDC()
        super().__init__(vae, unet, consistency, k=k, max_iter=max_iter, ddim_eta=eta, seed=seed)

    @property
    def eta(self) -> float:
        """DDIM stochasticity (the base's ``ddim_eta``)."""
        return self.ddim_eta

    def _solve(
        self,
        y,
        physics: dinv.physics.Physics,
        k=None,
        max_iter: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        return_iterates: bool = False,
        n_steps: int | None = None,
        **kwargs,
    ):
        k = self.call_k(k)
        max_iter = renamed_keyword("TunableLDMSolver", "n_steps", n_steps, "max_iter", max_iter)
        generator = self.noise.generator("cpu", seed, generator)  # CPU noise, moved to the latent's device
        y = y.detach()
        problem = LatentProblem(self.vae, physics, y, k, scale=self.scale)
        shape = (y.shape[0], *self.vae.latent_shape)
        z = truncate(torch.randn(shape, generator=generator).to(y.device), k)
        steps = self.steps(max_iter)
        z, trace = self.reverse(z, steps, problem, generator, return_iterates=return_iterates)
        with torch.no_grad():
            iterates = [problem.image(z0) for _, z0 in trace] if return_iterates else None
            x = problem.image(z)
            residual = problem.residual(z)
        return Reconstruction(
            x=x,
            wall_time=0.0,
            n_iter=len(steps),
            k=self.vae.latent_dim if k is None else k,
            nfe=len(steps),
            iterates=iterates,
            extras={"residual_sq": residual, "latent": z},
        )
