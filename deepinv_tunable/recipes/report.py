"""Figures (PNG) and the HTML report of a recipe run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # file output only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..utils.atomic import atomic_write, write_text_atomic


def shown_slices(indices: Sequence[int], n_figures: int) -> list[int]:
    """The ``n_figures`` evenly spaced slices of ``indices`` that figures show."""
    if n_figures <= 0 or not indices:
        return []
    return [indices[i] for i in np.linspace(0, len(indices) - 1, min(n_figures, len(indices))).astype(int)]


def write_figures(
    folder: Path,
    reference: torch.Tensor,
    baseline: torch.Tensor,
    reconstruction: torch.Tensor,
    indices: Sequence[int],
    n_figures: int,
    labels: tuple[str, str, str] = ("reference", "baseline", "reconstruction"),
    comparisons: dict[str, dict[int, torch.Tensor]] | None = None,
) -> list[Path]:
    """One PNG per shown slice: reference | baseline | comparisons | reconstruction | |error| (x5).

    Shown slices are ``n_figures`` evenly spaced among ``indices``. ``comparisons`` maps a method
    name to its images ``(1, H, W)`` by slice index (e.g. the recipe's ``output.compare``
    solvers); a slice without one (a resumed run's earlier batches) shows the panels it has.
    """
    paths = []
    for k in shown_slices(indices, n_figures):
        ref, base, rec = (t[k, 0].cpu().numpy() for t in (reference, baseline, reconstruction))
        others = [(images[k][0].cpu().numpy(), name) for name, images in (comparisons or {}).items() if k in images]
        panels = [(ref, labels[0]), (base, labels[1]), *others, (rec, labels[2]), (5 * np.abs(rec - ref), "|error| x5")]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
        for ax, (img, title) in zip(axes, panels):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"slice {k}", fontsize=10)
        fig.tight_layout()
        path = folder / f"slice_{k:04d}.png"
        atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def chosen_parameters(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The parameters chosen from the measurements in the run ``record`` describes, as entries
    ``{"slices": [...], name: choice, ...}``: one per batch (``"auto"``), or the one choice made
    for the whole volume (``"auto_once"``, whose ``slices`` are the slices it was made on)."""
    if record.get("auto"):
        return list(record["auto"])
    once = record.get("auto_once", {})
    return [once] if any(name != "slices" for name in once) else []


def write_auto_figure(path: Path, auto: Sequence[dict[str, Any]]) -> Path:
    """Plot the score curve of every parameter chosen from the measurements (one line per batch
    of slices, the choice marked): ``auto`` is ``metrics.json``'s ``"auto"`` list."""
    names = sorted({name for entry in auto for name in entry if name != "slices"})
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for entry in auto:
            if name not in entry:
                continue
            choice = entry[name]
            ax.plot(
                choice["curve"]["values"],
                choice["curve"]["scores"],
                "o-",
                ms=3,
                lw=1,
                label=f"slices {entry['slices'][0]}-{entry['slices'][-1]}",
            )
            ax.axvline(choice["value"], color="k", lw=0.6, ls="--")
        ax.set_xscale("log" if min(choice["curve"]["values"]) > 0 else "linear")
        ax.set_xlabel(name)
        ax.set_ylabel(f"{choice['rule']} score (lower is better)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)
    return path


def _auto_rows(auto: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per parameter chosen from the measurements and batch of slices."""
    return [
        {**choice, "slices": f"{entry['slices'][0]}-{entry['slices'][-1]}", "name": name}  # "tv_pgd.lambda_tv"
        for entry in auto or ()
        for name, choice in entry.items()
        if name != "slices"
    ]


#: per-example diagnostics that flag a slice not to be trusted silently
_ALARMS = ("fallback", "out_of_range")


def _per_slice(value: Any, i: int) -> Any:
    """Example ``i``'s entry of a per-example list, or the batch's single value."""
    return value[i] if isinstance(value, list) and i < len(value) else value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _diagnostics_table(diagnostics: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The solver's diagnostics per slice (:class:`~deepinv_tunable.solvers.SolverDiagnostics`
    records of ``metrics.json``) as a header and rows; a row is an alarm when its slice fell back
    to the baseline, lies outside the model's range or fits the data outside the chi2 band."""
    if not diagnostics:
        return None
    params = sorted({n for e in diagnostics for n in e.get("parameters", {})})
    extra = sorted({n for e in diagnostics for n in e.get("per_example", {})})
    rows = []
    for entry in diagnostics:
        per_example = entry.get("per_example", {})
        for i, index in enumerate(entry["slices"]):
            fit = _per_slice(entry.get("fit"), i)
            values = [
                index,
                _per_slice(entry.get("chi2"), i),
                fit,
                entry.get("iterations"),
                entry.get("converged"),
                _per_slice(entry.get("nfe"), i),
                *(_per_slice(entry.get("parameters", {}).get(n), i) for n in params),
                *(_per_slice(per_example.get(n), i) for n in extra),
            ]
            alarm = any(bool(_per_slice(per_example.get(k), i)) for k in _ALARMS) or fit not in (None, "consistent")
            rows.append({"cells": [_cell(v) for v in values], "alarm": alarm})
    header = ["slice", "chi2", "data fit", "iterations", "converged", "NFE", *params, *extra]
    return {"header": header, "rows": rows}


def _audit_context(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """The audit record of :class:`~deepinv_tunable.recipes.auditing.RecipeAudit` for the template."""
    if not audit:
        return None
    return {
        "samples": audit["samples"],
        "sampler": audit["sampler"],
        "intervals": audit["intervals"],
        "coverage": audit.get("coverage_head"),
        "rows": list(audit["mean"].items()),
    }


def _template():
    """The report template (``templates/report.html.j2``), HTML-escaped by default."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deepinv_tunable", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty cell
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def write_report(path: Path, record: dict[str, Any], figures: Sequence[Path]) -> Path:
    """Write a self-contained HTML summary (figures linked relatively) next to the metrics,
    from the template ``deepinv_tunable/templates/report.html.j2``."""
    recipe = record["recipe"]
    tuning = record.get("tuning")
    context = {
        "title": recipe["name"],
        "description": recipe.get("description", ""),
        "input": record["input"],
        "n_slices": len(record["slices"]),
        "seconds_per_slice": record["solver_seconds_per_slice"],
        "metrics": [
            {
                "method": f"{recipe['solver']['name']} (solver)" if k == "solver" else k,
                "psnr_fg": float("nan"),
                "ssim_fg": float("nan"),
                **{m: v[m] for m in ("psnr", "psnr_fg", "ssim", "ssim_fg", "nmse") if m in v},
            }
            for k, v in record["mean"].items()
        ],
        "tuning": tuning and {**tuning, "rows": list(tuning["table"].items())},
        "auto": _auto_rows(chosen_parameters(record)),
        "diagnostics": _diagnostics_table(record.get("diagnostics")),
        "doubts": record.get("doubts") or [],
        "audit": _audit_context(record.get("audit")),
        "figures": [str(p.relative_to(path.parent)) for p in figures],
        "recipe_json": json.dumps(recipe, indent=2),
        "versions": record["versions"],
    }
    return write_text_atomic(path, _template().render(**context))
