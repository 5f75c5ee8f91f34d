"""The docs' tables, generated from the committed results: one command for all of them.

A study writes its rows to a result file (``--out``); the results the docs show are kept in
``benchmarks/results/``, and each table the docs include (``docs/*_table.rst``) is generated
from one of them by the study's own ``rst`` writer, here and nowhere else::

    python -m benchmarks tables            # rewrite every docs table from benchmarks/results
    python -m benchmarks tables --check    # only say which tables differ from their results (exit 1)

``docs/benchmark_table.rst`` (the template-slab table of the ``table`` study) is not generated:
its rows were never kept, so it stays as it was measured (the docs say so).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepinv_tunable.utils.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"


@dataclass(frozen=True)
class DocsTable:
    """A docs table: the result file it shows and the study whose ``rst`` writes it."""

    results: str  # file name under benchmarks/results
    study: str  # module of this package with the writer
    rows_only: bool = False  # the writer takes ``record["rows"]``, not the whole record

    def render(self, results_dir: Path = RESULTS) -> str:
        record = json.loads((results_dir / self.results).read_text(encoding="utf-8"))
        writer: Callable[[Any], str] = importlib.import_module(f"{__package__}.{self.study}").rst
        return writer(record["rows"] if self.rows_only else record)


#: docs file (under docs/) -> how it is generated
DOCS_TABLES: dict[str, DocsTable] = {
    "reserved_table.rst": DocsTable("reserved_results.json", "run_reserved"),
    "ldm_reserved_table.rst": DocsTable("ldm_reserved_results.json", "run_reserved"),
    "diffusion_table.rst": DocsTable("diffusion_results.json", "run_reserved"),
    "flash_f4c12_table.rst": DocsTable("flash_f4c12_reserved_results.json", "run_reserved"),
    "autotune_table.rst": DocsTable("autotune_results.json", "run_autotune", rows_only=True),
    "flash_nfe_table.rst": DocsTable("flash_nfe_results.json", "run_flash_nfe"),
    "tune_cost_table.rst": DocsTable("tune_cost_results.json", "run_tune_cost", rows_only=True),
}


def stale_tables(docs_dir: Path = DOCS, results_dir: Path = RESULTS) -> list[str]:
    """The docs tables whose file differs from what their results generate."""
    return [
        name
        for name, table in DOCS_TABLES.items()
        if not (docs_dir / name).is_file() or (docs_dir / name).read_text(encoding="utf-8") != table.render(results_dir)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table differs")
    parser.add_argument("--only", nargs="+", choices=list(DOCS_TABLES), default=None, help="these tables only")


def run(args: argparse.Namespace) -> int:
    names = args.only or list(DOCS_TABLES)
    if args.check:
        stale = [name for name in stale_tables() if name in names]
        for name in stale:
            print(f"docs/{name} differs from benchmarks/results/{DOCS_TABLES[name].results}")
        return 1 if stale else 0
    for name in names:
        write_text_atomic(DOCS / name, DOCS_TABLES[name].render())
        print(f"docs/{name} <- benchmarks/results/{DOCS_TABLES[name].results}")
    return 0
