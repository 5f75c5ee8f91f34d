"""The typed diagnostics every solver result carries: the data-fit band, the doubts, and what a
recipe run writes of them."""

import json
import warnings

import pytest
import torch
from test_recipes import tiny_recipe

from deepinv_tunable.physics import build_physics
from deepinv_tunable.physics.data_fit import CHI2_OVERFIT, CHI2_UNDERFIT, chi2, fit_labels
from deepinv_tunable.recipes import parse_recipe, run_recipe
from deepinv_tunable.solvers import TVPGD, MeasurementBaseline, Reconstruction, SolverDiagnostics
from deepinv_tunable.tuning import ParameterChoice


def test_fit_band_edges():
    eps = 1e-6
    labels = fit_labels([CHI2_OVERFIT - eps, CHI2_OVERFIT, CHI2_UNDERFIT, CHI2_UNDERFIT + eps, float("nan")])
    assert labels == ["fits the noise", "consistent", "consistent", "leaves signal in the residual", "unknown"]


@pytest.fixture(scope="module")
def mri():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.02}, (32, 32))
    x = torch.zeros(2, 2, 32, 32)
    x[:, 0, 8:24, 8:24] = 1.0
    torch.manual_seed(0)
    return physics, x, physics(x)


def test_every_result_carries_the_chi2_of_what_it_returns(mri):
    physics, _, y = mri
    out = TVPGD(lambda_tv=0.01, max_iter=20).reconstruct(y, physics)
    torch.testing.assert_close(out.chi2, chi2(out.x, y, physics).cpu())
    # the zero-filled baseline reproduces the measured noise exactly: chi2 = 0, flagged
    base = MeasurementBaseline().reconstruct(y, physics).diagnostics()
    assert base.chi2 == pytest.approx([0.0, 0.0], abs=1e-6) and base.fit == ["fits the noise"] * 2
    assert any("fits the noise" in d for d in base.doubts("baseline", examples=[7, 8]))
    assert "[7, 8]" in base.doubts("baseline", examples=[7, 8])[0]


def test_no_noise_level_means_no_chi2():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.0}, (16, 16))
    y = physics(torch.rand(1, 2, 16, 16))
    out = MeasurementBaseline().reconstruct(y, physics)
    assert out.chi2 is None and out.diagnostics().fit is None and out.diagnostics().doubts() == []


def _choice(at_bound: bool) -> ParameterChoice:
    return ParameterChoice(
        "lambda_tv", 0.1, "discrepancy", [0.001, 0.1], [2.0, 1.0], (0.001, 0.1), at_bound, 0.01, False, 2, 0.1
    )


def test_doubts_name_each_reason():
    result = Reconstruction(
        x=torch.zeros(2, 1, 4, 4),
        wall_time=0.0,
        n_iter=50,
        converged=False,
        parameters={"lambda_tv": 0.1},
        choices={"lambda_tv": _choice(True)},
        chi2=torch.tensor([1.0, 9.0]),
    )
    diag = result.diagnostics()
    assert isinstance(diag, SolverDiagnostics) and diag.at_bound == ["lambda_tv"]
    doubts = diag.doubts("tv")
    assert len(doubts) == 3
    assert "did not converge in 50 iterations" in doubts[0]
    assert "edge of its search interval" in doubts[1]
    assert "examples [1]: leaves signal in the residual" in doubts[2]
    record = json.loads(json.dumps(diag.as_dict()))  # JSON-ready
    assert record["choices"]["lambda_tv"]["value"] == 0.1 and record["at_bound"] == ["lambda_tv"]
    clean = Reconstruction(x=result.x, wall_time=0.0, converged=True, choices={"lambda_tv": _choice(False)})
    clean.chi2 = torch.tensor([1.0, 1.1])
    assert clean.diagnostics().doubts() == []


def test_recipe_run_writes_diagnostics_and_doubts(tmp_path):
    out = tmp_path / "out"
    recipe = tiny_recipe(out, **{"solver": {"name": "pseudo_inverse"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_recipe(parse_recipe(recipe), progress=False)
    metrics = json.loads(result.metrics_path.read_text())
    diag = metrics["diagnostics"]
    assert [d["slices"] for d in diag] == [metrics["slices"][:2], metrics["slices"][2:]]
    assert diag[0]["fit"] == ["fits the noise"] * 2 and max(diag[0]["chi2"]) < 1e-6
    assert len(metrics["doubts"]) == 2 and all("fits the noise" in d for d in metrics["doubts"])
    assert sum("fits the noise" in str(w.message) for w in caught) == 2
    report = (out / "report.html").read_text()
    assert "Reasons to doubt this run" in report and "fits the noise" in report


# ------------------------------------------------------------------ deepinv-consistent inputs
def _hvae_solver():
    from deepinv_tunable.nets import HVAE
    from deepinv_tunable.solvers import PnPHVAE

    return PnPHVAE(HVAE(width=8, groups_per_scale=(1, 1)), tau=0.8, max_iter=2)


def test_float64_measurements_are_computed_in_the_model_dtype_and_returned_in_theirs():
    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.02}, (16, 16))
    torch.manual_seed(0)
    y = physics(torch.rand(1, 1, 16, 16))
    solver = _hvae_solver()
    out64 = solver.reconstruct(y.double(), physics, seed=0)
    out32 = solver.reconstruct(y, physics, seed=0)
    assert out64.x.dtype == torch.float64 and out32.x.dtype == torch.float32
    torch.testing.assert_close(out64.x.float(), out32.x)
    assert TVPGD(lambda_tv=0.01, max_iter=5)(y.double(), physics).dtype == torch.float64


def test_non_gaussian_or_per_image_noise_is_refused_by_name():
    import deepinv as dinv

    x = torch.rand(2, 1, 16, 16)
    poisson = dinv.physics.Denoising(noise_model=dinv.physics.PoissonNoise(gain=0.1))
    with pytest.raises(ValueError, match="TVPGD assumes Gaussian measurement noise.*PoissonNoise"):
        TVPGD(lambda_tv=0.01, max_iter=5)(poisson(x), poisson)
    per_image = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(sigma=torch.tensor([0.01, 0.05])))
    with pytest.raises(ValueError, match="per-image noise levels are not supported"):
        TVPGD(lambda_tv=0.01, max_iter=5)(per_image(x), per_image)
    MeasurementBaseline()(poisson(x), poisson)  # no data term: any noise is fine


@pytest.mark.parametrize("kind", ["mri", "blur", "ct"])
def test_images_in_0_255_are_refused_by_learned_priors(kind):
    config = {"kind": kind, "noise_sigma": 0.01, **({"n_views": 20} if kind == "ct" else {})}
    physics = build_physics(config, (16, 16))
    x = torch.rand(1, 1, 16, 16)
    x_phys = torch.cat([x, torch.zeros_like(x)], 1) if kind == "mri" else x
    solver = _hvae_solver()
    solver.reconstruct(physics(x_phys), physics, seed=0)  # in range: accepted
    with pytest.raises(ValueError, match=r"expects images in \[0, 1\].*divide by 255"):
        solver.reconstruct(physics(255 * x_phys), physics, seed=0)
