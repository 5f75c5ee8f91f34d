r"""Run a recipe: volume -> slices -> simulated measurements -> reconstruction -> outputs.

Everything that can be checked is checked before the output folder is touched, so a bad
input leaves no partial output. Results are written atomically; the metrics file is rewritten
after each batch of slices (``"complete": false`` until the end), so an interrupted run keeps
what it finished.
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
from ..atomic import content_sha256, write_json_atomic
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
from ..metrics import image_metrics
from ..physics import build_physics, from_physics_domain, to_physics_domain
from ..progress import progress_bar
from ..report import chosen_parameters, shown_slices, write_auto_figure, write_figures, write_report
from ..solvers.base import SolverDiagnostics
from ..tuning import grid_search
from .auditing import calibrated_auditor, write_audit
from .output import check_output_dir
from .partial import PartialStacks
from .records import BATCH_KEYS, add_input_doubts, add_records, batch_records, metrics_record, resumable_record
from .registry import build_solver
from .schema import AuditConfig, Recipe, RecipeError, SliceRange
from .warm_start import slice_batches


class NonFiniteOutput(RuntimeError):
    """A solver returned NaN or inf: the run stops rather than write or report them."""


@dataclass
class RunResult:
    """Where a run wrote its outputs, and its summary metrics."""

    out_dir: Path
    metrics_path: Path
    report_path: Path | None
    summary: dict[str, dict[str, float]]


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

    def comparison_solvers(self) -> dict[str, Any]:
        """The recipe's ``output.compare`` solvers by their label (the solver name, numbered when
        it repeats), on the run's device."""
        out: dict[str, Any] = {}
        for cfg in self.recipe.output.compare:
            label = cfg.name if cfg.name not in out else f"{cfg.name}_{len(out)}"
            params = cfg.model_dump(exclude={"name", "tune"}).get("params", {})
            out[label] = build_solver(cfg.name, params).to(self.device)
        return out

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
    (see :func:`run_recipe` for ``full_volume`` and ``audit``); raises :class:`~deepinv_tunable.recipes.RecipeError`."""
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


def run_recipe(
    recipe: Recipe, progress: bool | None = None, audit: bool = False, resume: bool = False, full_volume: bool = False
) -> RunResult:
    r"""Run ``recipe`` end to end and write its outputs to ``recipe.output.dir``.

    Outputs: ``reconstruction.nii.gz``, ``baseline.nii.gz`` (see
    :class:`~deepinv_tunable.solvers.MeasurementBaseline`: zero-filled MRI, CT pseudo-inverse, blurred image) and ``reference.nii.gz`` on the prepared grid, in the input's intensity units,
    processed slices only (others are 0); ``metrics.json`` (PSNR/SSIM/NMSE per slice and mean);
    ``figures/*.png``; ``report.html``.

    With ``audit=True`` (``deepinv-tunable audit``), also: ``std.nii.gz``,
    ``interval_width.nii.gz`` (split-conformal when the recipe's ``audit`` section names
    calibration slices or a calibration file) and ``null_space.nii.gz`` (magnitude of the
    reconstruction's null-space component), ``audit.json``, ``calibration.json``,
    ``figures/audit_slice_*.png`` and an audit section in the report (see
    :class:`~deepinv_tunable.recipes.auditing.RecipeAudit`). The recipe's ``audit`` section is
    optional; its defaults sample with the shipped hierarchical VAE.

    :param ~deepinv_tunable.recipes.Recipe recipe: validated recipe (see
        :func:`~deepinv_tunable.recipes.load_recipe`).
    :param bool progress: show a tqdm bar; default: only when attached to a terminal.
    :param bool audit: draw posterior samples and audit every evaluated slice. Default False.
    :param bool resume: continue an interrupted run of the same recipe in the same folder: the
        slices ``metrics.json`` lists as finished are kept, not recomputed, and the result is
        identical to an uninterrupted run (measurement noise and solver noise are seeded per
        slice batch from ``recipe.seed``). Default False (start afresh). Not with ``audit``.

    :param bool full_volume: reconstruct every slice, whatever ``data.slices`` says; tuning
        slices then are among the reconstructed ones (allowed, and recorded in ``metrics.json``
        as ``"tuning_slices_evaluated"``: their metrics are optimistic). Default False.

    Slice results go to memory-mapped stacks in ``OUT/.partial`` as each batch finishes (see
    :class:`~deepinv_tunable.recipes.partial.PartialStacks`), so a long volume's results are not
    held in RAM and a crash loses at most the batch in progress.
    """
    run = prepare_run(recipe, full_volume=full_volume, audit=audit)
    slices, eval_idx, d = run.slices, run.eval_idx, recipe.data
    audit_cfg = (recipe.audit or AuditConfig()) if audit else None
    out_dir = Path(recipe.output.dir)
    metrics_path = out_dir / "metrics.json"
    previous = resumable_record(metrics_path, recipe, audit, full_volume, run.input_sha256) if resume else None
    if previous is not None and previous.get("complete"):
        report = out_dir / "report.html"
        return RunResult(
            out_dir=out_dir,
            metrics_path=metrics_path,
            report_path=report if report.is_file() else None,
            summary=previous["mean"],
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run.record_header(full_volume)
    for key in BATCH_KEYS:  # the finished batches' records are kept on resume
        if previous is not None and key in previous:
            record[key] = previous[key]
    add_input_doubts(record, run)
    if previous is not None and "tuning" in previous:
        record["tuning"] = previous["tuning"]  # tuned once; a resumed run reuses the choice
        solver_overrides = {previous["tuning"]["param"]: previous["tuning"]["best"]}
    else:
        solver_overrides = run.tune(record)
    if previous is not None and "auto_once" in previous:
        record["auto_once"] = previous["auto_once"]
    solver_overrides.update(run.choose_once(record, solver_overrides))
    solver = _build_solver(recipe, solver_overrides)
    baseline = build_solver("baseline")
    auditor = None if audit_cfg is None else calibrated_auditor(run, audit_cfg, solver)

    per_slice: dict[str, dict[str, list[float]]] = {"baseline": {}, "solver": {}}
    seconds, finished = 0.0, []  # the finished slices, in the order of per_slice's values
    stacks = PartialStacks(
        out_dir, ("reconstruction", "baseline"), tuple(slices.shape[:1] + slices.shape[2:]), resume=previous is not None
    )
    if previous is not None:
        per_slice, seconds = previous["per_slice"], previous["solver_seconds_per_slice"] * len(previous["slices"])
        finished = list(previous["slices"])
    bar = progress_bar(
        total=len(eval_idx), progress=progress, initial=len(finished), desc=f"{recipe.name}: slices", unit="slice"
    )
    compare = run.comparison_solvers()
    shown = set(shown_slices(eval_idx, recipe.output.figures))
    compared: dict[str, dict[int, torch.Tensor]] = {}  # the comparison solvers' shown slices, for figures
    batches, predecessor = slice_batches(eval_idx, d.batch_size, getattr(recipe.solver, "warm_start", False))
    resumed = set(finished)
    for batch in batches:
        if set(batch) <= resumed:  # a resumed run keeps its finished batches
            continue
        starts = [predecessor[k] for k in batch]
        start_images = None if None in starts else stacks.tensor("reconstruction")[starts]
        out = run.reconstruct_batch(solver, baseline, batch, compare, start_images)
        seconds += out.seconds
        add_records(record, batch_records(out, recipe.solver.name))
        if auditor is not None:
            auditor.process(batch, out.x, out.y, out.x_phys)
            record["audit"] = auditor.record()
        _add_batch_metrics(per_slice, compared, out, batch, shown)
        # on disk before metrics.json calls these slices finished
        stacks.write(batch, {"reconstruction": out.reconstruction, "baseline": out.baseline})
        finished += batch
        record.update(metrics_record(finished, per_slice, seconds))
        write_json_atomic(metrics_path, record)
        bar.update(len(batch))
    bar.close()
    recon, base = stacks.tensor("reconstruction"), stacks.tensor("baseline")

    figure_paths = run.write_outputs(out_dir, recon, base, compared)
    if (chosen := chosen_parameters(record)) and recipe.output.figures:
        figure_paths.append(write_auto_figure(out_dir / "figures" / "auto_parameters.png", chosen))
    if auditor is not None:
        record["audit"], audit_figures = write_audit(run, auditor, out_dir, recon)
        figure_paths += audit_figures
    record["complete"] = True
    write_json_atomic(metrics_path, record)
    stacks.remove()
    report_path = write_report(out_dir / "report.html", record, figure_paths) if recipe.output.report else None
    return RunResult(out_dir=out_dir, metrics_path=metrics_path, report_path=report_path, summary=record["mean"])


def _add_batch_metrics(
    per_slice: dict[str, dict[str, list[float]]],
    compared: dict[str, dict[int, torch.Tensor]],
    out: SliceBatch,
    batch: list[int],
    shown: set[int],
) -> None:
    """Append a batch's per-slice metrics (baseline, solver, comparisons) and keep the comparison
    solvers' shown slices for the figures."""
    for key, est in (("baseline", out.baseline), ("solver", out.reconstruction), *out.comparisons.items()):
        for name, values in image_metrics(est, out.x).items():
            per_slice.setdefault(key, {}).setdefault(name, []).extend(values)
    for key, est in out.comparisons.items():
        for i, k in enumerate(batch):
            if k in shown:
                compared.setdefault(key, {})[k] = est[i].cpu()


#: spacing of the per-slice seeds of different recipe seeds
_SEED_STRIDE = 1_000_003


@contextmanager
def _seeded(seed: int, index: int, device: torch.device):
    """torch's global RNG seeded from (recipe seed, slice index), restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed * _SEED_STRIDE + index)
        yield
