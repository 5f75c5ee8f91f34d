"""The noise-conditional pixel denoiser, its checkpoint and the noise-range warning of every
shipped denoiser."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from deepinv_tunable.nets import HVAE, ConditionalDRUNet, DnCNN
from deepinv_tunable.priors import DnCNNDenoiser, HVAEDenoiser, PixelDenoiser


def tiny_net(sigma_range=(0.01, 0.5)) -> ConditionalDRUNet:
    torch.manual_seed(0)
    return ConditionalDRUNet(nc=(4, 4, 4, 4), nb=1, sigma_range=sigma_range)


def range_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "outside the range" in str(w.message)]


def test_round_trip_keeps_weights_and_range(tmp_path):
    net = tiny_net()
    net.save_pretrained(tmp_path)
    back = ConditionalDRUNet.from_pretrained(tmp_path)
    assert back.sigma_range == (0.01, 0.5)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(net.eval()(x, 0.1), back(x, 0.1))


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="0 < low < high"):
        ConditionalDRUNet(nc=(4, 4, 4, 4), nb=1, sigma_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="4 feature counts"):
        ConditionalDRUNet(nc=(4, 4), nb=1)


def test_complex_images_are_denoised_channel_by_channel():
    den = PixelDenoiser(tiny_net())
    x = torch.rand(2, 2, 16, 16)
    out = den(x, 0.1)
    parts = torch.cat([den(x[:, i : i + 1], 0.1) for i in range(2)], dim=1)
    torch.testing.assert_close(out, parts)


def test_per_image_levels_match_separate_calls():
    den = PixelDenoiser(tiny_net())
    x = torch.rand(2, 2, 16, 16)
    out = den(x, torch.tensor([0.05, 0.2]))
    torch.testing.assert_close(out[0:1], den(x[0:1], 0.05))
    torch.testing.assert_close(out[1:2], den(x[1:2], 0.2))


def test_input_is_not_modified():
    den = PixelDenoiser(tiny_net())
    x = torch.rand(1, 1, 16, 16)
    before = x.clone()
    den(x, 0.1)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "make, inside, outside",
    [
        (lambda: PixelDenoiser(tiny_net((0.01, 0.5))), 0.1, 3.0),
        (lambda: PixelDenoiser(tiny_net((0.01, 0.5))), 0.1, 0.001),
        (lambda: DnCNNDenoiser([DnCNN(depth=3, num_filters=4, trained_sigma=0.1)]), 0.1, 0.001),
        (lambda: HVAEDenoiser(HVAE(width=8, groups_per_scale=(1, 1))), 0.03, 0.5),
    ],
)
def test_planted_out_of_range_sigma_warns_once_with_range_and_value(make, inside, outside):
    den = make()
    x = torch.rand(1, 1, 16, 16)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        den(x, inside)
        assert range_warnings(record) == []
        den(x, outside)
        den(x, outside)
    messages = range_warnings(record)
    assert len(messages) == 1
    low, high = den.sigma_range
    assert f"{outside:.4g}" in messages[0] and f"[{low:g}, {high:g}]" in messages[0]


def test_warning_fires_inside_a_deepinv_sampler():
    import deepinv as dinv

    from deepinv_tunable.physics import build_physics

    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.05}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16))
    sampler = dinv.sampling.DiffPIR(
        PixelDenoiser(tiny_net((0.01, 0.5))), dinv.optim.data_fidelity.L2(), sigma=0.05, max_iter=3
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sampler(y, physics)
    assert len(range_warnings(record)) == 1


def test_training_draws_log_uniform_levels_and_learns(tmp_path):
    import math

    from deepinv_tunable.training.drunet import ConditionalDenoiserModule, sample_noise_levels

    torch.manual_seed(0)
    module = ConditionalDenoiserModule(
        drunet={"nc": (16, 16, 16, 16), "nb": 1}, sigma_range=(0.01, 1.0), sigma_knee=None, lr=3e-3
    )
    levels = sample_noise_levels(20000, (0.01, 1.0), generator=torch.Generator().manual_seed(0))
    assert 0.01 <= float(levels.min()) and float(levels.max()) <= 1.0
    # log-uniform: the log-levels' mean is the middle of the log-range, their std its width / sqrt(12)
    assert abs(float(levels.log().mean()) - math.log(0.1)) < 0.02
    assert abs(float(levels.log().std()) - math.log(100) / math.sqrt(12)) < 0.02
    x = torch.full((8, 1, 16, 16), 0.5)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = float((module.net(noisy, 0.1) - x).pow(2).mean())
    opt = module.configure_optimizers()
    for _ in range(150):
        loss = module.training_step(x, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float((module.net(noisy, 0.1) - x).pow(2).mean())
    assert mse < 0.9 * 0.1**2 and mse < 0.75 * before  # below the input noise power, and learning
    module.export(tmp_path / "m", None)
    assert ConditionalDRUNet.from_pretrained(tmp_path / "m").sigma_range == (0.01, 1.0)
    with pytest.raises(ValueError, match="0 < low < high"):
        ConditionalDenoiserModule(sigma_range=(0.0, 1.0))


def test_levels_above_the_knee_get_their_share_each_piece_log_uniform():
    import math

    from deepinv_tunable.training.drunet import ConditionalDenoiserModule, sample_noise_levels

    levels = sample_noise_levels(
        40000, (0.002, 80.0), knee=1.0, high_share=0.15, generator=torch.Generator().manual_seed(0)
    )
    above, below = levels[levels > 1.0], levels[levels <= 1.0]
    assert abs(above.numel() / levels.numel() - 0.15) < 0.01
    # each piece log-uniform: mean log-level at the middle of its log-interval
    assert abs(float(below.log().mean()) - math.log(0.002) / 2) < 0.05
    assert abs(float(above.log().mean()) - math.log(80.0) / 2) < 0.05
    assert 0.002 <= float(levels.min()) and float(levels.max()) <= 80.0
    with pytest.raises(ValueError, match="sigma_knee"):
        ConditionalDenoiserModule(sigma_range=(0.01, 1.0), sigma_knee=2.0)
    with pytest.raises(ValueError, match="high_share"):
        ConditionalDenoiserModule(high_share=1.5)


def test_body_input_is_scaled_to_unit_size_at_every_level():
    """EDM's c_in: the body sees x / sqrt(sigma^2 + sigma_d^2) and log(sigma) / 4 as its noise
    map, so an image at sigma = 80 reaches it at the size of a clean one (a planted probe)."""
    net = tiny_net()
    seen = {}
    net.net.register_forward_pre_hook(lambda m, args: seen.update(x=args[0], s=args[1]))
    x = torch.full((1, 1, 16, 16), 80.0)
    net.body(x, torch.tensor([80.0]))
    torch.testing.assert_close(seen["x"], x / (80.0**2 + 0.25**2) ** 0.5)
    torch.testing.assert_close(seen["s"], torch.tensor([math.log(80.0) / 4]))
    assert bool(torch.isfinite(net(torch.rand(1, 1, 16, 16), 0.0)).all())  # sigma = 0 stays finite


def test_bf16_step_matches_fp32_step():
    """One training loss and its gradient under bf16 autocast (the cpu preset's precision) agree
    with fp32 to bf16's precision: loss within 2 %, gradient direction cosine > 0.99."""
    from deepinv_tunable.training.drunet import ConditionalDenoiserModule

    grads, losses = [], []
    for bf16, channels_last in ((False, False), (True, True)):
        torch.manual_seed(0)
        module = ConditionalDenoiserModule(drunet={"nc": (16, 32, 32, 32), "nb": 1}, channels_last=channels_last)
        x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)  # the same levels and noise in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.loss(x)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in module.net.parameters()]))
    assert abs(losses[1] - losses[0]) < 0.02 * losses[0]
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) > 0.99


def test_preconditioning_is_the_identity_at_zero_noise_and_matches_edm():
    net = tiny_net()
    c_skip, c_out = net.coefficients(torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(c_skip.flatten(), torch.tensor([1.0, 0.5, 0.0625 / 1.0625]))
    torch.testing.assert_close(c_out.flatten(), torch.tensor([0.0, 0.0625 / 0.125**0.5, 0.25 / 1.0625**0.5]))
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(net(x, 0.0), x)


def test_float64_input_is_denoised_and_returned_in_float64():
    den = PixelDenoiser(tiny_net())
    x = torch.rand(1, 1, 16, 16)
    out = den(x.double(), torch.tensor(0.1, dtype=torch.float64))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), den(x, 0.1))


def test_pixel_flash_with_start_noise_is_deepinvs_diffpir():
    import deepinv as dinv

    from deepinv_tunable.physics import build_physics, to_physics_domain
    from deepinv_tunable.solvers import PixelFlash

    den = PixelDenoiser(tiny_net((0.002, 1.0)))
    for spec in (
        {"kind": "mri", "acceleration": 4, "noise_sigma": 0.01},
        {"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.01},
    ):
        physics = build_physics(spec, (16, 16))
        y = physics(to_physics_domain(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), physics))
        reference = dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=0.01, max_iter=6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(3)
            expected = reference(y, physics)
            out = PixelFlash(
                den,
                max_iter=6,
                lambda_=7.0,
                zeta=0.1,
                start="noise",
                spacing="deepinv",
                precision="fp32",  # deepinv computes in fp32
                final_consistency=False,
                max_chi2=1e9,
            ).reconstruct(y, physics, seed=3)
        torch.testing.assert_close(out.x, expected, atol=1e-4, rtol=1e-4)
        assert out.nfe.tolist() == [5, 5]  # deepinv's last network call is unused: not made


def test_pixel_flash_starts_later_for_milder_severity_and_counts_its_nfe():
    from deepinv_tunable.solvers import PixelFlash

    solver = PixelFlash(PixelDenoiser(tiny_net((0.002, 1.0))), max_iter=30)
    diffpir = solver.schedule(0.01)
    index, clamped = solver.start_indices(diffpir, torch.tensor([0.5, 0.05, 0.005, 1e-6]), 16.0)
    assert index.tolist() == sorted(index.tolist())  # milder -> later start -> fewer steps
    assert index[0] < index[1] < index[2] and bool(clamped[3])
    levels = diffpir.sigmas[diffpir.seq.long()] / 2
    target = 16.0**0.5 * 0.05  # the start level is sqrt(c) sigma_hat
    assert abs(float(levels[index[1]]) - target) <= float((levels[:-1] - target).abs().min()) + 1e-9
    later, _ = solver.start_indices(diffpir, torch.tensor([0.05]), 36.0)
    assert int(later[0]) < int(index[1])  # a larger c starts higher: more steps
    with pytest.raises(ValueError, match="start"):
        PixelFlash(PixelDenoiser(tiny_net()), start="latent")


def test_pixel_flash_reads_mri_severity_from_the_spectrum_and_counts_the_pilot_elsewhere():
    from deepinv_tunable.physics import build_physics, mri_zero_filled_error, to_physics_domain
    from deepinv_tunable.solvers import PixelFlash
    from deepinv_tunable.solvers.pixel_flash import NOISE_CORRECTION

    solver = PixelFlash(PixelDenoiser(tiny_net((0.002, 1.0))), max_iter=8, severity_iter=3)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    mri = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (16, 16))
    blur = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.01}, (16, 16))
    assert solver.severity_rule(mri) == "spectrum" and solver.severity_rule(blur) == "pilot"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = mri(to_physics_domain(x, mri))
        out = solver.reconstruct(y, mri, seed=0)
        torch.testing.assert_close(out.sigma_hat, mri_zero_filled_error(y, mri))
        steps = len(solver.schedule(0.01).seq) - 1
        assert (out.nfe == steps - out.start_step).all()  # no network call for the severity
        assert out.extras["start_constant"] == NOISE_CORRECTION["spectrum"] == 36.0
        out = solver.reconstruct(blur(x), blur, seed=0)
        assert (out.nfe == steps - out.start_step + 3).all()  # the pilot's 3 calls are counted
        assert out.extras["start_constant"] == NOISE_CORRECTION["pilot"] == 16.0
    assert PixelFlash(PixelDenoiser(tiny_net()), noise_correction=9.0).start_constant(mri) == 9.0
    with pytest.raises(ValueError, match="noise_correction"):
        PixelFlash(PixelDenoiser(tiny_net()), noise_correction=0.0)
    with pytest.raises(ValueError, match="severity"):
        PixelFlash(PixelDenoiser(tiny_net()), severity="oracle")


def test_pixel_flash_runs_a_batch_of_mixed_accelerations_each_with_its_own_mask():
    import deepinv as dinv

    from deepinv_tunable.physics import batched_mri, physics_rows, to_physics_domain
    from deepinv_tunable.physics.data_fit import chi2
    from deepinv_tunable.solvers import PixelFlash

    physics = batched_mri([{"kind": "mri", "acceleration": a, "noise_sigma": 0.01} for a in (2, 12)], (16, 16))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = physics(to_physics_domain(x, physics))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = PixelFlash(PixelDenoiser(tiny_net((0.002, 1.0))), max_iter=30).reconstruct(y, physics, seed=0)
    assert out.x.shape == (2, 2, 16, 16)
    assert float(out.sigma_hat[1]) > float(out.sigma_hat[0])  # 12x is more severe than 2x, each from its own mask
    assert out.start_step[0] > out.start_step[1]  # two groups, each cut out of the batch; 12x starts earlier
    fit = chi2(out.x, y, physics).cpu()  # each row against its own mask
    torch.testing.assert_close(out.chi2, fit)
    assert bool((fit < 3).all()), fit
    # a blur with one kernel per example cannot be cut into rows: the caller runs the whole batch
    blur = dinv.physics.Blur(filter=torch.rand(2, 1, 3, 3))
    assert physics_rows(blur, torch.tensor([0]), 2, torch.zeros(1, 1, 16, 16)) is None
    shared = dinv.physics.Blur(filter=torch.rand(1, 1, 3, 3))
    assert physics_rows(shared, torch.tensor([0]), 2, torch.zeros(1, 1, 16, 16)) is shared


def test_zero_filled_error_reads_each_examples_own_mask():
    """A batch of 2x and 12x acquisitions: each example's predicted zero-filled error equals the
    one computed alone with its own mask (it used the first example's mask for all: the 12x
    slice was scored as if 2x, and the per-slice ranking came out backwards)."""
    from deepinv_tunable.physics import batched_mri, build_physics, mri_zero_filled_error, to_physics_domain

    configs = [{"kind": "mri", "acceleration": a, "noise_sigma": 0.01} for a in (2, 12)]
    physics = batched_mri(configs, (32, 32))
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 8:24, 6:26] = 0.8
    x[:, :, 12:20, 12:20] = 0.3
    y = physics(to_physics_domain(x, physics))
    both = mri_zero_filled_error(y, physics, 0.01)
    alone = [mri_zero_filled_error(y[i : i + 1], build_physics(c, (32, 32)), 0.01) for i, c in enumerate(configs)]
    torch.testing.assert_close(both, torch.cat(alone))
    assert float(both[1]) > 1.5 * float(both[0])  # 12x loses more than 2x


@pytest.mark.parametrize("noise", ["zero", "gaussian0"])
def test_pixel_flash_runs_on_noiseless_physics(noise):
    """ZeroNoise / GaussianNoise(0) were refused with a message naming a sigma= no signature has;
    the level is now estimated from y (at least the noise floor), as the other solvers do."""
    import deepinv as dinv

    from deepinv_tunable.physics import build_physics, to_physics_domain
    from deepinv_tunable.solvers import PixelFlash

    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (16, 16))
    physics.noise_model = dinv.physics.ZeroNoise() if noise == "zero" else dinv.physics.GaussianNoise(0.0)
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = physics(to_physics_domain(x, physics))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = PixelFlash(PixelDenoiser(tiny_net((0.002, 1.0))), max_iter=8).reconstruct(y, physics, seed=0)
    assert out.x.shape == (1, 2, 16, 16) and bool(torch.isfinite(out.x).all())


def test_training_continues_from_an_export(tmp_path):
    """A run on a new machine (no Lightning state) starts from the last export's weights."""
    from deepinv_tunable.training.drunet import ConditionalDenoiserModule

    first = ConditionalDenoiserModule(drunet={"nc": (4, 4, 4, 4), "nb": 1})
    first.export(tmp_path / "m", None)
    again = ConditionalDenoiserModule(drunet={"nc": [4, 4, 4, 4], "nb": 1}, init=str(tmp_path / "m"))
    for key, value in first.net.state_dict().items():
        assert torch.equal(again.net.state_dict()[key], value), key
    with pytest.raises(ValueError, match="settings differ"):
        ConditionalDenoiserModule(drunet={"nc": (8, 8, 8, 8), "nb": 1}, init=str(tmp_path / "m"))
