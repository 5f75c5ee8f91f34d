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


def test_weighted_consistency_leaves_a_fitting_estimate_and_averages_a_wrong_one():
    from deepinv_tunable.diffusion.consistency import weighted_data_consistency

    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (32, 32))
    x = torch.zeros(2, 2, 32, 32)
    x[:, 0] = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(0))
    y = physics(x)
    # a fitting estimate: the zero-filled image of a noise-free measurement has chi2 ~ 1 against y
    fitting = physics.A_adjoint(physics.A(x))
    estimates = torch.stack([fitting[0], torch.zeros_like(x[1])])
    before = estimates.clone()
    out = weighted_data_consistency(estimates, y, physics)
    assert torch.equal(estimates, before)
    if out.gamma[0] == 0:
        assert torch.equal(out.x[0], fitting[0])
    assert float(out.gamma[0]) < 0.2
    # a zero estimate: measured k-space becomes gamma / (gamma + 1) of the data (precision weighting)
    gamma = float(out.gamma[1])
    assert gamma > 100
    torch.testing.assert_close(physics.A(out.x[1:2]), gamma / (gamma + 1) * y[1:2], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="n_probes"):
        weighted_data_consistency(estimates, y, physics, n_probes=0)


def test_the_final_correction_by_default_applies_where_the_physics_is_linear():
    """``correct=None`` (the samplers' default): the weighted step on a linear physics, exactly as
    ``correct=True``; none on a nonlinear one (it has no proximal step)."""
    from deepinv_tunable.solvers.guard import verify_and_correct

    blur = build_physics({"kind": "blur", "blur_sigma": 2.0, "noise_sigma": 0.01}, (32, 32))
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = blur(x)
    auto, forced = verify_and_correct(x, y, blur, correct=None), verify_and_correct(x, y, blur, correct=True)
    torch.testing.assert_close(auto.x, forced.x)
    assert torch.isfinite(auto.dc_weight).all()
    retrieval = build_physics({"kind": "phase_retrieval", "oversampling": 2.0, "noise_sigma": 0.01}, (16, 16))
    z = torch.rand(1, 1, 16, 16).to(torch.cfloat)
    out = verify_and_correct(z, retrieval(z), retrieval, max_chi2=float("inf"), correct=None)
    assert torch.isnan(out.dc_weight).all() and torch.equal(out.x, z)
