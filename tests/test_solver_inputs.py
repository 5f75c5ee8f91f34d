"""Every solver refuses measurements its physics cannot have produced, and takes a physics
built in float64 (a NumPy mask) without modifying it."""

from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import DPIR, TVPGD, PseudoInverse


def mri(dtype=torch.float32, size=32):
    rng = np.random.default_rng(0)
    mask = rng.random((1, size, size)) < 0.4
    mask[:, :, size // 2 - 3 : size // 2 + 3] = True
    return dinv.physics.MRI(
        mask=torch.from_numpy(mask.astype(np.float64)).to(dtype),
        img_size=(2, size, size),
        noise_model=dinv.physics.GaussianNoise(0.01),
    )


def phantom(size=32):
    x = torch.zeros(1, 2, size, size)
    x[:, 0, 8:24, 10:22] = 0.8
    return x


SOLVERS = {
    "pseudo_inverse": lambda: PseudoInverse(),
    "tv": lambda: TVPGD(lambda_tv=0.01, max_iter=20),
    "dpir": lambda: DPIR(sigma=0.01, max_iter=4),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_one_channel_measurements_for_complex_mri_are_refused(name):
    physics = mri()
    y = physics(phantom())
    with pytest.raises(
        ValueError, match=r"shape \(1, 1, 32, 32\) do not fit the physics MRI.*\(1, 2, 32, 32\).*2 channels"
    ):
        SOLVERS[name]()(y[:, :1], physics)


def test_measurements_of_another_size_are_a_clear_error_not_a_raw_shape_error():
    physics = mri()
    with pytest.raises(ValueError, match=r"shape \(1, 2, 16, 16\) do not fit the physics MRI"):
        TVPGD(lambda_tv=0.01, max_iter=5)(torch.rand(1, 2, 16, 16), physics)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_float64_physics_gives_the_float32_answer_and_is_left_unchanged(name):
    physics64, physics32 = mri(torch.float64), mri(torch.float32)
    torch.manual_seed(0)
    y = physics32(phantom())
    solver = SOLVERS[name]()
    with torch.no_grad():
        x64 = solver(y.double(), physics64)
        x32 = solver(y, physics32)
    assert x64.dtype == torch.float64
    torch.testing.assert_close(x64.float(), x32, atol=1e-4, rtol=1e-4)
    assert physics64.mask.dtype == torch.float64  # the caller's physics is not cast in place


def test_dpir_takes_deepinvs_signature():
    from deepinv_tunable.priors import DnCNNDenoiser

    den = DnCNNDenoiser.from_pretrained()
    solver = DPIR(0.05, den, "cpu")  # deepinv's order: sigma, denoiser, device
    assert solver.sigma == 0.05 and solver.denoiser is den
    assert DPIR(sigma=0.1, denoiser=den, device="cpu", max_iter=4).max_iter == 4
    assert DPIR().denoiser is not None  # no denoiser: the package's default pixel prior
    with pytest.raises(TypeError, match=r"deepinv's argument order DPIR\(sigma, denoiser, device\).*DnCNNDenoiser"):
        DPIR(den, max_iter=4)


def test_dpir_runs_from_a_recipe(tmp_path):
    from test_recipes import tiny_recipe

    from deepinv_tunable.recipes import parse_recipe, run_recipe

    recipe = tiny_recipe(tmp_path / "out", **{"solver": {"name": "dpir", "params": {"sigma": 0.01, "max_iter": 4}}})
    result = run_recipe(parse_recipe(recipe), progress=False)
    assert result.summary["solver"]["psnr"] > result.summary["baseline"]["psnr"] + 1.0


def test_dpir_default_final_level_is_the_noise_std_of_each_call():
    """``sigma="noise"`` (the default) is the physics' std, else the one estimated from ``y``:
    the same solve as the number itself, bit for bit."""
    from deepinv_tunable.priors import DnCNNDenoiser

    den = DnCNNDenoiser.from_pretrained()
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1
    stated = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (32, 32))
    y = stated(x)
    assert DPIR(denoiser=den, max_iter=3).sigma == "noise"
    out = DPIR(denoiser=den, max_iter=3).reconstruct(y, stated)
    assert out.parameters["sigma"] == pytest.approx(0.05)
    assert torch.equal(out.x, DPIR(out.parameters["sigma"], den, max_iter=3)(y, stated))
    unstated = build_physics({"kind": "denoising", "noise_sigma": 0.0}, (32, 32))
    estimated = DPIR(denoiser=den, max_iter=3).reconstruct(y, unstated).parameters["sigma"]
    assert estimated == pytest.approx(0.05, rel=0.2)
    with pytest.raises(ValueError, match="'noise' or 'auto', got 'nois'"):
        DPIR("nois", den)


def test_tvpgd_tol_stops_early_and_counts_the_iterations_it_ran():
    """With ``tol`` the result is the fixed-count solve of the iterations it reports, fewer than
    ``max_iter`` once started near the answer (a warm start)."""
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (32, 32))
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1
    y = physics(to_physics_domain(x, physics))
    converged = TVPGD(lambda_tv=0.01, max_iter=200).reconstruct(y, physics)
    assert converged.n_iter == 200 and converged.converged is None
    warm = TVPGD(lambda_tv=0.01, max_iter=200, tol=1e-3).reconstruct(y, physics, x_init=converged.x)
    assert warm.converged and 3 <= warm.n_iter < 20
    fixed = TVPGD(lambda_tv=0.01, max_iter=warm.n_iter).reconstruct(y, physics, x_init=converged.x)
    torch.testing.assert_close(warm.x, fixed.x)
    with pytest.raises(ValueError, match="tol must be positive"):
        TVPGD(tol=0.0)


def test_dpir_reports_its_network_passes_search_included():
    """``nfe`` counts the denoiser passes of a call: ``max_iter`` for one solve, ``max_iter`` per
    candidate solve (plus a final one when no candidate is reused) under ``sigma="auto"``."""
    from deepinv_tunable.priors import DnCNNDenoiser

    den = DnCNNDenoiser.from_pretrained()
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (32, 32))
    y = physics(torch.full((1, 1, 32, 32), 0.5))
    assert DPIR(denoiser=den, max_iter=3).reconstruct(y, physics).nfe == 3
    auto = DPIR("auto", den, max_iter=3).reconstruct(y, physics)
    choice = auto.choices["sigma"]
    # the discrepancy principle's chosen candidate is the answer: 5 candidate solves, no final one
    assert (choice.rule, len(choice.tried), choice.estimate is not None) == ("discrepancy", 5, True)
    assert auto.nfe == 3 * 5
