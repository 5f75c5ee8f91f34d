"""The severity side of Flash-Diffusion: degradations over a severity range, the severity audit,
the encoder's objective and training, and what its export records (the variance calibration and
the trained range)."""

from __future__ import annotations

import math

import pytest
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.diffusion.severity import Degradation, SeverityRanges, degrade, sample_degradations, severity_audit
from deepinv_tunable.nets import SeverityEncoder, TunableVAE


def test_degradations_cover_their_ranges_and_are_reproducible():
    ranges = SeverityRanges(mri_acceleration=(2, 12), ct_views=(20, 180), blur_sigma=(0, 3), noise_sigma=(0, 0.03))
    degs = sample_degradations(3000, ranges, torch.Generator().manual_seed(0))
    kinds = [d.kind for d in degs]
    for kind in ("mri", "ct", "blur"):
        assert abs(kinds.count(kind) / 3000 - 1 / 3) < 0.04
    mri = [d.level for d in degs if d.kind == "mri"]
    assert 2 <= min(mri) < 2.2 and 11.8 < max(mri) <= 12
    ct = {d.level for d in degs if d.kind == "ct"}
    assert ct <= set(range(20, 181, 10)) and {20, 180} <= ct
    assert all(0 <= d.noise_sigma <= 0.03 for d in degs)
    again = sample_degradations(3000, ranges, torch.Generator().manual_seed(0))
    assert again == degs
    with pytest.raises(ValueError, match="mri_acceleration"):
        SeverityRanges(mri_acceleration=(8, 2))
    with pytest.raises(ValueError, match=r"blur level \(blur_sigma\) must be >= 0.0.*got level=-1"):
        Degradation("blur", -1.0, 0.0)
    with pytest.raises(ValueError, match="unknown degradation kind 'jpeg'"):
        Degradation("jpeg", 1.0, 0.0)


def test_degrade_returns_the_measurement_only_estimate_and_keeps_the_input():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    degs = [Degradation("mri", 1.0, 0.0), Degradation("blur", 0.0, 0.0), Degradation("blur", 2.0, 0.1, seed=5)]
    out = degrade(x, degs)
    assert torch.equal(x, before)
    assert torch.allclose(out[0], x[0], atol=1e-5)  # fully sampled, no noise: the image itself
    assert torch.allclose(out[1], x[1], atol=1e-6)  # no blur, no noise
    assert float((out[2] - x[2]).pow(2).mean()) > 0.005
    assert torch.equal(degrade(x, degs), out)  # the seed fixes the noise
    with pytest.raises(ValueError, match="3 images"):
        degrade(x, degs[:2])


def test_severity_audit_scores_an_oracle_and_finds_a_planted_hard_case():
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.nn.functional.avg_pool2d(images, 3, 1, 1)  # some structure for blur to remove

    class Oracle(torch.nn.Module):
        """Reports the true error of the degraded input, times ``boost`` for image 0."""

        def __init__(self, boost: float = 1.0):
            super().__init__()
            self.boost = boost

        def forward(self, x_tilde):
            err = (x_tilde - images[: len(x_tilde)]).pow(2).flatten(1).mean(1)
            err[0] = err[0] * self.boost
            return x_tilde, err

    sweep = {"mri": [2, 4, 8, 12], "blur": [0.5, 1.0, 2.0, 3.0]}
    audit = severity_audit(Oracle(), images, sweep, noise_sigma=0.0)
    assert audit.spearman["mri"] > 0.8 and audit.spearman["blur"] > 0.8, audit.spearman
    planted = severity_audit(Oracle(boost=10.0), images, sweep, noise_sigma=0.0)
    assert {r["image"] for r in planted.hard} == {0}
    assert len([r for r in planted.hard if r["kind"] == "blur"]) == 4  # hard at every blur level

    class Constant(torch.nn.Module):
        def forward(self, x_tilde):
            return x_tilde, torch.rand(len(x_tilde), generator=torch.Generator().manual_seed(len(x_tilde)))

    assert abs(severity_audit(Constant(), images, sweep).spearman["mri"]) < 0.5


def test_severity_objective_known_answers(tmp_path):
    """Clean inputs (full sampling, no noise) give the VAE's own latent: the latent term is 0 and
    the variance term is the squared reported variance."""
    from deepinv_tunable.training import SeverityEncoderModule

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    vae.save_pretrained(tmp_path / "vae")
    module = SeverityEncoderModule(
        vae=str(tmp_path / "vae"),
        lambda_im=1.0,
        degradations={"kinds": ["mri"], "mri_acceleration": (1, 1), "noise_sigma": (0, 0)},
    )
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = module.loss_terms(x)
    _, sigma2 = module.encoder(x)
    assert float(terms["latent"]) < 1e-8
    assert torch.allclose(terms["sigma"], sigma2.pow(2).mean(), rtol=1e-4)
    assert torch.allclose(terms["image"], (vae(x) - x).pow(2).mean(), rtol=1e-4)
    # the variance target is not differentiated: with a head that ignores its input (sigma2 a
    # constant), a real latent error gives the encoder no gradient from the variance term
    module.ranges = module.ranges.model_copy(update={"mri_acceleration": (8, 8), "noise_sigma": (0.05, 0.05)})
    with torch.no_grad():
        module.encoder.head.weight.zero_()
        module.encoder.head.bias.fill_(0.3)
    terms = module.loss_terms(x)
    assert float(terms["latent"]) > 1e-4
    module.encoder.zero_grad()
    terms["sigma"].backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in module.encoder.encoder.parameters())
    assert float(module.encoder.head.bias.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="lambda_sigma"):
        SeverityEncoderModule(vae=str(tmp_path / "vae"), lambda_sigma=-1)


def test_severity_log_variance_term_is_the_squared_log_ratio_and_the_loss_uses_the_chosen_form(tmp_path):
    from deepinv_tunable.training import SeverityEncoderModule

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    vae.save_pretrained(tmp_path / "vae")
    ranges = {"kinds": ["mri"], "mri_acceleration": (8, 8), "noise_sigma": (0.05, 0.05)}
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    losses = {}
    for form in ("squared", "log"):
        module = SeverityEncoderModule(vae=str(tmp_path / "vae"), degradations=ranges, sigma_loss=form)
        with torch.no_grad():  # a head reporting sigma2 = 0.3^2 = 0.09 whatever the input
            module.encoder.head.weight.zero_()
            module.encoder.head.bias.fill_(0.3)
        terms = module.loss_terms(x, torch.Generator().manual_seed(1))
        z_hat, _ = module.encoder(degrade(x, sample_degradations(4, module.ranges, torch.Generator().manual_seed(1))))
        target = (z_hat - vae.encode_mean(x)).flatten(1).var(1)
        assert torch.allclose(terms["sigma_log"], (target.log() - math.log(0.09)).pow(2).mean(), rtol=1e-4)
        assert torch.allclose(terms["sigma"], (target - 0.09).pow(2).mean(), rtol=1e-4)
        losses[form] = (module._loss(terms), terms)
    for form, key in (("squared", "sigma"), ("log", "sigma_log")):
        loss, terms = losses[form]
        assert torch.allclose(loss, terms["latent"] + 10.0 * terms[key])
    with pytest.raises(ValueError, match="sigma_loss must be one of \\('squared', 'log'\\), got 'l1'"):
        SeverityEncoderModule(vae=str(tmp_path / "vae"), sigma_loss="l1")


def test_severity_encoder_trains_from_a_recipe_and_round_trips(tmp_path):
    import yaml

    from deepinv_tunable.training import load_train_recipe, train

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    vae.save_pretrained(tmp_path / "vae")
    recipe = {
        "name": "tiny_severity",
        "model": "severity_encoder",
        "preset": "cpu-small",
        "data": {
            "input": "sample:itk_t1",
            "spacing": 8.0,
            "size": [32, 32],
            "holdout": [60, 70],
            "batch_size": 4,
            "samples_per_epoch": 8,
            "num_workers": 0,
            "val_slices": 2,
        },
        "module": {"vae": str(tmp_path / "vae"), "unet": None, "lr": 1e-3, "degradations": {"kinds": ["mri", "blur"]}},
        "trainer": {"max_epochs": 2, "max_time_minutes": None, "log_every_n_steps": 1},
        "output": str(tmp_path / "run"),
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = train(load_train_recipe(tmp_path / "r.yaml"), progress=False)
    encoder = pretrained.load(result.model_dir)
    assert isinstance(encoder, SeverityEncoder) and encoder.config["source"] == str(tmp_path / "vae")
    low, high = encoder.config["sigma2_range"]
    assert 0 <= low <= high and encoder.config["variance_scale"] > 0  # calibrated at export
    x = torch.rand(2, 1, 32, 32)
    encoder.save_pretrained(tmp_path / "again")
    again = SeverityEncoder.from_pretrained(tmp_path / "again")
    assert all(torch.equal(a, b) for a, b in zip(encoder(x), again(x)))
    moved = [not torch.equal(p, q) for p, q in zip(encoder.encoder.parameters(), vae.autoencoder.encoder.parameters())]
    assert any(moved)  # trained away from the VAE's encoder it started from
    assert "optimiser steps" in (result.model_dir / "README.md").read_text()


def test_degradations_are_simulated_in_full_precision_inside_a_bf16_autocast():
    """A bf16 training step degrades its batch under autocast; the CT operators are cached for the
    process, so one first built there must not hand bf16 grids to a later fp32 call (the end of
    training's export crashed on it), and the simulation itself stays fp32."""
    from deepinv_tunable.diffusion.severity import _ct_operator

    _ct_operator.cache_clear()
    x = torch.rand(2, 1, 32, 32)
    degradations = [Degradation("ct", 30.0, 0.01, seed=0), Degradation("mri", 4.0, 0.01, seed=1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = degrade(x, degradations)
    outside = degrade(x, degradations)  # the cached CT operator, now outside autocast
    assert inside.dtype == outside.dtype == torch.float32 and torch.equal(inside, outside)


def test_trained_range_is_ordered_for_an_encoder_that_ranks_a_kind_backwards():
    """An encoder whose estimate falls as the blur grows (it reads fine-scale energy): the range
    recorded at export is the span of its mild and harsh estimates, ordered, not [mild min, harsh
    max] (which inverted and made the export of a poorly ranking encoder fail)."""
    from types import SimpleNamespace

    from deepinv_tunable.training.severity import SeverityEncoderModule

    def fine_energy(x):
        grad = x[..., 1:, :] - x[..., :-1, :]
        return x, grad.pow(2).flatten(1).mean(1)

    module = SimpleNamespace(ranges=SeverityRanges(kinds=["blur"], noise_sigma=(0.0, 0.0)), encoder=fine_energy)
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    low, high = SeverityEncoderModule.trained_range(module, images)
    assert 0 <= low < high
    assert high == pytest.approx(float(fine_energy(images)[1].max()), rel=0.05)  # the unblurred images carry the most


def test_variance_calibration_recovers_a_planted_under_report():
    """An encoder that reports half of its true squared error (here z0 = 0, so the error of
    z_hat = x~ is its own energy): the calibration is exactly 2, and a calibrated encoder's report
    is the error itself."""
    from types import SimpleNamespace

    from deepinv_tunable.training.severity import SeverityEncoderModule

    def under_reporting(x):
        return x, 0.5 * x.pow(2).flatten(1).mean(1)

    module = SimpleNamespace(
        ranges=SeverityRanges(kinds=["mri", "blur"]),
        encoder=under_reporting,
        vae=SimpleNamespace(encode_mean=torch.zeros_like),
    )
    under_reporting.config = {"variance_scale": 1.0}
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert SeverityEncoderModule.variance_calibration(module, images) == pytest.approx(2.0, rel=1e-5)

    vae = TunableVAE(image_size=(16, 16), block_out_channels=(8, 8), latent_channels=2)
    plain, calibrated = SeverityEncoder.from_vae(vae), SeverityEncoder(vae.config, variance_scale=2.0)
    calibrated.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(calibrated(x)[1], 2.0 * plain(x)[1])
    with pytest.raises(ValueError, match="variance_scale must be > 0, got 0"):
        SeverityEncoder(vae.config, variance_scale=0.0)
