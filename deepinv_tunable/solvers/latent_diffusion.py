r"""The one latent-diffusion sampler base: the DDIM schedule of the noise network, the reverse
loop with its data-consistency hook, and per-sample start steps (the severity start of
Flash-Diffusion). :class:`~deepinv_tunable.solvers.TunableLDMSolver` and
:class:`~deepinv_tunable.solvers.FlashDiffusion` configure it (their initial latents and start
steps) rather than re-implement it, as deepinv's ``PosteriorDiffusion`` does over its models.

.. code-block:: text

    for j, step t -> t' in the DDIM sub-schedule (max_iter of them):
        rows = samples whose start index <= j                    # all rows for a plain sampler
        z[rows] = latent_reverse_step(unet, z[rows], step, consistency, problem[rows], k)
    return D(T_k z_0)

The step itself (noise prediction, Tweedie, data consistency, DDIM, truncation) is
:func:`deepinv_tunable.diffusion.schedule.latent_reverse_step`; the schedule arithmetic is in
:mod:`deepinv_tunable.diffusion.schedule`.
"""

from __future__ import annotations

import torch

from ..diffusion.consistency import DataConsistency, LatentProblem
from ..diffusion.schedule import ReverseStep, latent_reverse_step, reverse_steps
from ..nets.truncation import check_k
from .base import NoiseStream, TunableReconstructor


class LatentDiffusionSolver(TunableReconstructor):
    r"""Base of the package's latent diffusion samplers (see the module docstring).

    :param vae: tunable autoencoder (``decode(z, k)``, ``latent_shape``, ``latent_dim``,
        ``config["scaling_factor"]``); latents are sampled in diffusion units (the VAE latent
        times its scaling factor).
    :param unet: noise network with ``sampling_scheduler()`` (:class:`~deepinv_tunable.nets.LatentUNet`).
    :param consistency: the data-consistency hook (:class:`~deepinv_tunable.diffusion.consistency.DataConsistency`).
    :param int k: default latent size (``None``: full); overridable per call.
    :param int max_iter: DDIM sub-schedule length (deepinv's name for a sampler's steps).
    :param float ddim_eta: DDIM stochasticity in ``[0, 1]``.
    :param int seed: seeds the solver's :class:`~deepinv_tunable.solvers.base.NoiseStream`.
    :param dict other_latent_shapes: further networks that must share the latent shape, by name.
    :param float zeta: DiffPIR's transition with this fresh-noise fraction instead of DDIM's
        (:func:`~deepinv_tunable.diffusion.schedule.reverse_steps`); ``None``: DDIM with ``ddim_eta``.
    """

    unit_range = True

    stochastic = True

    def __init__(
        self,
        vae,
        unet,
        consistency: DataConsistency,
        k: int | None,
        max_iter: int,
        ddim_eta: float,
        seed: int | None,
        other_latent_shapes: dict[str, tuple[int, ...]] | None = None,
        zeta: float | None = None,
    ):
        super().__init__()
        shapes = {
            "VAE": tuple(vae.latent_shape),
            "UNet": (unet.config["latent_channels"], unet.config["latent_size"], unet.config["latent_size"]),
            **(other_latent_shapes or {}),
        }
        if len(set(shapes.values())) != 1:
            raise ValueError(f"the networks must share one latent shape, got {shapes}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if not 0 <= ddim_eta <= 1:
            raise ValueError(f"ddim_eta (DDIM stochasticity) must be in [0, 1], got {ddim_eta}")
        if zeta is not None and not 0 <= zeta <= 1:
            raise ValueError(f"zeta (DiffPIR's fresh-noise fraction) must be in [0, 1] or None, got {zeta}")
        if k is not None:
            check_k(k, vae.latent_dim)
        self.vae = vae.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = unet.sampling_scheduler()
        self.consistency = consistency
        self.k, self.max_iter, self.ddim_eta = k, int(max_iter), float(ddim_eta)
        self.zeta = None if zeta is None else float(zeta)
        self.noise = NoiseStream(seed)

    @property
    def scale(self) -> float:
        """The VAE's ``scaling_factor``: diffusion units per VAE latent unit."""
        return float(self.vae.config["scaling_factor"])

    def call_k(self, k) -> int | None:
        """A call's latent size: ``k`` if given, else the solver's default (checked)."""
        k = self.k if k is None else k
        if k is not None:
            check_k(k, self.vae.latent_dim)
        return k

    def steps(self, max_iter: int | None = None) -> list[ReverseStep]:
        """The DDIM transitions of a call, noisiest first."""
        return reverse_steps(self.scheduler, int(max_iter or self.max_iter), self.ddim_eta, zeta=self.zeta)

    def reverse(
        self,
        z: torch.Tensor,
        steps: list[ReverseStep],
        problem: LatentProblem,
        generator: torch.Generator | None,
        start_index: torch.Tensor | None = None,
        return_iterates: bool = False,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Run the reverse loop from the latents ``z``; sample ``i`` joins at ``steps[start_index[i]]``
        (``None``: all at the first step). Every step draws its DDIM noise for the whole batch,
        so a sample's noise does not depend on which of its batch-mates have started.

        :return: the final latents and, with ``return_iterates``, per step ``(rows, z0_hat)``.
        """
        b = z.shape[0]
        index = torch.zeros(b, dtype=torch.long) if start_index is None else start_index
        index = index.to(z.device)
        iterates = [] if return_iterates else None
        for j, step in enumerate(steps):
            rows = (index <= j).nonzero().flatten()
            if rows.numel() == 0:
                continue
            sub = problem if rows.numel() == b else problem.subset(rows)
            noise = None
            if step.noise_std > 0:
                noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)[rows]
            z_rows, z0 = latent_reverse_step(self.unet, z[rows], step, self.consistency, sub, sub.k, noise=noise)
            z = z_rows if rows.numel() == b else z.index_copy(0, rows, z_rows)
            if return_iterates:
                iterates.append((rows.cpu(), z0))
        return z, iterates
