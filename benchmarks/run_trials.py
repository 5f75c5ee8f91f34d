"""The new-user trials of issue 49, re-run: each trial (bad input, out-of-domain input, API
misuse, fault) is a test of the suite that plays it and asserts the handled outcome; this script
runs them and prints one row per trial with its category, the outcome the test asserts, and
whether it held. A trial that fails here is a silent wrong answer, a raw traceback or data loss
again.

    python -m benchmarks trials
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (category, trial, handled outcome, test node id)
TRIALS = [
    (
        "fault",
        "--out folder holds the input (reference.nii.gz)",
        "refused, both paths named, input intact",
        "tests/test_run_safety.py::test_an_input_inside_the_output_folder_is_refused_and_kept",
    ),
    (
        "API misuse",
        "DnCNN/HVAE/pixel denoiser under a parent's .train()",
        "stays in eval mode, same output",
        "tests/test_frozen_priors.py::test_a_parents_train_mode_changes_nothing",
    ),
    (
        "fault",
        "a byte flipped inside model.safetensors",
        "CheckpointError naming both SHA-256",
        "tests/test_checkpoint_integrity.py::test_save_records_the_digest_and_load_checks_it",
    ),
    (
        "fault",
        "corrupted safetensors header, NaN weights",
        "CheckpointError, not a raw SafetensorError",
        "tests/test_checkpoint_integrity.py::test_corrupted_header_and_non_finite_weights_are_checkpoint_errors",
    ),
    (
        "fault",
        "a solver returns NaN",
        "run stops incomplete, exit 4, finished slices kept",
        "tests/test_run_safety.py::test_a_solver_returning_nan_stops_the_run_incomplete",
    ),
    (
        "bad input",
        "--resume after the input file changed",
        "refused: content hash differs",
        "tests/test_run_safety.py::test_resume_refuses_an_input_whose_content_changed",
    ),
    (
        "API misuse",
        "interrupted --full-volume run, resume command",
        "command keeps --full-volume and works",
        "tests/test_run_safety.py::test_interrupted_full_volume_run_prints_a_resume_command_that_works",
    ),
    (
        "bad input",
        "1-channel y for deepinv's 2-channel MRI",
        "ValueError with both shapes",
        "tests/test_solver_inputs.py::test_one_channel_measurements_for_complex_mri_are_refused",
    ),
    (
        "bad input",
        "y of another size than the physics'",
        "ValueError, not torch's shape error",
        "tests/test_solver_inputs.py::test_measurements_of_another_size_are_a_clear_error_not_a_raw_shape_error",
    ),
    (
        "out-of-domain",
        "CT volume in HU through an MRI recipe",
        "doubt recorded + one warning line",
        "tests/test_run_safety.py::test_ct_in_hounsfield_units_through_an_mri_recipe_is_flagged",
    ),
    (
        "out-of-domain",
        "0.5 x 4 x 6 mm voxels resampled 8x in-plane",
        "doubt recorded + one warning line",
        "tests/test_run_safety.py::test_thick_slices_resampled_several_times_in_plane_are_flagged",
    ),
    (
        "out-of-domain",
        "NIfTI without geometry (qform/sform 0)",
        "doubt recorded + one warning line",
        "tests/test_run_safety.py::test_a_nifti_without_geometry_is_flagged",
    ),
    (
        "out-of-domain",
        "denoisers on [0, 255] images",
        "one warning naming the fix",
        "tests/test_frozen_priors.py::test_images_on_a_0_255_scale_are_flagged_once",
    ),
    (
        "API misuse",
        "3-channel image through a 1-channel denoiser",
        "one warning (complex 2-channel silent)",
        "tests/test_frozen_priors.py::test_colour_images_are_split_with_one_warning_complex_ones_silently",
    ),
    (
        "bad input",
        "PixelFlash on a batch of mixed accelerations",
        "each slice's severity from its own mask",
        "tests/test_pixel_denoiser.py::test_zero_filled_error_reads_each_examples_own_mask",
    ),
    (
        "fault",
        "disk full while writing the partial stacks",
        "exit 3 (I/O error), not SIGBUS",
        "tests/test_run_safety.py::test_a_full_disk_is_an_io_error_not_a_bus_error",
    ),
    (
        "API misuse",
        "DPIR(sigma, denoiser, device) as in deepinv",
        "works; a denoiser as sigma is a clear TypeError",
        "tests/test_solver_inputs.py::test_dpir_takes_deepinvs_signature",
    ),
    (
        "bad input",
        "physics with a float64 mask (NumPy)",
        "float32 answer, physics unchanged",
        "tests/test_solver_inputs.py::test_float64_physics_gives_the_float32_answer_and_is_left_unchanged",
    ),
    (
        "API misuse",
        "float64 input to every denoiser (deepinv's DPS)",
        "computed in float32, returned in float64",
        "tests/test_frozen_priors.py::test_float64_input_is_computed_in_the_networks_dtype_and_returned_in_float64",
    ),
    (
        "bad input",
        "PixelFlash with ZeroNoise / GaussianNoise(0)",
        "runs on the estimated level",
        "tests/test_pixel_denoiser.py::test_pixel_flash_runs_on_noiseless_physics",
    ),
    (
        "API misuse",
        "a command whose extra is not installed",
        "one line naming the pip extra",
        "tests/test_packaging.py::test_a_command_that_needs_an_extra_names_it",
    ),
    (
        "API misuse",
        "a shipped recipe by name (from a wheel)",
        "resolved; unknown names list the shipped ones",
        "tests/test_packaging.py::test_recipes_run_by_name_and_unknown_names_list_the_shipped_ones",
    ),
    (
        "API misuse",
        "DPIR named in a recipe",
        "runs through the registry",
        "tests/test_solver_inputs.py::test_dpir_runs_from_a_recipe",
    ),
    (
        "out-of-domain",
        "automatic parameter at a bound of its search",
        "searched beyond; else another rule",
        "tests/test_autotune.py::test_a_minimum_rule_running_to_an_edge_hands_over_to_the_discrepancy_rule",
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "trials.xml"
        nodes = sorted({node for *_, node in TRIALS})
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider", f"--junitxml={report}", *nodes],
            cwd=ROOT,
            capture_output=True,
        )
        outcome: dict[str, bool] = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "").split("[")[0]
            held = not any(child.tag in ("failure", "error") for child in case)
            outcome[name] = outcome.get(name, True) and held
    width = max(len(t) for _, t, _, _ in TRIALS)
    print(f"{'category':<14} {'trial':<{width}}  {'handled outcome asserted':<48} result")
    failed = 0
    for category, trial, expected, node in TRIALS:
        held = outcome.get(node.split("::")[-1])
        failed += held is not True
        result = "held" if held else "NOT HELD" if held is False else "not run"
        print(f"{category:<14} {trial:<{width}}  {expected:<48} {result}")
    print(f"{len(TRIALS) - failed} of {len(TRIALS)} trials handled")
    return 1 if failed else 0
