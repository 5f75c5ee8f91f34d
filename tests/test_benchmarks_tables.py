"""The docs' benchmark tables are what their committed results say: ``python -m benchmarks
tables`` (``benchmarks/collate.py``) regenerates each ``docs/*_table.rst`` from its result file in
``benchmarks/results`` with the study's own writer, and a table edited by hand, or results
changed without regenerating the table, is caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

collate = pytest.importorskip("benchmarks.collate")


def test_every_docs_table_is_generated_from_its_committed_results():
    assert collate.stale_tables() == []


def test_every_generated_table_is_included_by_the_docs():
    pages = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.rst"))
    for name in collate.DOCS_TABLES:
        assert f".. include:: {name}" in pages, name


def test_a_table_edited_by_hand_is_reported(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in collate.DOCS_TABLES:
        shutil.copy(ROOT / "docs" / name, docs / name)
    edited = docs / "reserved_table.rst"
    edited.write_text(edited.read_text(encoding="utf-8").replace("     - ", "     - 9", 1), encoding="utf-8")
    (docs / "tune_cost_table.rst").unlink()
    assert collate.stale_tables(docs_dir=docs) == ["reserved_table.rst", "tune_cost_table.rst"]
