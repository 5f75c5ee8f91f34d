import pytest
import torch

from deepinv_tunable.nets import OrderedFlow
from deepinv_tunable.nets.ordered_flow import squeeze, unsqueeze
from deepinv_tunable.physics import build_physics
from deepinv_tunable.solvers import LatentMAP


def trained_like_flow(seed=0):
    """A flow whose couplings are not the identity (random last layers)."""
    torch.manual_seed(seed)
    flow = OrderedFlow(image_size=(4, 4), levels=2, couplings_per_level=2, hidden=8)
    for level in flow.levels:
        for coupling in level:
            torch.nn.init.normal_(coupling.net[-1].weight, std=0.3)
    return flow.double()


def test_squeeze_round_trip_and_layout():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    s = squeeze(x)
    assert s.shape == (1, 4, 2, 2) and s[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert torch.equal(unsqueeze(s), x)


def test_flow_is_invertible_and_its_log_determinant_is_exact():
    flow = trained_like_flow()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    z, logdet = flow.inverse(x)
    torch.testing.assert_close(flow.generate(z), x, atol=1e-10, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: flow.inverse(v.reshape(1, 1, 4, 4))[0].flatten(), x.flatten())
    assert float(logdet) == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-8)
    assert float(logdet) != pytest.approx(0.0, abs=1e-3)  # a non-trivial map was checked


def test_truncated_decoding_and_bad_inputs():
    flow = trained_like_flow().float()
    assert flow.latent_shape == (16, 1, 1) and flow.latent_dim == 16
    z = torch.randn(2, 16, 1, 1)
    z2 = z.clone()
    z2[:, 5:] = torch.randn(2, 11, 1, 1)
    assert torch.equal(flow.decode(z, 5), flow.decode(z2, 5))
    with pytest.raises(ValueError, match=r"k = 17 is outside \[1, 16\]"):
        flow.decode(z, 17)
    with pytest.raises(ValueError, match=r"this flow expects \(B, 1, 4, 4\) images"):
        flow.encode_mean(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"must be a multiple of 2\^levels = 4"):
        OrderedFlow(image_size=(6, 8), levels=2)


def test_flow_checkpoint_round_trip_and_latent_map(tmp_path):
    flow = trained_like_flow().float()
    flow.save_pretrained(tmp_path / "flow")
    again = OrderedFlow.from_pretrained(tmp_path / "flow")
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(flow.encode_mean(x), again.encode_mean(x))
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.05}, (4, 4))
    y = physics(x)
    result = LatentMAP(again, max_iter=20, gamma=0.1).reconstruct(y, physics, k=8)
    assert result.x.shape == (2, 1, 4, 4) and torch.isfinite(result.x).all()
    start = again.decode(again.encode_mean(physics.A_dagger(y).clamp(0, 1)), 8)
    assert bool((result.extras["residual_sq"] < ((physics.A(start) - y) ** 2).flatten(1).sum(1)).all())


def _shipped_flow_and_slices():
    from deepinv_tunable import pretrained
    from deepinv_tunable.data import load_volume, percentile_scaling, prepare_volume, sample_path, volume_to_slices

    flow = pretrained.load("ordered_flow_mri128")
    vol = prepare_volume(load_volume(sample_path("mni152_t1")), "axial", spacing=1.8, size=(128, 128))
    return flow, percentile_scaling(vol.data).apply(volume_to_slices(vol.data, "axial")).clamp(0, 1)[[70, 110]]


def test_shipped_flow_round_trips():
    flow, x = _shipped_flow_and_slices()
    assert isinstance(flow, OrderedFlow) and flow.latent_dim == 128 * 128
    with torch.no_grad():
        z = flow.encode_mean(x)
        assert (flow.decode(z) - x).abs().max() < 1e-3  # invertible: the full latent is the image
        assert not torch.allclose(flow.decode(z, 4096), x, atol=1e-2)  # a quarter of it is not


@pytest.mark.slow
def test_shipped_flow_truncated_latent_beats_the_full_one_at_strong_noise():
    flow, x = _shipped_flow_and_slices()

    def psnr(x_hat):
        return float((-10 * torch.log10((x_hat.clamp(0, 1) - x).pow(2).mean((1, 2, 3)))).mean())

    # the trade-off the tunable prior exists for (docs/tunable_results.rst): at noise 0.1 the full
    # latent refits the noise (its estimate is the noisy image), a quarter of it does not
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (128, 128))
    y = physics(x, rng=torch.Generator().manual_seed(0))
    solver = LatentMAP(flow, gamma=0.0, max_iter=100)
    full, quarter = (psnr(solver(y, physics, k=k)) for k in (16384, 4096))
    assert quarter > full + 1.0, (quarter, full)
    assert abs(full - psnr(y)) < 1.0


def test_shipped_flow_spectrum_proposes_smaller_k_for_stronger_noise():
    """The spectrum shipped beside the flow: one value per latent coordinate, and the closed form's
    k falls as noise rises (the values the k study measured: 16368 at 0.005, 2784 at 0.1)."""
    from deepinv_tunable import pretrained
    from deepinv_tunable.tuning import closed_form_k, load_spectrum

    spectrum = load_spectrum(pretrained.path("ordered_flow_mri128"))
    assert spectrum.shape == (16384,) and bool((spectrum >= 0).all())
    denoise = build_physics({"kind": "denoising"}, (128, 128))
    ks = [closed_form_k(spectrum, denoise, s) for s in (0.005, 0.01, 0.02, 0.05, 0.1)]
    assert ks == sorted(ks, reverse=True) and ks[0] == 16368 and ks[-1] == 2784
    grid = [1024, 2048, 4096, 8192, 12288, 16384]
    assert closed_form_k(spectrum, denoise, 0.1, grid) == 2048
    mri16 = build_physics({"kind": "mri", "acceleration": 16, "noise_sigma": 0.01}, (128, 128))
    assert closed_form_k(spectrum, mri16, 0.01, grid) == 12288
