"""What a run writes into ``metrics.json`` besides the images, in one place, so the
batches of every process gather into the same records: the metrics, the parameters chosen from the measurements (``"auto"``), the solvers' diagnostics
and every doubt about the input or the answer (``"doubts"``, each also a warning)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .schema import Recipe, RecipeError

if TYPE_CHECKING:
    from .prepared import PreparedRun, SliceBatch

#: the keys a finished batch may add to the record, in the order they are written
BATCH_KEYS = ("auto", "diagnostics", "doubts")


def metrics_record(indices: list[int], per_slice: dict, seconds: float) -> dict[str, Any]:
    """The metrics part of the record: the evaluated ``indices``, their ``per_slice`` metrics
    (``{"baseline" | "solver" | comparison: {metric: [values]}}``, each list in the order of
    ``indices``), the means and the solver's seconds per slice. The record lists the slices in
    increasing order, whatever order they were reconstructed in (a warm start's chains)."""

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    order = sorted(range(len(indices)), key=indices.__getitem__)
    per_slice = {key: {name: [v[i] for i in order] for name, v in values.items()} for key, values in per_slice.items()}
    return {
        "slices": [indices[i] for i in order],
        "per_slice": per_slice,
        "mean": {key: {name: mean(v) for name, v in values.items()} for key, values in per_slice.items()},
        "solver_seconds_per_slice": seconds / max(len(indices), 1),
    }


def batch_records(out: SliceBatch, solver_name: str) -> dict[str, list]:
    """What the finished batch ``out`` adds to the record, per key of :data:`BATCH_KEYS`: the
    chosen parameters (value, rule, score curve, bound flag; a compared solver's as
    ``"name.param"``), the diagnostics (iterations, convergence, data fit, NFE, severity...) and
    the doubts they raise. JSON-ready, so a rank can write them to its manifest."""
    records: dict[str, list] = {key: [] for key in BATCH_KEYS}
    batch = list(out.indices)
    choices = {**(out.diagnostics.choices if out.diagnostics is not None else {}), **out.comparison_choices}
    if choices:
        records["auto"].append({"slices": batch, **choices})
    if out.diagnostics is not None:
        fields = {k: v for k, v in out.diagnostics.as_dict().items() if k != "choices"}  # those are "auto"
        records["diagnostics"].append({"slices": batch, **fields})
        records["doubts"].extend(out.diagnostics.doubts(solver_name, batch))
    return records


def add_records(record: dict[str, Any], records: dict[str, list]) -> None:
    """Append a batch's ``records`` (:func:`batch_records`) to ``record`` (its doubts were warned
    when the batch finished: :class:`~deepinv_tunable.recipes.runner.SliceWriter`)."""
    for key in BATCH_KEYS:
        for entry in records.get(key, []):
            record.setdefault(key, []).append(entry)


def add_input_doubts(record: dict[str, Any], run: PreparedRun) -> None:
    """The doubts about the input (:func:`~deepinv_tunable.data.domain.input_doubts`), warned and
    recorded once (a resumed run keeps its earlier record's)."""
    for doubt in run.input_doubts:
        warnings.warn(f"input: {doubt}", RuntimeWarning, stacklevel=3)
        if f"input: {doubt}" not in record.get("doubts", []):
            record.setdefault("doubts", []).append(f"input: {doubt}")


def resumable_record(
    metrics_path: Path, recipe: Recipe, audit: bool, full_volume: bool, digest: str
) -> dict[str, Any] | None:
    """The record of an interrupted run of ``recipe`` at ``metrics_path`` to continue, or None to
    start afresh; a :class:`~deepinv_tunable.recipes.schema.RecipeError` names why a record cannot be
    continued (another recipe, another input file, ``--full-volume`` changed, an audit)."""
    if audit:
        raise RecipeError(
            "--resume is not supported with audit (posterior samples are not kept on disk); "
            "re-run the audit from scratch"
        )
    if not metrics_path.is_file():
        return None
    previous = json.loads(metrics_path.read_text())
    if previous.get("full_volume", False) != full_volume:
        flag = "add --full-volume" if previous.get("full_volume", False) else "drop --full-volume"
        raise RecipeError(
            f"cannot resume: {metrics_path} was written by a run {'with' if not full_volume else 'without'} "
            f"--full-volume; {flag} to continue it"
        )
    if previous.get("recipe") != recipe.model_dump(mode="json"):
        raise RecipeError(
            f"cannot resume: {metrics_path} was written by a different recipe (or other "
            "overrides); repeat the interrupted command's options, or use another --out to start afresh"
        )
    if previous.get("input_sha256") != digest:
        raise RecipeError(
            f"cannot resume: the input {recipe.input_path()} is not the file the interrupted run read "
            f"(SHA-256 {digest[:12]}..., recorded {str(previous.get('input_sha256'))[:12]}...); its finished "
            "slices would mix two volumes. Use another --out (or drop --resume) to start afresh"
        )
    if "slices" not in previous:
        return None  # stopped before its first batch: nothing to keep
    return previous
