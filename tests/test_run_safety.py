"""A run never destroys data: outputs cannot overwrite the input, a resume continues only the
same input, NaN results are never marked complete, a full disk is an I/O error (exit 3)."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import torch
from test_recipes import tiny_recipe, write_recipe

import deepinv_tunable.recipes.partial as partial
import deepinv_tunable.recipes.runner as runner
from deepinv_tunable.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_IO, main
from deepinv_tunable.data import sample_path


def test_an_input_inside_the_output_folder_is_refused_and_kept(tmp_path, capsys):
    volume = tmp_path / "reference.nii.gz"  # the name of one of the run's outputs
    shutil.copy(sample_path("itk_t1"), volume)
    before = volume.read_bytes()
    path = write_recipe(tmp_path / "..", tiny_recipe(tmp_path / "unused"))
    code = main(["run", str(path), "--input", str(volume), "--out", str(tmp_path), "--quiet"])
    assert code == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{tmp_path} contains the input {volume}" in line
    assert volume.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["reference.nii.gz"]


def test_resume_refuses_an_input_whose_content_changed(tmp_path, capsys, interrupt_second_batch):
    data = tmp_path / "data"
    data.mkdir()
    volume = data / "head.nii.gz"
    shutil.copy(sample_path("itk_t1"), volume)
    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_recipe(out, **{"data.input": str(volume)}))
    assert main(["run", str(path), "--quiet"]) == EXIT_INTERRUPTED
    interrupt_second_batch.undo()
    import nibabel as nib

    img = nib.load(volume)  # same path, another volume: the finished slices would mix two heads
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), volume)
    capsys.readouterr()
    assert main(["run", str(path), "--resume", "--quiet"]) == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not the file the interrupted run read" in line and "start afresh" in line


def test_interrupted_full_volume_run_prints_a_resume_command_that_works(tmp_path, capsys, interrupt_second_batch):
    out = tmp_path / "out"
    recipe = tiny_recipe(out, **{"solver": {"name": "pseudo_inverse"}, "output.figures": 0, "data.batch_size": 8})
    path = write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--full-volume", "--quiet"]) == EXIT_INTERRUPTED
    command = capsys.readouterr().err.strip().splitlines()[-1].split()
    assert "--full-volume" in command
    interrupt_second_batch.undo()
    # without the flag, the message says which flag to add (it used to advise dropping --resume)
    assert main(["run", str(path), "--resume", "--quiet"]) == EXIT_BAD_INPUT
    assert "add --full-volume to continue it" in capsys.readouterr().err
    assert main(command[1:] + ["--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["complete"] is True


def test_a_solver_returning_nan_stops_the_run_incomplete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    path = write_recipe(tmp_path, tiny_recipe(out))
    real = runner.PreparedRun.solve

    def nan_on_second_batch(self, solver, y, indices, x_init=None):
        x, image, diagnostics = real(self, solver, y, indices, x_init)
        return (x, image * float("nan"), diagnostics) if indices[0] != self.eval_idx[0] else (x, image, diagnostics)

    monkeypatch.setattr(runner.PreparedRun, "solve", nan_on_second_batch)
    assert main(["run", str(path), "--quiet"]) == EXIT_FAILED
    assert "returned non-finite values (NaN or inf) on slices" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is False and len(metrics["slices"]) == 2
    assert not (out / "reconstruction.nii.gz").exists()


def test_a_full_disk_is_an_io_error_not_a_bus_error(tmp_path, capsys, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(partial.os, "posix_fallocate", no_space)
    path = write_recipe(tmp_path, tiny_recipe(tmp_path / "out"))
    assert main(["run", str(path), "--quiet"]) == EXIT_IO
    assert "No space left on device" in capsys.readouterr().err


def test_partial_stacks_reserve_their_blocks(tmp_path):
    stacks = partial.PartialStacks(tmp_path, ("reconstruction",), (64, 128, 128))
    stacks.write([0], {"reconstruction": torch.zeros(1, 1, 128, 128)})
    file = tmp_path / ".partial" / "reconstruction.npy"
    # allocated, not sparse: the file's blocks cover its length
    assert file.stat().st_blocks * 512 >= file.stat().st_size


def _volume(path, data, affine, geometry=True):
    import nibabel as nib

    if geometry:
        img = nib.Nifti1Image(data.astype(np.float32), affine)
    else:  # no affine: nibabel writes qform and sform codes 0, the voxel size in pixdim only
        img = nib.Nifti1Image(data.astype(np.float32), None)
        img.header.set_zooms(tuple(np.diag(affine)[:3]))
    nib.save(img, path)
    return path


def _doubts(tmp_path, capsys, volume, **changes):
    out = tmp_path / "out"
    recipe = tiny_recipe(
        out, **{"data.input": str(volume), "data.slices": {"start": 20, "stop": 28, "count": 2}, **changes}
    )
    path = write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--quiet"]) == 0
    assert "warning: input: " in capsys.readouterr().err  # one line on the console too
    return [d for d in json.loads((out / "metrics.json").read_text()).get("doubts", []) if d.startswith("input: ")]


def test_ct_in_hounsfield_units_through_an_mri_recipe_is_flagged(tmp_path, capsys):
    data = np.full((48, 48, 48), -1024.0)
    data[12:36, 12:36, 12:36] = 40.0
    volume = _volume(tmp_path / "ct.nii.gz", data, np.diag([4.0, 4.0, 4.0, 1.0]))
    doubts = _doubts(tmp_path, capsys, volume)
    assert len(doubts) == 1 and "looks like CT in Hounsfield units" in doubts[0] and "simulates mri" in doubts[0]


def test_thick_slices_resampled_several_times_in_plane_are_flagged(tmp_path, capsys):
    data = np.zeros((48, 48, 48))
    data[12:36, 12:36, 12:36] = 1.0
    volume = _volume(tmp_path / "aniso.nii.gz", data, np.diag([0.5, 4.0, 6.0, 1.0]))
    (doubt,) = _doubts(tmp_path, capsys, volume)  # coronal slices: R (0.5 mm) and S (6 mm) in-plane, to 4 mm
    assert "in-plane resampling by 8.0x" in doubt and "data.spacing to null" in doubt


def test_a_nifti_without_geometry_is_flagged(tmp_path, capsys):
    data = np.zeros((48, 48, 48))
    data[12:36, 12:36, 12:36] = 1.0
    volume = _volume(tmp_path / "nogeo.nii.gz", data, np.diag([4.0, 4.0, 4.0, 1.0]), geometry=False)
    doubts = _doubts(tmp_path, capsys, volume)
    assert any("states no geometry (qform and sform codes 0)" in d for d in doubts)
