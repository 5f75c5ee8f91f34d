r"""The solver registry: every solver a recipe, the CLI or a benchmark can name, in one table.

Each entry maps a recipe ``solver.name`` to the solver class (whose ``stochastic`` attribute
says whether repeated calls draw posterior samples) and to the builder that turns the
recipe's validated ``solver.params`` into a ready solver (loading shipped networks by name).
The recipe schema (``deepinv_tunable.recipes.schema``, :doc:`/recipes`) validates the parameters;
:mod:`~deepinv_tunable.recipes.runner` builds from here.

>>> sorted(SOLVERS)[:3]
['baseline', 'dpir', 'flash_diffusion']
>>> stochastic_solvers()
('flash_diffusion', 'pixel_flash', 'tunable_ldm')
>>> build_solver("tv_pgd", {"lambda_tv": 0.05}).lambda_tv
0.05
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..solvers import (
    DPIR,
    TVPGD,
    FlashDiffusion,
    LatentMAP,
    LatentMAPTV,
    MeasurementBaseline,
    PixelFlash,
    PnPHVAE,
    PseudoInverse,
    TunableLDMSolver,
)
from ..solvers.base import TunableReconstructor


def _k(value) -> int | None:
    """A recipe's ``k``: ``"full"`` (the whole latent) or an integer."""
    return None if value == "full" else int(value)


def _pixel_flash(denoiser: str, **solver_params) -> PixelFlash:
    """PixelFlash with a pixel denoiser by name, its noise seeded once for the run."""
    from ..priors import load_pixel_denoiser

    return PixelFlash(load_pixel_denoiser(denoiser), **solver_params)


def _dpir(denoiser: str, **solver_params) -> DPIR:
    """DPIR with a pixel denoiser by name."""
    from ..priors import load_pixel_denoiser

    return DPIR(denoiser=load_pixel_denoiser(denoiser), **solver_params)


def _flash_diffusion(model: str, k, **solver_params) -> FlashDiffusion:
    """FlashDiffusion from a severity-encoder checkpoint, its noise seeded once for the run."""
    return FlashDiffusion.from_pretrained(model, k=_k(k), **solver_params)


def _tunable_ldm(vae: str | None, unet: str, k, consistency: str, seed: int, **solver_params) -> TunableLDMSolver:
    """TunableLDMSolver on shipped networks (``vae=None``: the one ``unet`` records), its noise
    seeded once for the run."""
    from ..diffusion.consistency import consistency_step
    from ..pretrained import load

    params = {"k": _k(k), "consistency": consistency_step(consistency), "seed": seed, **solver_params}
    if vae is None:
        return TunableLDMSolver.from_pretrained(unet, **params)
    return TunableLDMSolver(load(vae), load(unet), **params)


def _pnp_hvae(model: str, tau, **solver_params) -> PnPHVAE:
    """PnPHVAE on a shipped hierarchical VAE."""
    from ..pretrained import load

    return PnPHVAE(load(model), tau={"noise": None, "auto": "auto"}.get(tau, tau), **solver_params)


def _latent_map(model: str, k, k_grid=None, k_rule: str = "auto", **solver_params) -> TunableReconstructor:
    """LatentMAP on a shipped prior; ``k="auto"`` wraps it in :class:`~deepinv_tunable.tuning.latent_size.AutoK`."""
    from ..pretrained import load, path
    from ..tuning import AutoK, load_spectrum

    prior = load(model)
    if k == "auto":
        extra = {"spectrum": load_spectrum(path(model))} if k_rule == "closed_form" else {}
        return AutoK(LatentMAP(prior, **solver_params), [int(v) for v in k_grid], rule=k_rule, **extra)
    return LatentMAP(prior, k=_k(k), **solver_params)


def _latent_map_tv(lambda_tv: float, beta: float, tv_max_iter: int, **latent_map_params) -> LatentMAPTV:
    """LatentMAP (fixed ``k``) followed by the TV-regularised deviation of :class:`~deepinv_tunable.solvers.LatentMAPTV`."""
    return LatentMAPTV(_latent_map(**latent_map_params), lambda_tv=lambda_tv, beta=beta, max_iter=tv_max_iter)


@dataclass(frozen=True)
class SolverEntry:
    """One registered solver: its class and the builder from recipe parameters."""

    solver_class: type
    build: Callable[..., TunableReconstructor]

    @property
    def stochastic(self) -> bool:
        """Whether repeated calls draw different samples (the class' ``stochastic`` attribute)."""
        return bool(getattr(self.solver_class, "stochastic", False))


#: recipe ``solver.name`` -> :class:`SolverEntry`
SOLVERS: dict[str, SolverEntry] = {
    "baseline": SolverEntry(MeasurementBaseline, MeasurementBaseline),
    "pseudo_inverse": SolverEntry(PseudoInverse, PseudoInverse),
    "tv_pgd": SolverEntry(TVPGD, TVPGD),
    "latent_map": SolverEntry(LatentMAP, _latent_map),
    "latent_map_tv": SolverEntry(LatentMAPTV, _latent_map_tv),
    "tunable_ldm": SolverEntry(TunableLDMSolver, _tunable_ldm),
    "pnp_hvae": SolverEntry(PnPHVAE, _pnp_hvae),
    "flash_diffusion": SolverEntry(FlashDiffusion, _flash_diffusion),
    "pixel_flash": SolverEntry(PixelFlash, _pixel_flash),
    "dpir": SolverEntry(DPIR, _dpir),
}


def build_solver(name: str, params: dict[str, Any] | None = None) -> TunableReconstructor:
    """The solver registered as ``name``, built from (validated) recipe parameters."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}': expected one of {sorted(SOLVERS)}")
    return SOLVERS[name].build(**(params or {}))


def stochastic_solvers() -> tuple[str, ...]:
    """Names of the registered solvers whose repeated calls draw posterior samples."""
    return tuple(sorted(name for name, entry in SOLVERS.items() if entry.stochastic))
