"""Estimate, then verify: the measurement guard."""

import pytest
import torch

from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import MeasurementBaseline
from deepinv_tunable.solvers.guard import measurement_guard


def test_mri_truth_passes_and_a_wrong_image_falls_back_to_zero_filled():
    torch.manual_seed(0)
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (32, 32))
    x = to_physics_domain(torch.rand(3, 1, 32, 32), physics)
    y = physics(x)
    wrong = x.clone()
    wrong[2] = x[2].flip(-1)
    with pytest.warns(RuntimeWarning, match=r"samples \[2\] explain the measurements worse"):
        out = measurement_guard(wrong, y, physics)
    assert out.fallback.tolist() == [False, False, True]
    assert 0.5 < float(out.chi2[0]) < 1.5  # the truth explains the data down to the noise
    assert float(out.baseline_chi2.max()) < 1e-6  # zero-filled fits the samples exactly
    assert torch.equal(out.x[:2], wrong[:2]) and torch.allclose(out.x[2], MeasurementBaseline()(y, physics)[2])
    assert torch.equal(wrong[2], x[2].flip(-1)), "the input is not modified"
    with pytest.raises(ValueError, match="max_chi2"):
        measurement_guard(x, y, physics, max_chi2=0)
