"""Figures (PNG) and the HTML report of a recipe run."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # file output only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import torch

from .atomic import atomic_write, write_text_atomic


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
) -> list[Path]:
    """One PNG per shown slice: reference | baseline | reconstruction | |error| (x5).

    Shown slices are ``n_figures`` evenly spaced among ``indices``.
    """
    paths = []
    for k in shown_slices(indices, n_figures):
        ref, base, rec = (t[k, 0].cpu().numpy() for t in (reference, baseline, reconstruction))
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        panels = [(ref, labels[0]), (base, labels[1]), (rec, labels[2]), (5 * np.abs(rec - ref), "|error| x5")]
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


def _table(mean: dict[str, dict[str, float]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['psnr']:.2f}</td><td>{v.get('psnr_fg', float('nan')):.2f}</td>"
        f"<td>{v['ssim']:.4f}</td><td>{v['nmse']:.5f}</td></tr>"
        for k, v in mean.items()
    )
    return (
        "<table><tr><th>method</th><th>PSNR (dB)</th><th>PSNR in the object (dB)</th><th>SSIM</th><th>NMSE</th></tr>"
        f"{rows}</table>"
    )


def _audit_section(audit: dict[str, Any] | None) -> str:
    """HTML for the audit record of :class:`~deepinv_tunable.recipes.auditing.RecipeAudit`."""
    if not audit:
        return ""
    mean = audit["mean"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in mean.items())
    cov = audit.get("coverage_head")
    cov_html = ""
    if cov:
        cal = "n/a (no calibration)" if cov["calibrated"] is None else f"{100 * cov['calibrated']:.1f}%"
        cov_html = (
            f"<p>Coverage of the {100 * cov['nominal']:.0f}% intervals over head pixels of the evaluated "
            f"slices: uncalibrated {100 * cov['uncalibrated']:.1f}%, calibrated {cal}.</p>"
        )
    return (
        f"<h2>Uncertainty and hallucination audit</h2><p>{audit['samples']} posterior samples per slice "
        f"({html.escape(audit['sampler'])}); intervals: {html.escape(audit['intervals'])}. "
        "chi2 about 1 (0.5 to 2): the reconstruction explains the data down to the noise, below 0.5 it reproduces the noise; null_fraction: share of the "
        "image's energy the measurements cannot see (supplied by the prior); null_disagreement_fraction: share "
        "of the samples' disagreement in that null space. Maps: <code>std.nii.gz</code>, "
        "<code>interval_width.nii.gz</code>, <code>null_space.nii.gz</code>.</p>"
        f"{cov_html}<table><tr><th>mean over slices</th><th>value</th></tr>{rows}</table>"
    )


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


def _auto_section(auto: Sequence[dict[str, Any]] | None) -> str:
    """HTML table of the parameters chosen from the measurements, bound choices flagged."""
    if not auto:
        return ""
    rows = []
    for entry in auto:
        for name, choice in entry.items():
            if name == "slices":
                continue
            flag = "<b>at a search bound</b>" if choice["at_bound"] else "inside"
            rows.append(
                f"<tr><td>{entry['slices'][0]}-{entry['slices'][-1]}</td><td>{html.escape(name)}</td>"
                f"<td>{choice['value']:.4g}</td><td>{html.escape(choice['rule'])}</td><td>{flag}</td>"
                f"<td>{choice['sigma']:.4g}{' (estimated)' if choice['sigma_estimated'] else ''}</td></tr>"
            )
    return (
        "<h2>Parameters chosen from the measurements</h2><p>No ground truth involved; score curves in "
        "<code>figures/auto_parameters.png</code>. A choice at a search bound may lie outside it.</p>"
        "<table><tr><th>slices</th><th>parameter</th><th>value</th><th>rule</th><th>bounds</th>"
        f"<th>noise std</th></tr>{''.join(rows)}</table>"
    )


#: per-example diagnostics that flag a slice not to be trusted silently
_ALARMS = ("fallback", "out_of_range")


def _per_slice(value: Any, i: int) -> Any:
    """Example ``i``'s entry of a per-example list, or the batch's single value."""
    return value[i] if isinstance(value, list) and i < len(value) else value


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def _diagnostics_section(diagnostics: Sequence[dict[str, Any]] | None, doubts: Sequence[str] | None = None) -> str:
    """HTML table of the solver's diagnostics per slice (:class:`~deepinv_tunable.solvers.SolverDiagnostics`
    records of ``metrics.json``) and the list of doubts; slices that fell back to the baseline,
    lie outside the model's range or fit the data badly are in bold."""
    if not diagnostics:
        return ""
    params = sorted({n for e in diagnostics for n in e.get("parameters", {})})
    extra = sorted({n for e in diagnostics for n in e.get("per_example", {})})
    header = ["slice", "chi2", "data fit", "iterations", "converged", "NFE", *params, *extra]
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
            row = "".join(_cell(v) for v in values)
            rows.append(f'<tr style="font-weight:bold">{row}</tr>' if alarm else f"<tr>{row}</tr>")
    doubt_html = ""
    if doubts:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in doubts)
        doubt_html = f"<p><b>Reasons to doubt this run</b> (also in <code>metrics.json</code>):</p><ul>{items}</ul>"
    head = "".join(f"<th>{html.escape(n)}</th>" for n in header)
    return (
        "<h2>Solver diagnostics</h2><p>Per slice. chi2 is the reduced chi-square "
        "||A x - y||^2 / (m sigma^2) of the reconstruction: about 1 (0.5 to 2) explains the data down to the "
        "noise; below 0.5 it reproduces the noise; above 2 it leaves measured signal unexplained. Rows in "
        "bold are outside that band, fell back to the measurement baseline or lie outside the model's trained "
        f"range.</p>{doubt_html}<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def write_report(path: Path, record: dict[str, Any], figures: Sequence[Path]) -> Path:
    """Write a self-contained HTML summary (figures linked relatively) next to the metrics."""
    recipe = record["recipe"]
    tuning = record.get("tuning")
    tuning_html = ""
    if tuning:
        rows = "".join(f"<tr><td>{k}</td><td>{v:.2f}</td></tr>" for k, v in tuning["table"].items())
        tuning_html = (
            f"<h2>Tuning</h2><p>{html.escape(tuning['param'])} chosen by {tuning['metric']} on calibration "
            f"slices {tuning['calibration_slices']} (disjoint from the evaluation slices): "
            f"<b>{tuning['best']}</b></p><table><tr><th>value</th><th>mean {tuning['metric']}</th></tr>{rows}</table>"
        )
    figs = "".join(
        f'<figure><img src="{html.escape(str(p.relative_to(path.parent)))}" width="900"></figure>' for p in figures
    )
    body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(recipe["name"])}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}pre{{background:#f4f4f4;padding:1em}}</style>
</head><body>
<h1>{html.escape(recipe["name"])}</h1><p>{html.escape(recipe.get("description", ""))}</p>
<p>Input: <code>{html.escape(record["input"])}</code>; {len(record["slices"])} slices;
solver time {record["solver_seconds_per_slice"]:.3f} s/slice.</p>
<h2>Mean metrics (images scaled by the input's robust intensity range)</h2>{_table(record["mean"])}
{tuning_html}
{_auto_section(record.get("auto"))}
{_diagnostics_section(record.get("diagnostics"), record.get("doubts"))}
{_audit_section(record.get("audit"))}
<h2>Figures</h2>{figs}
<h2>Recipe</h2><pre>{html.escape(json.dumps(recipe, indent=2))}</pre>
<p>deepinv_tunable {html.escape(record["versions"]["deepinv_tunable"])}, torch {html.escape(record["versions"]["torch"])}</p>
</body></html>
"""
    return write_text_atomic(path, body)
