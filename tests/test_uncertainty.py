"""Posterior sampling, streaming moments and conformal calibration: known answers from a
linear-Gaussian model, whose posterior is available in closed form."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_tunable.audit.uncertainty import (
    ConformalCalibrator,
    PosteriorSampler,
    PosteriorSummary,
    RunningMoments,
    coverage,
)
from deepinv_tunable.diffusion.consistency import gaussian_posterior_sample
from deepinv_tunable.nets import HVAE
from deepinv_tunable.physics import build_physics
from deepinv_tunable.solvers import PnPHVAESampler

N_PIXELS, N_MEAS, PRIOR_STD, SIGMA = 16, 8, 1.0, 0.3


@pytest.fixture(scope="module")
def gaussian_problem():
    """A dense 8x16 operator on 1x4x4 images, prior N(0, I), noise 0.3: the posterior is
    N(mu, Sigma) with Sigma = (M^T M / s^2 + I)^-1 and mu = Sigma M^T y / s^2."""
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(N_MEAS, N_PIXELS, generator=g, dtype=torch.float64) / N_PIXELS**0.5
    physics = dinv.physics.LinearPhysics(
        A=lambda x: (x.flatten(1) @ matrix.T).reshape(x.shape[0], 1, N_MEAS, 1),
        A_adjoint=lambda y: (y.flatten(1) @ matrix).reshape(y.shape[0], 1, 4, 4),
        max_iter=200,
        tol=1e-12,
    )
    cov = torch.linalg.inv(matrix.T @ matrix / SIGMA**2 + torch.eye(N_PIXELS, dtype=torch.float64) / PRIOR_STD**2)
    return physics, matrix, cov


def exact_sampler(physics):
    def draw(y, _physics):
        return gaussian_posterior_sample(physics, y, torch.zeros(y.shape[0], 1, 4, 4, dtype=y.dtype), PRIOR_STD, SIGMA)

    return draw


def simulate(matrix, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = PRIOR_STD * torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    y = x.flatten(1) @ matrix.T + SIGMA * torch.randn(n, N_MEAS, generator=g, dtype=torch.float64)
    return x, y.reshape(n, 1, N_MEAS, 1)


# -- streaming moments ------------------------------------------------------------------------
def test_running_moments_match_the_batch_statistics_for_any_split():
    data = torch.randn(37, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = RunningMoments()
    for chunk in torch.split(data, [1, 10, 2, 24]):
        m.update(chunk)
    assert m.count == 37
    torch.testing.assert_close(m.mean, data.mean(0))
    torch.testing.assert_close(m.var(), data.var(0))
    # groups given by their moments (Monte Carlo chains) merge to the pooled statistics too
    g = RunningMoments()
    for chunk in torch.split(data, [20, 17]):
        g.update_moments(chunk.mean(0), chunk.var(0, unbiased=False), chunk.shape[0])
    torch.testing.assert_close(g.var(unbiased=False), data.var(0, unbiased=False))
    one = RunningMoments()
    one.update(torch.ones(1, 2))
    with pytest.raises(ValueError, match="at least 2"):
        one.var()
    with pytest.raises(ValueError, match="no samples"):
        RunningMoments().var()


# -- (a) linear-Gaussian known answers -----------------------------------------------------------
def test_exact_samples_match_the_closed_form_posterior(gaussian_problem):
    physics, matrix, cov = gaussian_problem
    _, y = simulate(matrix, 1, seed=2)
    mu = (cov @ matrix.T @ y.flatten() / SIGMA**2).reshape(1, 1, 4, 4)
    n = 4000
    summary = PosteriorSampler(exact_sampler(physics), n_samples=n, batch_size=1000, keep_samples=True).sample(
        y, physics
    )
    assert summary.samples.shape == (n, 1, 1, 4, 4)
    std = cov.diagonal().sqrt().reshape(1, 1, 4, 4)
    # mean within 4 Monte Carlo standard errors, std within 5%
    assert float(((summary.mean - mu).abs() / (std / n**0.5)).max()) < 4.0
    assert float((summary.std / std - 1).abs().max()) < 0.05
    empirical_cov = torch.cov(summary.samples.flatten(1).T)
    assert float((empirical_cov - cov).abs().max()) < 0.05 * float(cov.diagonal().max())


def test_conformal_intervals_cover_fresh_draws_at_the_nominal_rate(gaussian_problem):
    physics, matrix, _ = gaussian_problem
    sampler = PosteriorSampler(exact_sampler(physics), n_samples=32, batch_size=32)
    x_cal, y_cal = simulate(matrix, 300, seed=3)
    x_test, y_test = simulate(matrix, 300, seed=4)
    cal_summary, test_summary = sampler.sample(y_cal, physics), sampler.sample(y_test, physics)

    honest = ConformalCalibrator(alpha=0.1).fit([cal_summary], [x_cal])
    assert honest.q == pytest.approx(1.645, rel=0.06)  # an exact sampler needs (almost) no rescaling
    assert abs(coverage(*honest.apply(test_summary), x_test).coverage - 0.9) < 0.02

    # an over-confident sampler (std halved): uncalibrated 90% intervals cover ~59%, calibrated ~90%
    shrunk = PosteriorSummary(mean=test_summary.mean, std=test_summary.std / 2, n_samples=32, seconds=0.0)
    shrunk_cal = (cal_summary.mean, cal_summary.std / 2)
    assert coverage(*shrunk.interval(0.1), x_test).coverage < 0.65
    calibrated = ConformalCalibrator(alpha=0.1).fit([shrunk_cal], [x_cal])
    assert calibrated.q == pytest.approx(2 * honest.q, rel=1e-6)
    assert abs(coverage(*calibrated.apply(shrunk), x_test).coverage - 0.9) < 0.02


def test_calibration_round_trips_through_json_and_refuses_bad_input(tmp_path):
    cal = ConformalCalibrator(alpha=0.2, std_floor=0.01).fit(
        [(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8))], [torch.linspace(-1, 1, 128).reshape(2, 1, 8, 8)]
    )
    path = cal.save(tmp_path / "calibration.json")
    loaded = ConformalCalibrator.load(path)
    assert (loaded.alpha, loaded.q, loaded.std_floor) == (0.2, cal.q, 0.01)
    with pytest.raises(ValueError, match="alpha must be in"):
        ConformalCalibrator(alpha=1.5)
    with pytest.raises(ValueError, match="not fitted"):
        ConformalCalibrator().apply((torch.zeros(1), torch.ones(1)))
    with pytest.raises(ValueError, match="same shape"):
        cal.fit([(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))], [torch.zeros(1, 1, 4, 5)])
    (tmp_path / "bad.json").write_text('{"alpha": 0.1}')
    with pytest.raises(ValueError, match="missing"):
        ConformalCalibrator.load(tmp_path / "bad.json")


# -- the sampler wrapper ------------------------------------------------------------------------
def test_sampler_is_reproducible_and_leaves_the_global_rng_alone():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.1}, (8, 8))
    y = physics(torch.rand(2, 1, 8, 8))

    def noisy(y, physics):  # a stochastic "reconstructor" drawing from the global RNG
        return physics.A_adjoint(y) + torch.randn(y.shape[0], 1, 8, 8)

    state = torch.get_rng_state()
    a = PosteriorSampler(noisy, n_samples=6, batch_size=4, seed=5).sample(y, physics)
    assert torch.equal(torch.get_rng_state(), state)
    b = PosteriorSampler(noisy, n_samples=6, batch_size=4, seed=5).sample(y, physics)
    c = PosteriorSampler(noisy, n_samples=6, batch_size=4, seed=6).sample(y, physics)
    assert torch.equal(a.mean, b.mean) and not torch.equal(a.mean, c.mean)
    assert a.mean.shape == (2, 1, 8, 8) and a.samples is None and a.n_samples == 6
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        PosteriorSampler(noisy, n_samples=1)


def test_deepinv_ula_chains_are_merged_into_the_gaussian_posterior():
    # prior N(0, I) through deepinv's Tikhonov, likelihood sigma 0.5 on half the pixels:
    # posterior std 1 where unobserved, (1 + 1/0.25)^-1/2 = 0.447 where observed.
    mask = torch.zeros(1, 4, 4)
    mask[..., ::2] = 1
    physics = dinv.physics.Inpainting((1, 4, 4), mask=mask)
    ula = dinv.sampling.ULA(
        prior=dinv.optim.Tikhonov(),
        data_fidelity=dinv.optim.L2(sigma=0.5),
        step_size=0.02,
        max_iter=3000,
        thinning=2,
        burnin_ratio=0.1,
        clip=None,
    )
    summary = PosteriorSampler(ula, n_samples=8, batch_size=8).sample(torch.zeros(1, 1, 4, 4), physics)
    expected = torch.where(mask.bool(), torch.tensor(0.2**0.5), torch.tensor(1.0)).expand(1, 1, 4, 4)
    assert float((summary.std / expected - 1).abs().mean()) < 0.1
    assert float(summary.mean.abs().max()) < 0.3


def test_deepinv_dps_runs_unchanged_inside_the_sampler():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    denoiser = dinv.models.DRUNet(in_channels=1, out_channels=1, pretrained=None, nc=(8, 8, 8, 8), nb=1)
    dps = dinv.sampling.DPS(denoiser, num_steps=4, dtype=torch.float32)
    a = PosteriorSampler(dps, n_samples=4, batch_size=2, seed=1).sample(y, physics)
    b = PosteriorSampler(dps, n_samples=4, batch_size=2, seed=1).sample(y, physics)
    assert a.mean.shape == (1, 1, 16, 16) and torch.equal(a.mean, b.mean)
    assert float(a.std.mean()) > 0


# -- PnP-HVAE sampler ---------------------------------------------------------------------------
class ZeroDecoder(HVAE):
    """An HVAE whose decoder mean is always 0: the Gibbs chain then samples the Gaussian
    posterior with prior N(0, gamma^2 I), known in closed form."""

    def reconstruct(self, x, tau=1.0, pad=True, sample=False, generator=None):
        self.temperatures(tau)
        return torch.zeros_like(x)


def test_pnp_hvae_sampler_with_a_zero_decoder_samples_the_closed_form_posterior():
    gamma, sigma = 0.1, 0.05
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": sigma, "seed": 0}, (16, 16))
    y = physics(torch.full((1, 1, 16, 16), 0.5))
    sampler = PnPHVAESampler(ZeroDecoder(width=4, groups_per_scale=(1,), gamma=gamma), max_iter=2)
    summary = PosteriorSampler(sampler, n_samples=400, batch_size=200).sample(y, physics)
    observed = physics.mask.bool().expand(1, 1, 16, 16)
    post_var = 1 / (1 / gamma**2 + 1 / sigma**2)
    expected_std = torch.where(observed, torch.tensor(post_var**0.5), torch.tensor(gamma))
    expected_mean = torch.where(observed, post_var / sigma**2 * y, torch.tensor(0.0))
    assert float((summary.std / expected_std - 1).abs().mean()) < 0.05
    assert float((summary.mean - expected_mean).abs().max()) < 4 * gamma / 400**0.5


def test_pnp_hvae_sampler_draws_differ_by_seed_and_repeat_with_it():
    hvae = HVAE(width=8, groups_per_scale=(1, 1))
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (16, 16))
    y = physics(torch.cat([torch.rand(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)], 1))
    sampler = PnPHVAESampler(hvae, tau=0.8, max_iter=3)
    a, b = sampler(y, physics, seed=0), sampler(y, physics, seed=1)
    assert a.shape == (1, 2, 16, 16) and not torch.equal(a, b)
    assert torch.equal(a, sampler(y, physics, seed=0))
    x_mode = hvae.reconstruct(torch.rand(2, 1, 16, 16), 0.8)
    assert x_mode.shape == (2, 1, 16, 16)
