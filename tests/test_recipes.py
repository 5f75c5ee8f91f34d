import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from deepinv_tunable.cli import main
from deepinv_tunable.recipes import RecipeError, load_recipe, parse_recipe, run_recipe
from deepinv_tunable.solvers.classical import TUNE_SEARCH

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe(out_dir, **changes):
    """4x MRI on 3 coronal slices of the bundled subject, resampled to 64x64; seconds to run."""
    recipe = {
        "name": "tiny",
        "data": {
            "input": "sample:itk_t1",
            "plane": "coronal",
            "spacing": 4.0,
            "size": [64, 64],
            "slices": {"start": 20, "stop": 40, "count": 3},
            "batch_size": 2,
        },
        "physics": {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01},
        "solver": {"name": "tv_pgd", "params": {"lambda_tv": 0.01, "max_iter": 30}},
        "output": {"dir": str(out_dir), "figures": 2},
    }
    for dotted, value in changes.items():
        node = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return recipe


def write_recipe(tmp_path, recipe):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_on_two_processes(tmp_path, recipe: dict, devices: int = 2, *options: str) -> dict:
    """``deepinv-tunable run --devices 2 --strategy ddp`` on 2 CPU processes (of one thread each;
    ``devices=1``: the same command in one process); its metrics.json."""
    import os
    import subprocess
    import sys

    path = write_recipe(tmp_path, recipe)
    cli = Path(sys.executable).with_name("deepinv-tunable")
    several = ["--devices", str(devices), "--strategy", "ddp", "--accelerator", "cpu"] if devices > 1 else []
    proc = subprocess.run(
        [str(cli), "run", str(path), *several, *options, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((Path(recipe["output"]["dir"]) / "metrics.json").read_text())


def test_shipped_recipes_validate():
    paths = sorted(p for p in (REPO / "recipes").glob("*.yaml") if not p.name.startswith("train_"))
    assert any(p.name == "demo_mri_brain.yaml" for p in paths)
    for path in paths:
        recipe = load_recipe(path)
        assert recipe.input_path().exists(), path


def test_run_writes_every_output_with_the_input_geometry(tmp_path):
    out = tmp_path / "out"
    result = run_recipe(parse_recipe(tiny_recipe(out)), progress=False)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["complete"] is True
    assert len(metrics["slices"]) == 3 and len(metrics["per_slice"]["solver"]["psnr"]) == 3
    assert metrics["mean"]["solver"]["psnr"] > metrics["mean"]["baseline"]["psnr"] + 0.5
    for name in ("reconstruction", "baseline", "reference"):
        img = nib.load(str(out / f"{name}.nii.gz"))
        assert img.shape == (64, 62, 64)  # canonical RAS grid: 4 mm in-plane, 62 coronal slices
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), [4.0, 3.0, 4.0])
    ref = nib.load(str(out / "reference.nii.gz")).get_fdata()
    assert ref.max() > 50  # written back in the input's intensity units (0..255 scale), not [0, 1]
    assert len(list((out / "figures").glob("*.png"))) == 2
    assert "tiny" in (out / "report.html").read_text()
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_auto_parameter_reaches_metrics_report_and_figure(tmp_path):
    out = tmp_path / "out"
    params = {"solver.params": {"lambda_tv": "auto", "max_iter": 10}}
    recipe = tiny_recipe(out, **params, **{"solver.auto_scope": "batch"})
    result = run_recipe(parse_recipe(recipe), progress=False)
    metrics = json.loads(result.metrics_path.read_text())
    assert [entry["slices"] for entry in metrics["auto"]] == [metrics["slices"][:2], metrics["slices"][2:]]
    choice = metrics["auto"][0]["lambda_tv"]
    assert choice["rule"] == "splitting" and len(choice["curve"]["values"]) == choice["n_solves"]
    # one search, and one more beyond an edge where the first ended at it (recorded)
    assert choice["n_solves"] in (sum(TUNE_SEARCH), 2 * sum(TUNE_SEARCH))
    assert bool(choice["resolved"]) == (choice["n_solves"] > sum(TUNE_SEARCH))
    assert (out / "figures" / "auto_parameters.png").is_file()
    assert "Parameters chosen from the measurements" in (out / "report.html").read_text()
    # TV's default scope, once per volume, reaches the figure and the report too
    once = run_recipe(parse_recipe(tiny_recipe(tmp_path / "once", **params)), progress=False)
    assert "auto" not in json.loads(once.metrics_path.read_text())
    assert (tmp_path / "once" / "figures" / "auto_parameters.png").is_file()
    assert "Parameters chosen from the measurements" in (tmp_path / "once" / "report.html").read_text()


def test_tuning_picks_from_grid_on_disjoint_slices(tmp_path):
    recipe = tiny_recipe(tmp_path / "out")
    recipe["solver"]["tune"] = {
        "param": "lambda_tv",
        "grid": [0.0001, 0.01],
        "slices": {"start": 5, "stop": 15, "count": 2},
    }
    result = run_recipe(parse_recipe(recipe), progress=False)
    tuning = json.loads(result.metrics_path.read_text())["tuning"]
    assert tuning["best"] == 0.01 and tuning["calibration_slices"] == [5, 10]
    recipe["solver"]["tune"]["slices"] = {"start": 20, "stop": 30, "count": 2}
    with pytest.raises(RecipeError, match=r"solver.tune.slices overlap the evaluation slices at \[20\]: tuning on"):
        run_recipe(parse_recipe(recipe), progress=False)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.slicez": 3}, r"data.slicez: unknown key"),
        ({"physics.accel": 4}, r"physics.mri.accel: unknown key"),
        ({"data.batch_size": "eight"}, r"data.batch_size: Input should be a valid integer.*\(got 'eight'\)"),
        ({"physics.kind": "xray"}, r"physics: Input tag 'xray' found using 'kind' does not match"),
        ({"solver.name": "magic"}, r"solver: Input tag 'magic' found using 'name' does not match"),
        ({"data.plane": "oblique"}, r"data.plane: Input should be 'axial', 'coronal' or 'sagittal'"),
        (
            {"solver.tune": {"param": "bogus", "grid": [1.0], "slices": {"count": 1}}},
            r"solver.tv_pgd: Value error, tune.param 'bogus' is not a tunable tv_pgd parameter; expected one of \['lambda_tv'",
        ),
    ],
)
def test_schema_errors_name_the_key(tmp_path, changes, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(tiny_recipe(tmp_path / "out", **changes))
    assert not (tmp_path / "out").exists()


def test_missing_section_and_yaml_errors(tmp_path):
    recipe = tiny_recipe(tmp_path / "out")
    del recipe["physics"]
    with pytest.raises(RecipeError, match=r"physics: Field required"):
        parse_recipe(recipe)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"data.input": "/no/such/brain.nii.gz"}, FileNotFoundError, r"volume file not found: '/no/such/brain.nii.gz'"),
        ({"data.input": "sample:nope"}, ValueError, r"unknown sample volume 'nope'"),
        (
            {"physics": {"kind": "ct", "n_views": 30}, "data.size": [64, 48]},
            RecipeError,
            r"CT \(deepinv Tomography\) needs square images, got 64x48",
        ),
        (
            {"data.slices": {"start": 50, "stop": 80}},
            RecipeError,
            r"data.slices: slice range \[50, 80\) is empty or outside \[0, 62\)",
        ),
    ],
)
def test_bad_inputs_leave_no_output(tmp_path, changes, error, message):
    out = tmp_path / "out"
    recipe = tiny_recipe(out)
    for key, value in changes.items():
        if "." in key:
            section, leaf = key.split(".")
            recipe[section][leaf] = value
        else:
            recipe[key] = value
    with pytest.raises(error, match=message):
        run_recipe(parse_recipe(recipe), progress=False)
    assert not out.exists()


def test_nan_volume_through_the_runner_leaves_no_output(tmp_path):
    data = np.ones((8, 8, 8), np.float32)
    data[0, 0, 0] = np.inf
    vol = tmp_path / "inf.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(vol))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"contains 0 NaN and 1 infinite values"):
        run_recipe(parse_recipe(tiny_recipe(out, **{"data.input": str(vol)})), progress=False)
    assert not out.exists()


def test_cli_end_to_end_and_overrides(tmp_path, capsys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "ignored"))
    out = tmp_path / "cli_out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "tv_pgd       PSNR" in printed
    assert not (tmp_path / "ignored").exists()
    # An override with a bad input: exit code 2, one clear message, nothing written.
    bad_out = tmp_path / "bad_out"
    assert main(["run", str(path), "--input", str(tmp_path / "x.mha"), "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err
    assert "error: volume file not found" in err and not bad_out.exists()


def test_cli_info_and_help(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "deepinv_tunable 0.1.0" in text and "mni152_t1" in text and "itk_t1" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "run" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_recipe_tv_beats_zero_filled_by_3db(tmp_path):
    result = run_recipe(
        load_recipe(REPO / "recipes" / "demo_mri_brain.yaml", {"output.dir": str(tmp_path)}), progress=False
    )
    gain = result.summary["solver"]["psnr"] - result.summary["baseline"]["psnr"]
    assert gain >= 3.0, f"TV gains only {gain:.2f} dB over zero-filled"


@pytest.mark.slow
def test_make_demo_recipe_learned_prior_beats_tv_with_calibrated_intervals(tmp_path):
    """`make demo`'s recipe (about 155 s): PnP-HVAE beats TV, both with parameters from the
    measurements, inside the head; the calibrated 90 % intervals cover about 90 % of it."""
    result = run_recipe(
        load_recipe(REPO / "recipes" / "demo_learned_prior.yaml", {"output.dir": str(tmp_path)}),
        progress=False,
        audit=True,
    )
    mean = result.summary
    assert mean["solver"]["psnr_fg"] >= mean["tv_pgd"]["psnr_fg"] + 1.0, mean
    assert mean["solver"]["ssim_fg"] > mean["tv_pgd"]["ssim_fg"], mean
    audit = json.loads(result.metrics_path.read_text())["audit"]["mean"]
    assert 0.8 <= audit["coverage_calibrated"] <= 0.97, audit


LATENT_RECIPES = sorted((REPO / "recipes").glob("latent_map_*.yaml"))


@pytest.mark.parametrize("path", LATENT_RECIPES, ids=[p.stem for p in LATENT_RECIPES])
def test_latent_map_recipes_run(tmp_path, path):
    """Each latent-prior recipe runs end to end (1 slice, 2 Adam steps, 2 candidate k)."""
    recipe = load_recipe(
        path,
        {
            "output.dir": str(tmp_path),
            "data.slices": {"start": 110, "stop": 130, "count": 1},
            "output.figures": 1,
            "output.volumes": False,
        },
    )
    recipe.solver.params.max_iter = 2
    if hasattr(recipe.solver.params, "k_grid"):  # latent_map_tv has a fixed k
        recipe.solver.params.k_grid = [64, 2048]
    if recipe.solver.tune is not None:
        recipe.solver.tune.grid = [64.0, 2048.0]
        recipe.solver.tune.slices.count = 1
    result = run_recipe(recipe, progress=False)
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["complete"] and len(metrics["per_slice"]["solver"]["psnr"]) == 1
    assert 5 < metrics["mean"]["solver"]["psnr"] < 60
    if recipe.solver.tune is not None:
        assert metrics["tuning"]["best"] in (64.0, 2048.0)


def test_public_api_is_importable_from_the_top_level():
    import deepinv_tunable as dt

    for name in dt.__all__:
        assert getattr(dt, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = dt.nope


@pytest.mark.parametrize("consistency", ["local_map", "adam_dc", "ldps"])
def test_tunable_ldm_recipe_runs_with_a_trained_unet_folder(tmp_path, consistency):
    from deepinv_tunable.nets import LatentUNet

    LatentUNet(latent_channels=8, latent_size=16, block_out_channels=(8, 16)).save_pretrained(tmp_path / "unet")
    recipe = load_recipe(
        REPO / "recipes" / "tunable_ldm_mri4x.yaml",
        {
            "output.dir": str(tmp_path / "out"),
            "data.slices": {"start": 110, "stop": 130, "count": 1},
            "output.figures": 0,
            "output.volumes": False,
        },
    )
    assert recipe.solver.params.unet == "tunable_ldm_f4c12_mri128" and recipe.solver.params.vae is None
    recipe.solver.params.unet, recipe.solver.params.vae = str(tmp_path / "unet"), "tunable_vae_mri128"
    recipe.solver.params.max_iter = 2
    recipe.solver.params.consistency = consistency
    result = run_recipe(recipe, progress=False)
    assert json.loads(result.metrics_path.read_text())["complete"] is True
    recipe.solver.params.unet = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"unknown pretrained model '.*missing'.*or give the path of a folder"):
        run_recipe(recipe, progress=False)


AUDIT_RECIPE = REPO / "recipes" / "audit_pnp_hvae_mri4x.yaml"


def test_audit_writes_maps_calibration_and_report(tmp_path):
    """``run_recipe(audit=True)``: std / interval-width / null-space volumes on the input grid,
    split-conformal calibration on disjoint slices, coverage and an audit section in the report."""
    recipe = load_recipe(AUDIT_RECIPE, {"output.dir": str(tmp_path), "output.figures": 1})
    recipe.data.slices.count = 2
    recipe.solver.params.max_iter = 3
    recipe.solver.tune.grid, recipe.solver.tune.slices.count = [0.7], 1
    recipe.audit.samples = recipe.audit.batch_size = 3
    recipe.audit.sampler_params.max_iter = 1
    recipe.audit.calibration.count = 2
    result = run_recipe(recipe, progress=False, audit=True)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit == json.loads(result.metrics_path.read_text())["audit"]
    assert audit["per_slice"]["slices"] == json.loads(result.metrics_path.read_text())["slices"]
    assert audit["intervals"].startswith("calibrated") and audit["calibration"]["q"] > 0
    assert audit["calibration"]["calibration_slices"] == [102, 121]
    assert 0 <= audit["coverage_head"]["uncalibrated"] <= 1 and 0 <= audit["coverage_head"]["calibrated"] <= 1
    assert 0 < audit["mean"]["null_fraction"] < 1 and audit["mean"]["chi2"] > 0
    assert json.loads((tmp_path / "calibration.json").read_text())["q"] == audit["calibration"]["q"]
    recon = nib.load(str(tmp_path / "reconstruction.nii.gz"))
    processed = np.zeros(recon.shape[2], dtype=bool)
    processed[audit["per_slice"]["slices"]] = True
    for name in ("std", "interval_width", "null_space"):
        img = nib.load(str(tmp_path / f"{name}.nii.gz"))
        assert img.shape == recon.shape
        np.testing.assert_allclose(img.affine, recon.affine)
        data = np.asarray(img.dataobj)
        assert (data[:, :, ~processed] == 0).all() and (data[:, :, processed] > 0).any()
    report = (tmp_path / "report.html").read_text()
    assert "hallucination audit" in report and "audit_slice_" in report


def test_audit_draws_samples_from_the_diffusion_pixel_prior(tmp_path):
    """``audit.sampler: pixel_dps``: posterior samples of deepinv's DPS with the shipped diffusion
    prior (from noise, no warm start), recorded with their parameters; two samples of one slice differ."""
    recipe = load_recipe(
        AUDIT_RECIPE,
        {
            "output.dir": str(tmp_path),
            "output.figures": 0,
            "audit.sampler": "pixel_dps",
            "audit.sampler_params": {"num_steps": 3},
        },
    )
    recipe.data.slices.count = 1
    recipe.solver.params.max_iter = 2
    recipe.solver.tune = None
    recipe.audit.samples = recipe.audit.batch_size = 2
    recipe.audit.calibration = None
    run_recipe(recipe, progress=False, audit=True)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["sampler"] == "pixel_dps"
    assert audit["sampler_params"] == {"denoiser": "drunet_edm_corpus", "num_steps": 3, "weight": 2.0}
    std = np.asarray(nib.load(str(tmp_path / "std.nii.gz")).dataobj)
    assert std.max() > 0


def test_audit_sampler_params_are_the_chosen_samplers(tmp_path):
    with pytest.raises(
        RecipeError, match=r"sampler_params of sampler 'pixel_dps'.*tau.*takes \['denoiser', 'num_steps', 'weight'\]"
    ):
        parse_recipe(tiny_recipe(tmp_path, **{"audit": {"sampler": "pixel_dps", "sampler_params": {"tau": 0.9}}}))
    recipe = parse_recipe(
        tiny_recipe(tmp_path, **{"audit": {"sampler": "pixel_dps", "sampler_params": {"weight": 1.0}}})
    )
    assert recipe.audit.sampler_params.weight == 1.0 and recipe.audit.sampler_params.num_steps == 100


def test_cli_audit_without_an_audit_section_uses_the_defaults(tmp_path, capsys):
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "ignored"))
    out = tmp_path / "audit_out"
    assert main(["audit", str(path), "--out", str(out), "--samples", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "audit     chi2" in printed and f"audit: {out / 'audit.json'}" in printed
    audit = json.loads((out / "audit.json").read_text())
    assert audit["samples"] == 2 and audit["intervals"].startswith("uncalibrated")
    assert audit["coverage_head"]["calibrated"] is None


def test_audit_refuses_overlapping_calibration_and_deterministic_solver_sampling(tmp_path):
    recipe = load_recipe(AUDIT_RECIPE, {"output.dir": str(tmp_path / "a")})
    recipe.audit.calibration = recipe.data.slices
    with pytest.raises(RecipeError, match="audit.calibration overlaps the evaluation slices"):
        run_recipe(recipe, progress=False, audit=True)
    assert not (tmp_path / "a").exists()
    with pytest.raises(RecipeError, match="'tv_pgd' is deterministic"):
        parse_recipe(tiny_recipe(tmp_path / "b", **{"audit": {"sampler": "solver"}}))
    with pytest.raises(RecipeError, match="either calibration"):
        parse_recipe(
            tiny_recipe(
                tmp_path / "c", **{"audit": {"calibration": {"start": 0, "stop": 5}, "calibration_file": "x.json"}}
            )
        )


#: recipes of iterative solvers, smoke-tested with few iterations (parameter name per solver)
SOLVER_RECIPES = (
    sorted((REPO / "recipes").glob("pnp_hvae_*.yaml"))
    + sorted((REPO / "recipes").glob("*flash_*.yaml"))
    + [
        REPO / "recipes" / f"{n}.yaml"
        for n in ("demo_mri_brain", "ct_brain_60views", "deblur_subject", "tv_multicoil_mri4x")
    ]
)
ITERATIONS = {
    "pnp_hvae": ("max_iter", 2),
    "tv_pgd": ("max_iter", 3),
    "flash_diffusion": ("max_iter", 4),
    "pixel_flash": ("max_iter", 4),
}


@pytest.mark.parametrize("path", SOLVER_RECIPES, ids=[p.stem for p in SOLVER_RECIPES])
def test_solver_recipes_run(tmp_path, path):
    """Each PnP-HVAE, Flash-Diffusion and TV recipe runs end to end (1 slice, 2-4 iterations or
    steps, a 2-value tuning grid)."""
    recipe = load_recipe(path, {"output.dir": str(tmp_path), "output.figures": 1, "output.volumes": False})
    recipe.data.slices.count = 1
    name, n = ITERATIONS[recipe.solver.name]
    setattr(recipe.solver.params, name, n)
    if recipe.solver.tune is not None:
        recipe.solver.tune.grid, recipe.solver.tune.slices.count = recipe.solver.tune.grid[:2], 1
    metrics = json.loads(run_recipe(recipe, progress=False).metrics_path.read_text())
    assert metrics["complete"] and len(metrics["per_slice"]["solver"]["psnr"]) == 1
    assert 5 < metrics["mean"]["solver"]["psnr"] < 60
    if recipe.solver.name in ("flash_diffusion", "pixel_flash"):  # severity, start, NFE, data fit reach the outputs
        diagnostics = metrics["diagnostics"][0]
        assert diagnostics["slices"] == metrics["slices"]
        assert {"sigma_hat", "start_step", "chi2_estimate", "fallback", "dc_weight"} <= set(diagnostics["per_example"])
        assert {"nfe", "chi2", "fit", "iterations"} <= set(diagnostics)
        assert "Solver diagnostics" in (tmp_path / "report.html").read_text()


def test_registry_and_schema_name_the_same_solvers():
    import typing

    from deepinv_tunable.recipes.registry import SOLVERS, stochastic_solvers
    from deepinv_tunable.recipes.schema import SolverConfig

    union = typing.get_args(SolverConfig)[0]
    recipe_names = {typing.get_args(cfg.model_fields["name"].annotation)[0] for cfg in typing.get_args(union)}
    # "baseline" is the runner's own reference row, not a recipe choice
    assert recipe_names == set(SOLVERS) - {"baseline"}
    assert stochastic_solvers() == ("flash_diffusion", "pixel_flash", "tunable_ldm")
    with pytest.raises(ValueError, match=r"unknown solver 'nope': expected one of \['baseline'"):
        from deepinv_tunable.recipes.registry import build_solver

        build_solver("nope")


def test_former_recipe_keys_still_work_with_a_warning(tmp_path):
    recipe = tiny_recipe(tmp_path / "out")
    recipe["solver"]["params"] = {"lambda_tv": 0.01, "n_iter": 7}
    before = json.dumps(recipe, sort_keys=True)
    with pytest.warns(FutureWarning, match="recipe key 'n_iter' is renamed 'max_iter'"):
        parsed = parse_recipe(recipe)
    assert parsed.solver.params.max_iter == 7
    assert json.dumps(recipe, sort_keys=True) == before  # the caller's mapping is not modified
    recipe["solver"]["params"]["max_iter"] = 9
    with pytest.raises(RecipeError, match="give 'max_iter' only: 'n_iter' is its former name"):
        parse_recipe(recipe)
