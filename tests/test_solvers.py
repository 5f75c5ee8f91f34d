import pytest
import torch

from deepinv_tunable.data.phantoms import random_ellipses_2d, shepp_logan_2d
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import TVPGD, PseudoInverse, Reconstruction
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.metrics import image_metrics


def _phantoms(n=2, size=64):
    return torch.stack([random_ellipses_2d(size, generator=torch.Generator().manual_seed(s)) for s in range(n)])[
        :, None
    ]


def test_pseudo_inverse_is_exact_without_undersampling_and_reports_time():
    physics = build_physics({"kind": "mri", "acceleration": 1}, (32, 32))
    x = _phantoms(1, 32)
    result = PseudoInverse().reconstruct(physics(to_physics_domain(x, physics)), physics)
    assert isinstance(result, Reconstruction) and result.wall_time >= 0
    assert torch.allclose(from_physics_domain(result.x, physics), x, atol=1e-5)


def test_tv_beats_zero_filled_by_3db_on_4x_mri_phantoms():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (64, 64))
    x = _phantoms(2)
    y = physics(to_physics_domain(x, physics))
    zf = image_metrics(from_physics_domain(PseudoInverse()(y, physics), physics), x)["psnr"]
    result = TVPGD(lambda_tv=0.01, max_iter=60).reconstruct(y, physics)
    tv = image_metrics(from_physics_domain(result.x, physics), x)["psnr"]
    assert result.n_iter == 60 and result.parameters["lambda_tv"] == 0.01
    assert min(t - z for t, z in zip(tv, zf)) > 3.0


def test_tv_denoises_piecewise_constant_image():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1, "seed": 2}, (64, 64))
    x = shepp_logan_2d(64)[None, None]
    y = physics(x)
    x_hat = TVPGD(lambda_tv=0.08, max_iter=40)(y, physics)
    assert image_metrics(x_hat, x)["psnr"][0] > image_metrics(y, x)["psnr"][0] + 6


def test_tv_rejects_bad_parameters_and_inputs():
    with pytest.raises(ValueError, match="lambda_tv must be >= 0, got -1"):
        TVPGD(lambda_tv=-1)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        TVPGD(max_iter=0)
    with pytest.warns(FutureWarning, match="TVPGD: 'n_iter' is renamed 'max_iter'"):
        assert TVPGD(n_iter=7).max_iter == 7  # the former name still works, for now
    pr = build_physics({"kind": "phase_retrieval"}, (8, 8))
    with pytest.raises(TypeError, match="TVPGD needs a linear physics, got RandomPhaseRetrieval"):
        TVPGD(max_iter=1)(pr(to_physics_domain(torch.rand(1, 1, 8, 8), pr)), pr)
    physics = build_physics({"kind": "denoising"}, (8, 8))
    y = torch.rand(1, 1, 8, 8)
    y[0, 0, 0, 0] = float("nan")
    before = y.clone()
    with pytest.raises(ValueError, match="measurements y contains 1 NaN"):
        TVPGD(max_iter=1)(y, physics)
    assert torch.equal(torch.isnan(before), torch.isnan(y))  # input untouched


def test_grid_search_finds_the_known_best_value():
    ref = torch.ones(2, 1, 8, 8)
    result = grid_search(lambda v: ref * v, ref, [0.5, 0.95, 1.3], param="gain")
    assert result.best == 0.95 and result.param == "gain"
    assert result.table[0.95] > result.table[1.3] > result.table[0.5]
    assert grid_search(lambda v: ref * v, ref, [0.5, 1.0], metric="nmse").best == 1.0
    with pytest.raises(ValueError, match="grid must hold at least one value"):
        grid_search(lambda v: ref, ref, [])


def test_metrics_known_values():
    x = torch.zeros(1, 1, 16, 16)
    m = image_metrics(x + 0.1, x)
    assert m["psnr"][0] == pytest.approx(20.0, abs=1e-4)
    y = torch.rand(1, 1, 16, 16)
    assert image_metrics(y, y)["ssim"][0] == pytest.approx(1.0, abs=1e-6)
    assert image_metrics(2 * y, y)["nmse"][0] == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="differs from reference shape"):
        image_metrics(y, y[..., :8])


def test_tv_through_slices_averages_noise_over_a_stack_of_identical_slices():
    """2.5D TV: on 6 noisy copies of one phantom slice, penalising differences between
    neighbouring slices pools their noise (more than 1 dB over slice-by-slice TV, same weight),
    and on a single slice it is the 2D TV."""
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
    x = shepp_logan_2d(32).reshape(1, 1, 32, 32).repeat(6, 1, 1, 1)
    torch.manual_seed(0)
    y = physics(x)
    per_slice = TVPGD(lambda_tv=0.05, max_iter=40)(y, physics)
    through = TVPGD(lambda_tv=0.05, max_iter=40, through_slices=True)(y, physics)
    gain = sum(image_metrics(through, x)["psnr"]) / 6 - sum(image_metrics(per_slice, x)["psnr"]) / 6
    assert gain > 1.0, gain
    one = TVPGD(lambda_tv=0.05, max_iter=40, through_slices=True)(y[:1], physics)
    torch.testing.assert_close(one, per_slice[:1], atol=2e-3, rtol=0)


def test_object_ssim_ignores_background_noise_that_whole_image_ssim_punishes():
    from deepinv_tunable.utils.metrics import foreground_mask, image_metrics

    x = torch.zeros(1, 1, 64, 64)
    x[..., 16:48, 16:48] = 0.5 + 0.3 * torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    noisy_background = x + 0.02 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * ~foreground_mask(x)
    m = image_metrics(noisy_background, x)
    assert m["ssim_fg"][0] > 0.95  # the object is untouched (its windows reaching the noise lose a little)
    assert m["ssim"][0] < m["ssim_fg"][0] - 0.1  # the background noise costs the whole-image SSIM
    assert image_metrics(x, x)["ssim_fg"][0] == pytest.approx(1.0, abs=1e-6)
