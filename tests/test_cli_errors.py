"""Every bad path, permission, interrupt and recipe value gets one clear line and an exit code,
with nothing half-written."""

import json

import pytest
import yaml
from test_recipes import tiny_recipe, write_recipe

import deepinv_tunable.recipes.output as output
from deepinv_tunable.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


def test_out_pointing_at_a_file_is_refused_and_left_alone(tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "unused"))
    assert main(["run", str(path), "--out", str(target), "--quiet"]) == EXIT_BAD_INPUT
    assert _err_line(capsys) == f"error: output.dir: {target} is a file; expected a folder (created if missing)"
    assert target.read_text() == "keep me"


def test_out_below_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "unused"))
    assert main(["run", str(path), "--out", str(tmp_path / "file" / "sub"), "--quiet"]) == EXIT_BAD_INPUT
    assert "is a file, not a folder" in _err_line(capsys)


def test_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    # the suite may run as root, for whom nothing is read-only: ask os.access to say no for this folder
    real_access = output.os.access
    monkeypatch.setattr(output.os, "access", lambda p, mode: False if str(p) == str(out) else real_access(p, mode))
    path = write_recipe(tmp_path, tiny_recipe(out / "new"))
    assert main(["run", str(path), "--quiet"]) == EXIT_BAD_INPUT
    line = _err_line(capsys)
    assert f"cannot write to {out} (permission denied)" in line and "needed to create" in line
    assert list(out.iterdir()) == []


def test_bad_recipe_value_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    recipe = tiny_recipe(out, **{"physics.acceleration": -2})
    path = write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--quiet"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: invalid recipe") and "acceleration" in err
    assert not out.exists()


def test_missing_input_is_named(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_recipe(out))
    assert main(["run", str(path), "--input", str(tmp_path / "nope.nii.gz"), "--quiet"]) == EXIT_BAD_INPUT
    assert "nope.nii.gz" in _err_line(capsys) and not out.exists()


def test_ctrl_c_prints_the_resume_command_that_finishes_the_run(tmp_path, capsys, interrupt_second_batch):
    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_recipe(out))  # 3 slices, batches of 2
    assert main(["run", str(path), "--quiet"]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert f"interrupted: 2 slices finished and kept in {out}" in err
    command = err.strip().splitlines()[-1].split()
    assert command[:2] == ["deepinv-tunable", "run"] and command[-1] == "--resume"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is False  # what was written is whole: finished slices only
    interrupt_second_batch.undo()
    assert main(command[1:] + ["--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["complete"] is True


def test_train_recipe_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "model": "nonexistent"}))
    assert main(["train", str(path), "--quiet"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid recipe '{path}' (training recipe):")
    assert "  model: Input should be 'tunable_vae'" in err and "(got 'nonexistent')" in err
    assert "pydantic.dev" not in err  # one line per problem, no library boilerplate


@pytest.mark.parametrize("argv", [["run"], ["run", "r.yaml", "--device", "tpu"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_slices_axis_and_volume_index_reach_the_recipe(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    from deepinv_tunable.cli import build_parser, slice_range
    from deepinv_tunable.data import load_volume, sample_path

    assert slice_range("10:40:3") == {"start": 10, "stop": 40, "count": 3}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "r.yaml", "--slices", "10-40"])
    assert "expected START:STOP or START:STOP:COUNT" in capsys.readouterr().err
    # a 4D file made of the bundled subject twice; the run picks volume 1 and 2 axial slices
    vol = load_volume(sample_path("itk_t1"))
    four_d = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([vol.data.numpy()] * 2, -1), vol.affine), str(four_d))
    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_recipe(out))
    argv = ["run", str(path), "--input", str(four_d), "--quiet", "--axis", "axial", "--slices", "20:40:2"]
    assert main(argv) == EXIT_BAD_INPUT
    assert "--volume-index" in _err_line(capsys)
    assert main([*argv, "--volume-index", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["data"]["plane"] == "axial" and metrics["recipe"]["data"]["volume_index"] == 1
    assert len(metrics["slices"]) == 2 and all(20 <= i < 40 for i in metrics["slices"])


def test_cli_warnings_are_one_line_without_source_location(tmp_path, capsys, monkeypatch):
    import warnings

    from deepinv_tunable import cli

    def noisy(args):
        warnings.warn("tau chosen at the search bound", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "_series", noisy)
    assert cli.main(["series", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "warning: tau chosen at the search bound\n"
    assert warnings.showwarning is not cli._one_line_warning  # restored for the caller
