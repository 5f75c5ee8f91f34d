"""Recipe runs over time and processes: resume after a crash or a kill, several processes writing
the files and records of one, one parameter chosen per volume, warm starts along the volume,
solvers compared on the same measurements
(recipes on the bundled subject, seconds each; helpers from ``test_recipes``)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_recipes import run_on_two_processes, tiny_recipe, write_recipe

from deepinv_tunable.cli import main
from deepinv_tunable.recipes import RecipeError, parse_recipe, run_recipe


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
