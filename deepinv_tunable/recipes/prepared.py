r"""A recipe's data, physics and solvers, prepared for reconstruction: the volume is loaded and
sliced, the measurements of a slice are simulated with noise seeded by the slice's index, and a
batch of slices is reconstructed by the baseline, the solver and the comparison solvers.

Everything that can be checked is checked while preparing (:func:`prepare_run`), before the
output folder is touched, so a bad input leaves no partial output. The loop over the batches
and the outputs are :mod:`~deepinv_tunable.recipes.runner`'s.
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data import (
    PLANES,
    load_volume,
    percentile_scaling,
    prepare_volume,
    save_volume,
    select_slices,
    slices_to_volume,
    volume_to_slices,
)
from ..data.domain import input_doubts
from ..physics import build_physics, from_physics_domain, to_physics_domain
from ..solvers.base import SolverDiagnostics
from ..tuning import grid_search
from ..utils.atomic import content_sha256
from .output import check_output_dir
from .registry import build_solver
from .report import write_figures
from .schema import AuditConfig, Recipe, RecipeError, SliceRange


class NonFiniteOutput(RuntimeError):
    """A solver returned NaN or inf: the run stops rather than write or report them."""


def _indices(n_total: int, rng: SliceRange, what: str) -> list[int]:
    try:
        return select_slices(n_total, rng.start, rng.stop, rng.count)
    except ValueError as err:
        raise RecipeError(f"{what}: {err}") from None


def _build_solver(recipe: Recipe, override: dict[str, Any] | None = None):
    """The recipe's solver (with ``override`` parameters), its networks on the recipe's device."""
    return _solver(recipe, override).to(torch.device(recipe.device))


def _solver(recipe: Recipe, override: dict[str, Any] | None = None):
    cfg = recipe.solver
    params = cfg.model_dump(exclude={"name", "tune"}).get("params", {})
    params.update(override or {})
    return build_solver(cfg.name, params)


@dataclass
class SliceBatch:
    """One reconstructed batch: slice indices, ground truth, measurements, baseline image,
    solver estimate in the physics' domain and as an image, the solver's seconds, its
    :class:`~deepinv_tunable.solvers.SolverDiagnostics` (``None`` for a plain deepinv model; its
    ``choices`` are the parameters chosen from the measurements) and the comparison images."""

    indices: list[int]
    x: torch.Tensor
    y: torch.Tensor
    baseline: torch.Tensor
    x_phys: torch.Tensor
    reconstruction: torch.Tensor
    seconds: float
    diagnostics: SolverDiagnostics | None = None
    comparisons: dict[str, torch.Tensor] = field(default_factory=dict)
    #: parameters the ``comparisons`` chose from the measurements, as ``"name.param" -> choice``
    comparison_choices: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class PreparedRun:
    """A recipe's data and physics, ready to measure and reconstruct slices: everything that can
    fail on bad input is checked while building it (:func:`prepare_run`), before any output."""

    recipe: Recipe
    device: torch.device
    prepared: Any  # the prepared Volume (grid, affine, header of the outputs)
    scaling: Any  # IntensityScaling of the input
    slices: torch.Tensor  # (N, 1, H, W), normalised
    physics: Any
    eval_idx: list[int]
    tune_idx: list[int]
    audit_calibration_idx: list[int]
    #: reasons to doubt that the input suits the recipe (:func:`~deepinv_tunable.data.domain.input_doubts`)
    input_doubts: list[str] = field(default_factory=list)
    #: SHA-256 of the input's content (recorded, and compared on resume), read once
    input_sha256: str = ""

    def measure(self, x: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """Measurements of slices ``indices``, each with its own seeded noise (so a slice's
        measurement does not depend on its batch, its process, nor on a resumed run)."""
        ys, seed = [], self.recipe.seed
        noise = getattr(self.physics, "noise_model", None)
        for i, k in enumerate(indices):
            with _seeded(seed, k, self.device):
                if getattr(noise, "rng", None) is not None:  # the factory gives the noise its own stream
                    noise.rng_manual_seed(seed * _SEED_STRIDE + k)
                ys.append(self.physics(to_physics_domain(x[i : i + 1].to(self.device), self.physics)))
        return torch.cat(ys)

    def estimate_both(self, solver, y: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The estimate in the physics' domain (for the audit) and as an image; a stochastic
        solver's noise is seeded by the batch's first slice."""
        return self.solve(solver, y, indices)[:2]

    def solve(
        self, solver, y: torch.Tensor, indices: list[int], x_init: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, SolverDiagnostics | None]:
        """:meth:`estimate_both` plus the solver's diagnostics (``None`` for a plain deepinv model);
        ``x_init``: the start of a warm-started solve, in the physics' domain."""
        seed = self.recipe.seed
        with _seeded(seed, indices[0], self.device):
            kwargs = {"seed": seed * _SEED_STRIDE + indices[0]} if getattr(solver, "stochastic", False) else {}
            if x_init is not None:
                kwargs["x_init"] = x_init
            if hasattr(solver, "reconstruct"):
                result = solver.reconstruct(y, self.physics, **kwargs)
                x, diagnostics = result.x, result.diagnostics()
            else:
                x, diagnostics = solver(y, self.physics, **kwargs), None
        return x, from_physics_domain(x, self.physics).cpu(), diagnostics

    def reconstruct_batch(
        self, solver, baseline, batch: list[int], compare: dict | None = None, start_images: torch.Tensor | None = None
    ) -> SliceBatch:
        """Measure slices ``batch`` and reconstruct them with the baseline, the solver (only it is
        timed) and the ``compare`` solvers (name -> solver): one batch of a run, single-process
        or distributed. ``start_images``: the images the solver starts from (a warm start,
        :mod:`~deepinv_tunable.recipes.warm_start`), ``None`` for its own start."""
        x = self.slices[batch]
        y = self.measure(x, batch)
        base = self.estimate_both(baseline, y, batch)[1]
        x_init = None if start_images is None else to_physics_domain(start_images.to(self.device), self.physics)
        start = time.perf_counter()
        x_phys, recon, diagnostics = self.solve(solver, y, batch, x_init)
        seconds = time.perf_counter() - start
        if not bool(torch.isfinite(recon).all()):
            bad = [k for k, r in zip(batch, recon) if not bool(torch.isfinite(r).all())]
            raise NonFiniteOutput(
                f"solver '{self.recipe.solver.name}' returned non-finite values (NaN or inf) on slices {bad}; the run "
                "stops before writing them (finished slices are kept, metrics.json stays 'complete': false). "
                "Check the model's weights and the measurements"
            )
        others, choices = {}, {}
        for name, other in (compare or {}).items():
            _, others[name], other_diagnostics = self.solve(other, y, batch)
            for param, choice in (other_diagnostics.choices if other_diagnostics is not None else {}).items():
                choices[f"{name}.{param}"] = choice
        return SliceBatch(batch, x, y, base, x_phys, recon, seconds, diagnostics, others, choices)

    def comparison_labels(self) -> list[str]:
        """The labels of the recipe's ``output.compare`` solvers: the solver name, numbered when
        it repeats."""
        labels: list[str] = []
        for cfg in self.recipe.output.compare:
            labels.append(cfg.name if cfg.name not in labels else f"{cfg.name}_{len(labels)}")
        return labels

    def comparison_solvers(self) -> dict[str, Any]:
        """The recipe's ``output.compare`` solvers by their :meth:`comparison_labels`, on the
        run's device."""
        out: dict[str, Any] = {}
        for label, cfg in zip(self.comparison_labels(), self.recipe.output.compare):
            params = cfg.model_dump(exclude={"name", "tune"}).get("params", {})
            out[label] = build_solver(cfg.name, params).to(self.device)
        return out

    def use_device(self, device: torch.device) -> None:
        """Measure and reconstruct on ``device`` (a rank's own GPU): the physics is built again there."""
        self.device = device
        self.physics = build_physics(self.recipe.physics, tuple(self.slices.shape[-2:]), device=device)

    def record_header(self, full_volume: bool) -> dict[str, Any]:
        record: dict[str, Any] = {
            "recipe": self.recipe.model_dump(mode="json"),
            "input": str(self.recipe.input_path()),
            "input_sha256": self.input_sha256,
            "versions": {
                "deepinv_tunable": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "intensity_scaling": {"low": self.scaling.low, "high": self.scaling.high},
            "complete": False,
            "full_volume": full_volume,
            "n_evaluated": len(self.eval_idx),
        }
        if full_volume and self.tune_idx:
            record["tuning_slices_evaluated"] = sorted(set(self.tune_idx) & set(self.eval_idx))
        return record

    def write_outputs(
        self,
        out_dir: Path,
        recon: torch.Tensor,
        base: torch.Tensor,
        comparisons: dict[str, dict[int, torch.Tensor]] | None = None,
    ) -> list[Path]:
        """Write the reconstruction, baseline and reference volumes (evaluated slices only,
        input units, prepared grid) and the figures (with the ``comparisons`` solvers' images of
        the shown slices), as the recipe's ``output`` asks; return the figure paths."""
        recipe, d = self.recipe, self.recipe.data
        if recipe.output.volumes:
            processed = torch.zeros(len(self.slices), dtype=torch.bool)
            processed[self.eval_idx] = True
            for name, stack in (("reconstruction", recon), ("baseline", base), ("reference", self.slices)):
                data = self.scaling.invert(stack) * processed.view(-1, 1, 1, 1)
                save_volume(slices_to_volume(data, d.plane), out_dir / f"{name}.nii.gz", like=self.prepared)
        if not recipe.output.figures:
            return []
        return write_figures(
            out_dir / "figures",
            self.slices,
            base,
            recon,
            self.eval_idx,
            recipe.output.figures,
            labels=("reference", "baseline (measurements only)", recipe.solver.name),
            comparisons=comparisons,
        )

    def choose_once(self, record: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
        """With ``solver.auto_scope: volume``: the solver's measurement-only choices, made once on
        ``solver.auto_slices`` evaluation slices spread through the volume and then fixed for every
        slice; recorded in ``record["auto_once"]``. Returns the solver overrides (``{}`` with the
        default per-batch scope, or when the solver chooses nothing)."""
        cfg = self.recipe.solver
        if getattr(cfg, "auto_scope", "batch") != "volume":
            return {}
        if "auto_once" in record:  # a resumed run keeps its choice
            return {k: v["value"] for k, v in record["auto_once"].items() if k != "slices"}
        n = len(self.eval_idx)
        picks = sorted(
            {self.eval_idx[round(i * (n - 1) / max(cfg.auto_slices - 1, 1))] for i in range(cfg.auto_slices)}
        )
        x = self.slices[picks]
        diagnostics = self.solve(_build_solver(self.recipe, overrides), self.measure(x, picks), picks)[2]
        params = set(type(cfg.params).model_fields) if hasattr(cfg, "params") else set()
        choices = {k: c for k, c in (diagnostics.choices if diagnostics is not None else {}).items() if k in params}
        record["auto_once"] = {"slices": picks, **choices}
        return {name: choice["value"] for name, choice in choices.items()}

    def tune(self, record: dict[str, Any]) -> dict[str, Any]:
        """Grid-search the recipe's ``solver.tune`` parameter on its calibration slices; record
        the table in ``record["tuning"]`` and return the solver overrides (empty without tuning)."""
        tune_cfg = getattr(self.recipe.solver, "tune", None)
        if tune_cfg is None:
            return {}
        x_cal = self.slices[self.tune_idx]
        y_cal = self.measure(x_cal, self.tune_idx)
        result = grid_search(
            lambda v: self.estimate_both(_build_solver(self.recipe, {tune_cfg.param: v}), y_cal, self.tune_idx)[1],
            x_cal,
            tune_cfg.grid,
            param=tune_cfg.param,
            metric=tune_cfg.metric,
        )
        record["tuning"] = {
            "param": result.param,
            "best": result.best,
            "metric": result.metric,
            "calibration_slices": self.tune_idx,
            "table": {str(k): v for k, v in result.table.items()},
        }
        return {tune_cfg.param: result.best}


def prepare_run(recipe: Recipe, full_volume: bool = False, audit: bool = False) -> PreparedRun:
    """Load and prepare the recipe's volume, build its physics and check its slice ranges
    (see :func:`~deepinv_tunable.recipes.run_recipe` for ``full_volume`` and ``audit``); raises :class:`~deepinv_tunable.recipes.RecipeError`."""
    device = torch.device(recipe.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: 'cuda' requested but no CUDA device is available (use --device cpu)")
    check_output_dir(Path(recipe.output.dir), _input_files(recipe))
    volume = load_volume(recipe.input_path(), recipe.data.volume_index, recipe.data.series)
    d = recipe.data
    if d.normalize.lower >= d.normalize.upper:
        raise RecipeError(f"data.normalize: lower ({d.normalize.lower}) must be below upper ({d.normalize.upper})")
    prepared = prepare_volume(volume, d.plane, spacing=d.spacing, size=d.size)
    doubts = input_doubts(volume, recipe.physics.kind, d.spacing, PLANES[d.plane])
    scaling = percentile_scaling(prepared.data, d.normalize.lower, d.normalize.upper)
    slices = scaling.apply(volume_to_slices(prepared.data, d.plane))
    img_size = tuple(slices.shape[-2:])
    try:
        physics = build_physics(recipe.physics, img_size, device=device)
    except ValueError as err:
        raise RecipeError(f"physics: {err} (image size after data preparation: {img_size})") from None
    eval_idx = list(range(len(slices))) if full_volume else _indices(len(slices), d.slices, "data.slices")
    audit_cfg = (recipe.audit or AuditConfig()) if audit else None
    audit_cal_idx: list[int] = []
    if audit_cfg is not None and audit_cfg.calibration is not None:
        audit_cal_idx = _indices(len(slices), audit_cfg.calibration, "audit.calibration")
        overlap = sorted(set(audit_cal_idx) & set(eval_idx))
        if overlap:
            raise RecipeError(
                f"audit.calibration overlaps the evaluation slices at {overlap}: intervals "
                "calibrated on the slices they are scored on are not calibrated; choose a disjoint range"
            )
    tune_cfg = getattr(recipe.solver, "tune", None)
    tune_idx: list[int] = []
    if tune_cfg is not None:
        tune_idx = _indices(len(slices), tune_cfg.slices, "solver.tune.slices")
        overlap = sorted(set(tune_idx) & set(eval_idx))
        if overlap and not full_volume:
            raise RecipeError(
                f"solver.tune.slices overlap the evaluation slices at {overlap}: tuning on "
                "the slices a result is reported on inflates it; choose a disjoint range"
            )
    if getattr(recipe.solver, "warm_start", False):
        _check_warm_start(recipe, physics)
    digest = content_sha256(recipe.input_path())
    return PreparedRun(
        recipe, device, prepared, scaling, slices, physics, eval_idx, tune_idx, audit_cal_idx, doubts, digest
    )


def _check_warm_start(recipe: Recipe, physics) -> None:
    """``solver.warm_start`` needs a solver that starts from ``x_init`` on this physics."""
    solver = _solver(recipe)
    if not (hasattr(solver, "accepts_x_init") and solver.accepts_x_init(physics)):
        raise RecipeError(
            f"solver.warm_start: '{recipe.solver.name}' with these parameters cannot start from another slice's "
            "reconstruction (it takes no x_init on this physics; tv_pgd and pnp_hvae's fixed-point schedule do); "
            "set warm_start: false"
        )


def _input_files(recipe: Recipe) -> tuple[Path, ...]:
    """The files (or DICOM folder) a run reads: the volume, and an audit's calibration file."""
    files = [recipe.input_path()]
    calibration = getattr(recipe.audit, "calibration_file", None)
    if calibration:
        files.append(Path(calibration))
    return tuple(files)


#: spacing of the per-slice seeds of different recipe seeds
_SEED_STRIDE = 1_000_003


@contextmanager
def _seeded(seed: int, index: int, device: torch.device):
    """torch's global RNG seeded from (recipe seed, slice index), restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed * _SEED_STRIDE + index)
        yield
