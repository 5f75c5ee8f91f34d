"""The benchmark tables' writers: Markdown and reST tables of a run's rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _notes_text(notes: dict[str, Any]) -> str:
    if "lambda_tv" not in notes:
        return ""
    edge = ", grid edge" if notes.get("lambda_at_grid_edge") else ""
    return f"(lambda={notes['lambda_tv']:g}{edge})"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A reST ``list-table`` (for the docs) of ``header`` and string ``rows``."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [list(header)] + [list(r) for r in rows]:
        out.append("   * - " + cells[0])
        out += [f"     - {c}" for c in cells[1:]]
    return "\n".join(out) + "\n"


def markdown_table(record: dict[str, Any]) -> str:
    mem = (
        "peak memory (MiB, CUDA)"
        if record["device"].startswith("cuda")
        else "peak memory (MiB, process RSS high-water)"
    )
    header = ["method", "task", "data", "PSNR (dB)", "SSIM", "seconds/slice", mem]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 4) + "|"]
    for r in record["rows"]:
        method = f"{r['method']} {_notes_text(r['notes'])}".strip()
        cells = [
            method,
            r["task"],
            r["data"],
            f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}",
            f"{r['ssim']['mean']:.3f} ± {r['ssim']['std']:.3f}",
            _fmt(r["seconds_per_slice"], 3),
            _fmt(r["peak_memory_mib"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_gap_table(record: dict[str, Any]) -> str:
    """Default vs tuned TV weight per (task, data), when both rows were run."""
    rows = {(r["method"], r["task"], r["data"]): r for r in record["rows"]}
    lines = []
    for (method, task, data), tuned in rows.items():
        default = rows.get(("tv_pgd default", task, data))
        if method != "tv_pgd tuned" or default is None:
            continue
        gap = tuned["psnr"]["mean"] - default["psnr"]["mean"]
        lines.append(
            f"| {task} | {data} | {default['notes']['lambda_tv']:g} | {default['psnr']['mean']:.2f} | "
            f"{tuned['notes']['lambda_tv']:g}{' (edge)' if tuned['notes'].get('lambda_at_grid_edge') else ''} | "
            f"{tuned['psnr']['mean']:.2f} | {gap:+.2f} |"
        )
    if not lines:
        return ""
    head = (
        "| task | data | default lambda | PSNR default | tuned lambda | PSNR tuned | gain (dB) |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    return head + "\n" + "\n".join(lines)
