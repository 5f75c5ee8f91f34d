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


def test_resume_after_a_crash_keeps_finished_slices_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import deepinv_tunable.recipes.runner as runner

    recipe = tiny_recipe(tmp_path / "whole")  # 3 slices in batches of 2
    run_recipe(parse_recipe(recipe), progress=False)

    crashed = tiny_recipe(tmp_path / "crashed")
    real_metrics, calls = runner.image_metrics, []

    def crash_in_second_batch(est, x):
        calls.append(1)
        if len(calls) > 2:  # baseline and solver of the first batch went through
            raise KeyboardInterrupt("killed")
        return real_metrics(est, x)

    monkeypatch.setattr(runner, "image_metrics", crash_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(crashed), progress=False)
    monkeypatch.setattr(runner, "image_metrics", real_metrics)
    partial = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    assert partial["complete"] is False and len(partial["slices"]) == 2
    assert (tmp_path / "crashed" / ".partial" / "reconstruction.npy").is_file()

    solved = []
    real_reconstruct = runner.PreparedRun.reconstruct_batch

    def spy(self, solver, baseline, batch, *args, **kwargs):
        solved.append(list(batch))
        return real_reconstruct(self, solver, baseline, batch, *args, **kwargs)

    monkeypatch.setattr(runner.PreparedRun, "reconstruct_batch", spy)
    run_recipe(parse_recipe(crashed), progress=False, resume=True)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert solved == [whole["slices"][2:]]  # only the unfinished slice is computed again
    resumed = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    assert resumed["complete"] and resumed["per_slice"] == whole["per_slice"] and resumed["slices"] == whole["slices"]
    for name in ("reconstruction", "baseline", "reference"):
        a = np.asarray(nib.load(str(tmp_path / "whole" / f"{name}.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "crashed" / f"{name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "crashed" / ".partial").exists()
    # resuming a finished run does nothing; resuming with another recipe is refused
    assert run_recipe(parse_recipe(crashed), progress=False, resume=True).summary == resumed["mean"]
    with pytest.raises(RecipeError, match="different recipe"):
        run_recipe(
            parse_recipe(tiny_recipe(tmp_path / "crashed", **{"solver.params.lambda_tv": 0.02})),
            progress=False,
            resume=True,
        )


def test_cli_full_volume_processes_every_slice(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "vol", **{"solver": {"name": "pseudo_inverse"}, "output.figures": 0})
    path = write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--full-volume", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "vol" / "metrics.json").read_text())
    recon = np.asarray(nib.load(str(tmp_path / "vol" / "reconstruction.nii.gz")).dataobj)
    assert metrics["full_volume"] and metrics["slices"] == list(range(recon.shape[1]))  # coronal: axis 1
    assert (np.abs(recon).sum(axis=(0, 2)) > 0).all()  # every slice reconstructed (noise at least)


def test_two_process_run_writes_the_files_and_records_of_one(tmp_path):
    """``run --devices 2 --strategy ddp`` on 2 CPU processes runs the single-process loop: the ranks
    share out its batches, each slice appears exactly once, and the run writes the same files, the
    same volumes (bit for bit) and the same records (every batch's automatic choice, diagnostics
    and doubts, the input's doubts, the metrics), plus which rank did each slice."""
    changes = {
        "data.slices": {"start": 20, "stop": 40, "count": 5},  # 3 batches of 2: an uneven split
        "output.figures": 2,
        "solver.params": {"lambda_tv": "auto", "max_iter": 30},
        "solver.auto_scope": "batch",
    }
    metrics = run_on_two_processes(tmp_path, tiny_recipe(tmp_path / "ddp", **changes))
    owner = {int(k): r for k, r in metrics["distributed"]["rank_of_slice"].items()}
    # one process of one thread too: thread counts change float sums in the last bits
    single_metrics = run_on_two_processes(tmp_path, tiny_recipe(tmp_path / "single", **changes), devices=1)
    assert sorted(owner) == single_metrics["slices"] and set(owner.values()) == {0, 1}
    assert len(metrics["auto"]) == 3  # a choice per batch, as in one process

    def comparable(record):  # all but where it was written, which ranks, and wall-clock times
        if isinstance(record, list):
            return [comparable(v) for v in record]
        if not isinstance(record, dict):
            return record
        drop = ("distributed", "solver_seconds_per_slice", "seconds", "dir")
        return {k: comparable(v) for k, v in record.items() if k not in drop}

    assert comparable(metrics) == comparable(single_metrics)
    files = {p.relative_to(tmp_path / "single") for p in (tmp_path / "single").rglob("*")}
    assert {p.relative_to(tmp_path / "ddp") for p in (tmp_path / "ddp").rglob("*")} == files
    for name in ("reconstruction", "baseline", "reference"):
        a = np.asarray(nib.load(str(tmp_path / "ddp" / f"{name}.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "single" / f"{name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)


def test_two_processes_resume_a_single_process_run(tmp_path, interrupt_second_batch):
    """An interrupted run resumes on 2 processes: the finished batch is kept (rank 0's log of the
    first run), the two others are shared out, and the volumes are the uninterrupted run's."""
    changes = {"data.slices": {"start": 20, "stop": 40, "count": 5}, "output.figures": 0}
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(tiny_recipe(tmp_path / "resumed", **changes)), progress=False)
    interrupt_second_batch.undo()
    metrics = run_on_two_processes(tmp_path, tiny_recipe(tmp_path / "resumed", **changes), 2, "--resume")
    whole = run_recipe(parse_recipe(tiny_recipe(tmp_path / "whole", **changes)), progress=False)
    assert metrics["complete"] and metrics["slices"] == json.loads(whole.metrics_path.read_text())["slices"]
    assert metrics["distributed"]["rank_of_slice"] == {"20": 0, "24": 0, "28": 0, "32": 0, "36": 1}
    for name in ("reconstruction", "baseline"):
        a = np.asarray(nib.load(str(tmp_path / "resumed" / f"{name}.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "whole" / f"{name}.nii.gz")).dataobj)
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())  # one thread against several


def test_auto_scope_volume_chooses_once_on_spread_slices_and_fixes_the_parameter(tmp_path):
    """``solver.auto_scope: volume``: the measurement-only choice is made once, on slices spread
    through the evaluated ones, and every batch then reconstructs with that value (no per-batch
    choice); the per-batch scope chooses in every batch, and TV and PnP-HVAE choose once per volume
    by default."""
    changes = {
        "data.slices": {"start": 20, "stop": 40, "count": 5},
        "output.figures": 0,
        "solver.params": {"lambda_tv": "auto", "max_iter": 20},
    }
    per_batch = run_recipe(
        parse_recipe(tiny_recipe(tmp_path / "batch", **changes, **{"solver.auto_scope": "batch"})), progress=False
    )
    once = run_recipe(
        parse_recipe(tiny_recipe(tmp_path / "volume", **changes, **{"solver.auto_scope": "volume"})), progress=False
    )
    batch_record = json.loads(per_batch.metrics_path.read_text())
    volume_record = json.loads(once.metrics_path.read_text())
    slices = volume_record["slices"]
    assert [len(entry["slices"]) for entry in batch_record["auto"]] == [2, 2, 1]  # a choice per batch
    chosen = volume_record["auto_once"]
    assert chosen["slices"] == [slices[0], slices[2], slices[4]]  # spread: first, middle, last
    assert "auto" not in volume_record  # every batch used the one value
    value = chosen["lambda_tv"]["value"]
    assert all(d["parameters"]["lambda_tv"] == value for d in volume_record["diagnostics"])
    default = parse_recipe(tiny_recipe(tmp_path / "default", **changes))
    assert default.solver.auto_scope == "volume"
    assert parse_recipe(tiny_recipe(tmp_path / "d", **{"solver": {"name": "dpir"}})).solver.auto_scope == "batch"


def test_gather_refuses_missing_and_duplicated_slices(tmp_path):
    from deepinv_tunable.recipes.partial import PARTIAL_DIR, ShardLog, read_shard_logs

    (tmp_path / PARTIAL_DIR).mkdir()
    ShardLog(tmp_path, 0).append({"slices": [1, 3], "rank": 0})
    ShardLog(tmp_path, 1).append({"slices": [2], "rank": 1})
    assert [entry["slices"] for entry in read_shard_logs(tmp_path, [1, 2, 3])] == [[1, 3], [2]]
    with pytest.raises(RuntimeError, match=r"missing slices \[4\]"):
        read_shard_logs(tmp_path, [1, 2, 3, 4])
    ShardLog(tmp_path, 1, resume=True).append({"slices": [3], "rank": 1})
    with pytest.raises(RuntimeError, match=r"slice 3 was reconstructed twice \(ranks 0 and 1\)"):
        read_shard_logs(tmp_path, [1, 2, 3])


@pytest.mark.slow
def test_sigkill_midway_then_resume_gives_identical_volumes(tmp_path):
    """A real kill (SIGKILL, no cleanup) of ``deepinv-tunable run`` after its first batch, then
    ``--resume``: the volumes equal those of an uninterrupted run, bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    changes = {"data.slices": {"start": 10, "stop": 50, "count": 8}, "solver.params.max_iter": 400, "output.figures": 0}
    exe, env = str(Path(sys.executable).with_name("deepinv-tunable")), {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted run in the same conditions (a process, same thread count)
    (tmp_path / "w").mkdir()
    whole_path = write_recipe(tmp_path / "w", tiny_recipe(tmp_path / "whole", **changes))
    assert subprocess.run([exe, "run", str(whole_path), "--quiet"], env=env, capture_output=True).returncode == 0
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "killed", **changes))
    cli = [exe, "run", str(path), "--quiet"]
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and json.loads(metrics.read_text()).get("slices")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads(metrics.read_text())["slices"])
    assert 0 < done < 8, f"killed after {done} of 8 slices"
    assert subprocess.run([*cli, "--resume"], env=env, capture_output=True).returncode == 0
    resumed = json.loads(metrics.read_text())
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert resumed["complete"] and resumed["per_slice"] == whole["per_slice"]
    for name in ("reconstruction", "baseline"):
        np.testing.assert_array_equal(
            np.asarray(nib.load(str(tmp_path / "whole" / f"{name}.nii.gz")).dataobj),
            np.asarray(nib.load(str(tmp_path / "killed" / f"{name}.nii.gz")).dataobj),
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


def test_compared_solvers_share_the_measurements_and_appear_in_table_figures_and_report(tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    compare = [{"name": "tv_pgd", "params": {"lambda_tv": 1.0, "max_iter": 30}}, {"name": "tv_pgd"}]
    result = run_recipe(parse_recipe(tiny_recipe(out, **{"output.compare": compare})), progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    mean = metrics["mean"]
    assert set(mean) == {"baseline", "solver", "tv_pgd", "tv_pgd_1"}
    # the second TV chose lambda from the measurements: its choice is recorded per batch
    assert [sorted(entry) for entry in metrics["auto"]] == [["slices", "tv_pgd_1.lambda_tv"]] * 2
    assert metrics["auto"][0]["tv_pgd_1.lambda_tv"]["value"] > 0
    # over-regularised TV on the same measurements: a flat image, far below the tuned solver
    assert mean["tv_pgd"]["psnr"] < mean["solver"]["psnr"] - 1
    slice_figures = sorted((out / "figures").glob("slice_*.png"))
    assert len(slice_figures) == 2
    width = Image.open(slice_figures[0]).size[0]
    assert width == 18 * 80  # six panels of 3 inches at 80 dpi: reference, baseline, 2 x TV, solver, error
    html = result.report_path.read_text()
    assert "<td>tv_pgd (solver)</td>" in html and "<td>tv_pgd</td>" in html and "<td>tv_pgd_1.lambda_tv</td>" in html


def test_warm_start_runs_chains_from_the_previous_slice_and_resumes_identically(tmp_path, monkeypatch):
    """``solver.warm_start``: the first batch starts from the measurements, every later slice from
    the reconstruction of the slice before it in its chain; with ``tol`` those stop early. The
    record lists the slices in order, and a run interrupted after its first batch resumes to the
    uninterrupted run's volumes, bit for bit (the starts are read back from the finished slices)."""
    import deepinv_tunable.recipes.runner as runner

    changes = {
        "data.slices": {"start": 20, "stop": 40, "count": 6},
        "output.figures": 0,
        "solver.params": {"lambda_tv": 0.01, "max_iter": 80, "tol": 1e-3},
        "solver.warm_start": True,
    }
    whole = run_recipe(parse_recipe(tiny_recipe(tmp_path / "whole", **changes)), progress=False)
    record = json.loads(whole.metrics_path.read_text())
    chains = [[20, 23, 26], [30, 33, 36]]  # 6 evaluation slices, batches of 2: two chains of 3
    assert record["slices"] == sorted(sum(chains, []))
    assert [d["slices"] for d in record["diagnostics"]] == [list(b) for b in zip(*chains)]
    first, *later = [d["iterations"] for d in record["diagnostics"]]
    assert all(n < first for n in later), (first, later)

    starts = []
    real_reconstruct = runner.PreparedRun.reconstruct_batch

    def crash_after_first_batch(self, solver, baseline, batch, compare=None, start_images=None):
        starts.append(start_images)
        if len(starts) > 1:
            raise KeyboardInterrupt("killed")
        return real_reconstruct(self, solver, baseline, batch, compare, start_images)

    monkeypatch.setattr(runner.PreparedRun, "reconstruct_batch", crash_after_first_batch)
    crashed = parse_recipe(tiny_recipe(tmp_path / "crashed", **changes))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(crashed, progress=False)
    assert starts[0] is None and starts[1].shape[0] == 2  # cold first batch, then the chains' previous slices
    monkeypatch.setattr(runner.PreparedRun, "reconstruct_batch", real_reconstruct)
    run_recipe(crashed, progress=False, resume=True)
    for name in ("reconstruction", "baseline"):
        a = np.asarray(nib.load(str(tmp_path / "whole" / f"{name}.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(tmp_path / "crashed" / f"{name}.nii.gz")).dataobj)
        np.testing.assert_array_equal(a, b)


def test_warm_start_is_refused_where_it_cannot_apply(tmp_path):
    dpir = {"solver": {"name": "dpir", "params": {"sigma": 0.01, "max_iter": 4}, "warm_start": True}}
    with pytest.raises(RecipeError, match="solver.warm_start: 'dpir'.*takes no x_init"):
        run_recipe(parse_recipe(tiny_recipe(tmp_path / "dpir", **dpir)), progress=False)
    assert not (tmp_path / "dpir").exists()  # refused before any output
    with pytest.raises(ValueError, match="warm_start and params.through_slices"):
        parse_recipe(tiny_recipe(tmp_path / "tv", **{"solver.warm_start": True, "solver.params.through_slices": True}))


def test_two_process_warm_start_runs_each_shard_as_its_own_chains(tmp_path):
    """``--devices 2`` with ``solver.warm_start``: each rank takes a contiguous half of the slices and
    starts its first batch cold; every slice is done exactly once and the records stay in order."""
    changes = {
        "data.slices": {"start": 20, "stop": 40, "count": 6},
        "output.figures": 0,
        "solver.params": {"lambda_tv": 0.01, "max_iter": 80, "tol": 1e-3},
        "solver.warm_start": True,
    }
    metrics = run_on_two_processes(tmp_path, tiny_recipe(tmp_path / "ddp", **changes))
    owner = {int(k): r for k, r in metrics["distributed"]["rank_of_slice"].items()}
    assert metrics["slices"] == [20, 23, 26, 30, 33, 36]
    assert owner == {20: 0, 23: 0, 26: 0, 30: 1, 33: 1, 36: 1}  # contiguous halves
    batches = sorted(d["slices"] for d in metrics["diagnostics"])
    assert batches == [[20, 26], [23], [30, 36], [33]]  # each half in two chains: 20-23 and 26, ...
    iterations = {tuple(d["slices"]): d["iterations"] for d in metrics["diagnostics"]}
    assert iterations[(23,)] < iterations[(20, 26)] and iterations[(33,)] < iterations[(30, 36)]
