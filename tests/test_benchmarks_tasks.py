"""The benchmark harness's task table (``benchmarks/tasks.py``) and its size limits: every study's
tasks come from one table, a task name means one setting, each study keeps the setting it has
always run under its row label, no benchmark module or function outgrows the limits, and the
network-pass counter the volume studies report counts what it says.

Reads only ``benchmarks/tasks.py`` and the sources (no study is imported: they load priors).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

tasks = pytest.importorskip("benchmarks.tasks")

SELECTIONS = {
    "BUNDLED_TASKS": tasks.BUNDLED_TASKS,
    "PNP_HVAE_TASKS": tasks.PNP_HVAE_TASKS,
    "TUNABLE_TASKS": tasks.TUNABLE_TASKS,
    "LDM_TASKS": tasks.LDM_TASKS,
    "RESERVED_TASKS": tasks.RESERVED_TASKS,
}


def test_a_task_name_means_one_setting():
    configs = [tuple(sorted(c.items())) for c in tasks.TASKS.values()]
    assert len(set(configs)) == len(configs), "two task names with the same physics"


@pytest.mark.parametrize("name", SELECTIONS)
def test_every_selection_is_drawn_from_the_table(name):
    for label, config in SELECTIONS[name].items():
        same = [task for task, c in tasks.TASKS.items() if c == config]
        assert same, f"{name}[{label!r}] is not an entry of tasks.TASKS"
        assert label in tasks.TASKS or label == "deblur", f"{name}: label {label!r} names no task"
        if label in tasks.TASKS:
            assert same == [label], f"{name}[{label!r}] has the setting of {same}"
        assert config is not tasks.TASKS[same[0]], "a selection must hold copies"


def test_each_study_keeps_its_deblur_setting():
    # the bundled volumes always ran std 1.5 px, the reserved subjects std 2 px, both as "deblur"
    assert tasks.TASKS["deblur1.5"] == {"kind": "blur", "blur_sigma": 1.5, "noise_sigma": 0.01}
    assert tasks.TASKS["deblur2.0"] == {"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}
    assert tasks.BUNDLED_TASKS["deblur"] == tasks.TASKS["deblur1.5"]
    assert tasks.PNP_HVAE_TASKS["deblur"] == tasks.TASKS["deblur1.5"]
    assert tasks.RESERVED_TASKS["deblur"] == tasks.TASKS["deblur2.0"]


def test_study_label_lists_name_tasks_of_their_selection():
    assert set(tasks.TABLE_TASKS) <= set(tasks.BUNDLED_TASKS)
    for modality, labels in tasks.RESERVED_TASKS_OF.items():
        assert set(labels) <= set(tasks.RESERVED_TASKS), modality
    assert {t for labels in tasks.RESERVED_TASKS_OF.values() for t in labels} == set(tasks.RESERVED_TASKS)


def test_a_label_given_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        tasks.study_tasks("mri4x", ("mri4x", "mri8x"))


def _sources() -> list[Path]:
    return sorted(BENCHMARKS.glob("*.py"))


def test_no_study_declares_its_own_task_table():
    bad = []
    for path in _sources():
        if path.name == "tasks.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            value = getattr(node, "value", None)
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if any(n.endswith("TASKS") for n in names) and isinstance(value, ast.Dict | ast.DictComp | ast.Tuple):
                bad.append(f"{path.name}:{node.lineno}: {names}")
    assert not bad, "task tables outside benchmarks/tasks.py:\n" + "\n".join(bad)


def test_benchmark_modules_and_functions_stay_small():
    bad = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 500:
            bad.append(f"{path.name}: {len(text.splitlines())} lines (limit 500)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 120:
                bad.append(
                    f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines (limit 120)"
                )
    assert not bad, "\n".join(bad)


def test_network_pass_counter_counts_slices_through_the_outermost_network_once():
    import deepinv as dinv
    import torch

    from benchmarks.evaluation import NetworkPasses
    from deepinv_tunable.nets import HVAE

    class Inner(dinv.models.Denoiser):
        def forward(self, x, sigma=None, **kwargs):
            return x

    class Wrapper(dinv.models.Denoiser):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x, sigma=None, **kwargs):
            return self.inner(x, sigma)

    hvae = HVAE(width=8, z_channels=2, groups_per_scale=(1, 1), image_size=(16, 16))
    with NetworkPasses() as passes:
        Wrapper()(torch.zeros(3, 1, 8, 8), 0.1)  # 3 slices through a wrapper and its network: 3
        Wrapper()(torch.zeros(2, 1, 8, 8), 0.1)
        with torch.no_grad():
            hvae.reconstruct(torch.rand(4, 1, 16, 16), 1.0)
    assert (passes.denoiser, passes.hvae) == (5, 4)
    Wrapper()(torch.zeros(3, 1, 8, 8), 0.1)  # not counted once the context has closed
    assert passes.denoiser == 5 and HVAE.reconstruct.__name__ == "reconstruct"
