"""The GPU training script's recipe overrides resolve to the ``gpu`` preset (no training here)."""

import importlib.util
from pathlib import Path

import pytest

from deepinv_tunable.training.presets import PRESETS
from deepinv_tunable.training.run import load_train_recipe, resolve

SCRIPT = Path(__file__).parent.parent / "recipes" / "train_all_gpu.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_all_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_gets_the_gpu_presets_batch_epoch_and_budget(script, tmp_path):
    args = script.build_parser().parse_args(["--out", str(tmp_path), "--no-geometric-augmentation"])
    for key, name, minutes in script.PLAN:
        recipe = load_train_recipe(
            script.RECIPES / name, script.recipe_overrides(key, name, minutes, tmp_path, args, {})
        )
        module, data, trainer = resolve(recipe)
        gpu = PRESETS[recipe.model]["gpu"]
        assert recipe.preset == "gpu" and trainer.accelerator == "gpu", name
        assert data.batch_size == gpu["data"]["batch_size"], name
        assert data.samples_per_epoch == gpu["data"]["samples_per_epoch"], name
        assert data.geometric_augment is False, name
        assert trainer.max_time_minutes == minutes, name
        if key == "hvae":
            assert module["hvae"]["width"] == gpu["module"]["hvae"]["width"]


def test_hvae_keeps_the_augmentation_unless_told_and_takes_the_workers(script, tmp_path):
    args = script.build_parser().parse_args(["--out", str(tmp_path), "--only", "hvae", "--workers", "3"])
    overrides = script.recipe_overrides("hvae", "train_hvae_corpus.yaml", 6.5, tmp_path, args, {})
    _, data, trainer = resolve(load_train_recipe(script.RECIPES / "train_hvae_corpus.yaml", overrides))
    assert trainer.max_time_minutes == 6.5 and data.num_workers == 3 and data.geometric_augment is True
