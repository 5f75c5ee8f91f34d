"""What a user of the installed package gets: the core (denoisers, solvers) works without the
optional extras, a missing extra is named, recipes run by name, and the wheel carries its data."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what the extras install: the core must not need any of them
EXTRAS_MODULES = ("torchio", "nibabel", "jinja2", "diffusers", "lightning", "pydicom")


def run_without_extras(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing an extra's module fails."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in EXTRAS_MODULES)
    return subprocess.run(
        [sys.executable, "-c", block + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_the_core_runs_without_any_extra():
    out = run_without_extras(
        """
        import torch
        from deepinv_tunable.physics import build_physics, to_physics_domain
        from deepinv_tunable.priors import DnCNNDenoiser, HVAEDenoiser
        from deepinv_tunable.solvers import DPIR, TVPGD, PnPHVAE
        from deepinv_tunable import pretrained

        physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (32, 32))
        x = torch.zeros(1, 1, 32, 32); x[..., 8:24, 8:24] = 0.7
        y = physics(to_physics_domain(x, physics))
        DPIR(sigma=0.01, denoiser=DnCNNDenoiser.from_pretrained(), max_iter=4)(y, physics)
        TVPGD(lambda_tv=0.01, max_iter=5)(y, physics)
        PnPHVAE(pretrained.load("hvae_mri64"))
        print("core ok")
        """
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "core ok" in out.stdout


def test_a_command_that_needs_an_extra_names_it():
    out = run_without_extras(
        """
        import sys
        from deepinv_tunable.cli import main
        sys.exit(main(["run", "demo_mri_brain", "--out", "unused-out", "--quiet"]))
        """
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "which is not installed: pip install 'deepinv_tunable[recipes]'" in out.stderr


def test_recipes_run_by_name_and_unknown_names_list_the_shipped_ones():
    from deepinv_tunable.recipes.files import resolve_recipe, shipped_recipes

    assert "demo_learned_prior" in shipped_recipes()
    assert (
        resolve_recipe("demo_learned_prior").read_text() == (REPO / "recipes" / "demo_learned_prior.yaml").read_text()
    )
    with pytest.raises(FileNotFoundError, match="neither a file nor one of the shipped recipes: .*demo_learned_prior"):
        resolve_recipe("no_such_recipe")


@pytest.mark.slow
def test_the_built_wheel_carries_recipes_weights_templates_and_types(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(REPO),
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "deepinv_tunable/recipes/library/demo_learned_prior.yaml" in names
    assert "deepinv_tunable/py.typed" in names and "deepinv_tunable/templates/report.html.j2" in names
    assert "deepinv_tunable/pretrained/hvae_mri64/model.safetensors" in names
    assert not [n for n in names if n.startswith("deepinv_tunable/recipes/library/") and n.endswith(".py")]
