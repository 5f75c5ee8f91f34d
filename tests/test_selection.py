import json

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_tunable.tuning import (
    SweepResult,
    discrepancy_k,
    linear_denoising_mse,
    measurement_splitting_k,
    optimal_k_linear,
    sweep_k,
)

N_LATENT = 32
SIGMA = 0.5
F64 = torch.float64


def _linear_generator(n=N_LATENT, seed=0):
    """Singular values 3 * 0.85^i (so k* = 12 at sigma = 0.5, lambda = 0) and random orthogonal U, V."""
    g = torch.Generator().manual_seed(seed)
    s = 3.0 * 0.85 ** torch.arange(n, dtype=F64)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return s, u, v


def _shrinkage_estimate(y, s, u, lam, k):
    """x_hat_i = s_i^2 / (s_i^2 + lam) y_i for i <= k in the left-singular basis, 0 otherwise.

    Rows of ``y`` are examples."""
    coeff = y @ u[:, :k]
    return (coeff * (s[:k] ** 2 / (s[:k] ** 2 + lam))) @ u[:, :k].T


# ---------------------------------------------------------------- linear theory


@pytest.mark.parametrize("lam", [0.0, SIGMA**2], ids=["mle", "map"])
def test_closed_form_matches_monte_carlo(lam):
    s, u, v = _linear_generator()
    gen = u @ torch.diag(s) @ v.T
    g = torch.Generator().manual_seed(1)
    draws = 40_000
    x = torch.randn(draws, N_LATENT, generator=g, dtype=F64) @ gen.T
    y = x + SIGMA * torch.randn(draws, N_LATENT, generator=g, dtype=F64)
    ks = [0, 5, 12, 20, N_LATENT]
    closed = linear_denoising_mse(s, SIGMA, lam, torch.tensor(ks))
    for k, expected in zip(ks, closed.tolist()):
        mc = (_shrinkage_estimate(y, s, u, lam, k) - x).pow(2).sum(1).mean().item()
        assert abs(mc - expected) / expected < 0.03, (k, mc, expected)
    # The endpoints have simple meanings: k = 0 keeps nothing (error = signal energy); at
    # lambda = 0, k = n returns y (error = n sigma^2).
    assert closed[0].item() == pytest.approx(float((s**2).sum()), rel=1e-12)
    if lam == 0:
        assert closed[-1].item() == pytest.approx(N_LATENT * SIGMA**2, rel=1e-12)


@pytest.mark.parametrize("lam", [0.0, SIGMA**2], ids=["mle", "map"])
@pytest.mark.parametrize("k", [1, 12, N_LATENT])
def test_truncated_latent_map_equals_the_shrinkage_formula(k, lam):
    s, u, v = _linear_generator()
    gen = u @ torch.diag(s) @ v.T
    # Truncating the latent to its first k right-singular directions: G V_k = U_k diag(s_k).
    gen_k = gen @ v[:, :k]
    assert torch.allclose(gen_k, u[:, :k] * s[:k], atol=1e-12)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, N_LATENT, generator=g, dtype=F64) @ gen.T
    y = x + SIGMA * torch.randn(5, N_LATENT, generator=g, dtype=F64)
    # MAP: argmin_z ||y - G_k z||^2 + lam ||z||^2  <=>  (G_k^T G_k + lam I) z = G_k^T y.
    z_map = torch.linalg.solve(gen_k.T @ gen_k + lam * torch.eye(k, dtype=F64), gen_k.T @ y.T)
    x_map = (gen_k @ z_map).T
    assert (x_map - _shrinkage_estimate(y, s, u, lam, k)).abs().max().item() < 1e-6


def test_closed_form_known_values_scalar_and_vectorised():
    # s = (2, 1), sigma = lambda = 1: kept terms (4 + 16) / 25 = 0.8 and (1 + 1) / 4 = 0.5.
    assert linear_denoising_mse([2.0, 1.0], 1.0, 1.0, 0) == pytest.approx(5.0, abs=1e-12)
    assert linear_denoising_mse([2.0, 1.0], 1.0, 1.0, 1) == pytest.approx(1.8, abs=1e-12)
    out = linear_denoising_mse(torch.tensor([2.0, 1.0]), 1.0, 1.0, torch.tensor([2, 0, 1]))
    assert out.dtype == F64 and out.shape == (3,)
    assert torch.allclose(out, torch.tensor([1.3, 5.0, 1.8], dtype=F64), atol=1e-12)
    assert isinstance(linear_denoising_mse([2.0, 1.0], 1.0, 1.0, 2), float)
    assert optimal_k_linear([2.0, 1.0], 1.0, 1.0) == 2


def test_zero_singular_values_and_exact_ties_go_to_the_smallest_k():
    # Zero singular values at lambda = 0 (a 0/0 shrinkage) contribute nothing either way.
    mse = linear_denoising_mse([2.0, 1.0, 0.0, 0.0], 0.5, 0.0, torch.arange(5))
    assert torch.allclose(mse, torch.tensor([5.0, 1.25, 0.5, 0.5, 0.5], dtype=F64), atol=1e-12)
    assert optimal_k_linear([2.0, 1.0, 0.0, 0.0], 0.5, 0.0) == 2
    # With lambda > 0, 0 + 2 lambda > sigma^2 would count the zeros, which only tie.
    mse = linear_denoising_mse([2.0, 1.0, 0.0, 0.0], 0.5, 0.2, torch.arange(5))
    assert mse[2] == mse[3] == mse[4] == mse.min()
    assert optimal_k_linear([2.0, 1.0, 0.0, 0.0], 0.5, 0.2) == 2
    # s^2 + 2 lambda == sigma^2: keeping the coordinate changes nothing.
    assert linear_denoising_mse([1.0], 1.0, 0.0, torch.arange(2)).tolist() == [1.0, 1.0]
    assert optimal_k_linear([1.0], 1.0, 0.0) == 0


@pytest.mark.parametrize("lam", [0.0, 0.05, "map"])
def test_optimal_k_is_the_brute_force_minimiser_and_falls_with_sigma(lam):
    s, _, _ = _linear_generator()
    sigmas = torch.logspace(-2, 1, 40, dtype=F64).tolist()
    chosen = []
    for sigma in sigmas:
        lam_ = sigma**2 if lam == "map" else lam
        mse = linear_denoising_mse(s, sigma, lam_, torch.arange(N_LATENT + 1))
        k_star = optimal_k_linear(s, sigma, lam_)
        assert k_star == int(torch.argmin(mse)), sigma  # argmin returns the first minimiser
        chosen.append(k_star)
    if lam == "map":
        assert chosen == [N_LATENT] * len(sigmas)  # at the true MAP every direction helps
    else:
        assert all(a >= b for a, b in zip(chosen, chosen[1:])), chosen
        assert chosen[0] == N_LATENT and chosen[-1] == 0
    assert optimal_k_linear(s, SIGMA, 0.0) == 12


def test_linear_theory_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"non-increasing order, got s\[1\] = 1.0 < s\[2\] = 2.0"):
        linear_denoising_mse([3.0, 1.0, 2.0], 0.1, 0.0, 1)
    with pytest.raises(ValueError, match=r"singular_values must be >= 0, got s\[1\] = -1.0"):
        optimal_k_linear([1.0, -1.0], 0.1, 0.0)
    with pytest.raises(ValueError, match="singular_values must hold at least one value"):
        linear_denoising_mse([], 0.1, 0.0, 0)
    with pytest.raises(ValueError, match=r"singular_values must be 1-D, got shape \(2, 2\)"):
        optimal_k_linear(torch.eye(2), 0.1, 0.0)
    with pytest.raises(ValueError, match=r"k must lie in \[0, n\] = \[0, 2\], got k = 3"):
        linear_denoising_mse([2.0, 1.0], 0.1, 0.0, 3)
    with pytest.raises(ValueError, match=r"k must lie in \[0, n\] = \[0, 2\], got k = -1"):
        linear_denoising_mse([2.0, 1.0], 0.1, 0.0, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="k must be an integer, got 1.0"):
        linear_denoising_mse([2.0, 1.0], 0.1, 0.0, 1.0)
    with pytest.raises(ValueError, match="k must hold integers, got a tensor of dtype torch.float32"):
        linear_denoising_mse([2.0, 1.0], 0.1, 0.0, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -0.1"):
        linear_denoising_mse([2.0, 1.0], -0.1, 0.0, 1)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got nan"):
        optimal_k_linear([2.0, 1.0], 0.1, float("nan"))


# ---------------------------------------------------------------- validation sweep


def test_sweep_k_finds_the_known_best_and_breaks_ties_towards_small_k():
    truth = torch.full((2, 4), 3.0)
    calls = []

    def reconstruct(k):
        calls.append(k)
        return torch.full((2, 4), float(k))

    result = sweep_k(reconstruct, [6, 1, 3, 4], lambda x: -(x - truth).abs().mean().item())
    assert isinstance(result, SweepResult) and result.higher_is_better
    assert result.best == 3 and calls == [6, 1, 3, 4]
    assert result.table == {6: -3.0, 1: -2.0, 3: 0.0, 4: -1.0}
    assert sweep_k(reconstruct, [5, 2, 8], lambda x: 1.0).best == 2


def test_sweep_k_rejects_bad_inputs():
    with pytest.raises(ValueError, match="ks must hold at least one k"):
        sweep_k(lambda k: torch.zeros(1), [], lambda x: 0.0)
    with pytest.raises(ValueError, match="ks must not repeat a value, got k=2 twice"):
        sweep_k(lambda k: torch.zeros(1), [2, 3, 2], lambda x: 0.0)
    with pytest.raises(ValueError, match="every k in ks must be an integer, got 2.5"):
        sweep_k(lambda k: torch.zeros(1), [2.5], lambda x: 0.0)
    with pytest.raises(ValueError, match="score for k=4 must be finite, got nan"):
        sweep_k(lambda k: torch.full((1,), float(k)), [0, 4], lambda x: float("nan") if x.item() > 0 else 0.0)


# ---------------------------------------------------------------- discrepancy principle


def test_discrepancy_picks_the_smallest_k_under_the_noise_level():
    table = {16: 7.0, 1: 100.0, 8: 8.0, 4: 9.5, 2: 40.0}  # order of the dict is irrelevant
    assert discrepancy_k(table, m=10, sigma=1.0) == 4  # threshold 10
    assert discrepancy_k(table, m=10, sigma=1.0, tau=0.9) == 8  # threshold 9
    assert discrepancy_k(table, m=10, sigma=1.0, tau=0.5) == 16  # nothing under 5: smallest residual
    assert discrepancy_k({3: 2.0, 5: 2.0, 7: 4.0}, m=1, sigma=1.0) == 3  # fallback ties -> smaller k
    # Per-example tensors are averaged: k=1 -> 11 > 10, k=2 -> 9.75 <= 10 (threshold 10 = 40 * 0.5^2).
    per_example = {1: torch.tensor([12.0, 10.0]), 2: torch.tensor([9.0, 10.5]), 3: torch.tensor([1.0, 1.0])}
    assert discrepancy_k(per_example, m=40, sigma=0.5) == 2


def test_discrepancy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="residual_norms_sq must be a non-empty dict"):
        discrepancy_k({}, m=10, sigma=1.0)
    with pytest.raises(ValueError, match="m must be >= 1, got 0"):
        discrepancy_k({1: 1.0}, m=0, sigma=1.0)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0, got -1.0"):
        discrepancy_k({1: 1.0}, m=10, sigma=-1.0)
    with pytest.raises(ValueError, match="tau must be > 0, got 0.0"):
        discrepancy_k({1: 1.0}, m=10, sigma=1.0, tau=0.0)
    with pytest.raises(ValueError, match="residual for k=2 must be >= 0 \\(a squared norm\\), got -3.0"):
        discrepancy_k({1: 1.0, 2: -3.0}, m=10, sigma=1.0)
    with pytest.raises(ValueError, match="residual for k=1 must be finite, got inf"):
        discrepancy_k({1: float("inf")}, m=10, sigma=1.0)
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        discrepancy_k({1: torch.ones(2, 2)}, m=10, sigma=1.0)


# ---------------------------------------------------------------- measurement splitting


def _subspace_problem(batch=64, n=24, m=48, k_true=6, sigma=0.05, seed=3):
    """y = M x + noise with x in a k_true-dimensional subspace of R^n; rows are examples."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    mat = torch.randn(m, n, generator=g, dtype=F64) / m**0.5
    x = 2.0 * torch.randn(batch, k_true, generator=g, dtype=F64) @ basis[:, :k_true].T
    physics = dinv.physics.LinearPhysics(A=lambda v: v @ mat.T, A_adjoint=lambda w: w @ mat)
    y = physics.A(x) + sigma * torch.randn(batch, m, generator=g, dtype=F64)

    def fit(k, keep_mask):
        # Least squares in the first k basis directions on each example's kept rows only
        # (dropped rows zeroed), by batched normal equations: one call for the whole batch.
        design = keep_mask[:, :, None] * (mat @ basis[:, :k])  # (batch, m, k)
        coef = torch.linalg.solve(design.mT @ design, design.mT @ (keep_mask * y)[:, :, None])
        return coef[:, :, 0] @ basis[:, :k].T

    return fit, physics, x, y, mat


def test_measurement_splitting_finds_the_true_subspace_dimension():
    sigma = 0.05
    fit, physics, x, y, mat = _subspace_problem(sigma=sigma)
    masks = []

    def recording_fit(k, keep_mask):
        masks.append(keep_mask)
        return fit(k, keep_mask)

    ks = [2, 4, 6, 8, 12, 16, 24]
    result = measurement_splitting_k(recording_fit, ks, y, physics, generator=torch.Generator().manual_seed(0))
    assert result.best == 6 and not result.higher_is_better and list(result.table) == ks
    # One hold-out for every k: exactly round(0.1 * 64 * 48) = 307 entries.
    assert all(torch.equal(mk, masks[0]) for mk in masks) and masks[0].shape == y.shape
    held = ~masks[0]
    assert int(held.sum()) == 307
    # The table is the held-out residual, and it estimates prediction error + m_H sigma^2.
    x6 = fit(6, masks[0])
    assert result.table[6] == pytest.approx(float(((x6 @ mat.T - y)[held] ** 2).sum()), rel=1e-12)
    # For least squares E R / (m_H sigma^2) ~ 1 + k / (m_kept - k - 1) ~ 1.17 (43 kept rows per example).
    assert 0.95 < result.table[6] / (307 * sigma**2) < 1.5
    assert result.table[4] > 20 * result.table[6]  # a missing signal direction costs far more than the noise
    assert result.table[24] > result.table[6]  # fitting the noise costs too
    # The hold-out is reproducible from the generator.
    again = measurement_splitting_k(recording_fit, [6], y, physics, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks[-1], masks[0]) and again.table[6] == result.table[6]


def test_measurement_splitting_rejects_bad_inputs():
    y = torch.ones(2, 5)
    physics = dinv.physics.Denoising()
    fit = lambda k, keep: torch.zeros(2, 5)  # noqa: E731
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match=f"holdout_fraction must lie in \\(0, 1\\), got {bad}"):
            measurement_splitting_k(fit, [1], y, physics, holdout_fraction=bad)
    with pytest.raises(
        ValueError, match="of the 10 non-zero entries of y holds out 0; at least one entry must be held out"
    ):
        measurement_splitting_k(fit, [1], y, physics, holdout_fraction=0.01)
    zero_filled = torch.zeros(2, 5)
    zero_filled[0, :2] = 1.0  # only 2 informative entries: 10% of them holds out none
    with pytest.raises(ValueError, match="of the 2 non-zero entries of y holds out 0;"):
        measurement_splitting_k(fit, [1], zero_filled, physics, holdout_fraction=0.1)
    with pytest.raises(ValueError, match="physics must be a deepinv physics with a forward operator A, got str"):
        measurement_splitting_k(fit, [1], y, "identity")
    with pytest.raises(ValueError, match=r"A\(fit\(3, keep_mask\)\) has shape \(2, 4\), expected y's shape \(2, 5\)"):
        measurement_splitting_k(lambda k, keep: torch.zeros(2, 4), [3], y, physics)
    with pytest.raises(ValueError, match="ks must not repeat a value, got k=1 twice"):
        measurement_splitting_k(fit, [1, 1], y, physics)


@pytest.mark.parametrize(
    "cfg",
    [{"kind": "mri", "acceleration": 4}, {"kind": "ct", "n_views": 10}, {"kind": "blur"}],
    ids=lambda c: c["kind"],
)
def test_masked_physics_is_adjoint_on_real_images(cfg):
    from deepinv_tunable.physics import build_physics, to_physics_domain
    from deepinv_tunable.tuning import holdout_mask, masked_physics

    physics = build_physics(cfg, (16, 16))
    y = physics(to_physics_domain(torch.rand(2, 1, 16, 16), physics))
    keep = holdout_mask(y, 0.3, torch.Generator().manual_seed(0))
    split = masked_physics(physics, keep)
    x, v = torch.randn(2, 1, 16, 16), torch.randn(y.shape)
    assert split.A(x).shape == y.shape and not split.A(x)[~keep].any()
    lhs, rhs = float((split.A(x) * v).sum()), float((x * split.A_adjoint(v)).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


def test_linear_theory_accepts_any_array_like_including_reversed_numpy_views():
    ascending = np.linspace(0.1, 3.0, 12)
    spectrum = ascending[::-1]  # a view with a negative stride
    assert spectrum.strides[0] < 0
    expected = linear_denoising_mse(torch.tensor(spectrum.copy()), 0.5, 0.1, 4)
    assert linear_denoising_mse(spectrum, 0.5, 0.1, 4) == pytest.approx(expected)
    assert linear_denoising_mse(list(spectrum), 0.5, 0.1, 4) == pytest.approx(expected)
    assert optimal_k_linear(spectrum, 0.5, 0.1) == optimal_k_linear(torch.tensor(spectrum.copy()), 0.5, 0.1)
    with pytest.raises(ValueError, match="real numbers"):
        optimal_k_linear(np.array(["a", "b"]), 0.5, 0.1)


class _KeepsItsStart:
    """A 'generator' that at k = 2 returns its start image untouched and at k = 1 the mean of the
    measurements it was given (a planted splitting problem: the truth is a constant image)."""

    def reconstruct(self, y, physics, k=None, x_init=None, **kwargs):
        k = torch.as_tensor(k).reshape(-1)
        start = y if x_init is None else x_init
        observed = (y != 0).float()
        mean = (y.sum((1, 2, 3), keepdim=True) / observed.sum((1, 2, 3), keepdim=True)).expand_as(y)
        x = torch.where((k == 2).reshape(-1, 1, 1, 1), start, mean)
        return type("Fit", (), {"x": x})()


def test_splitting_start_never_sees_the_held_out_entries():
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.tuning import select_k

    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (16, 16))
    y = physics(torch.full((2, 1, 16, 16), 0.5), rng=torch.Generator().manual_seed(0))
    y_before = y.clone()
    chosen = select_k(_KeepsItsStart(), y, physics, [1, 2], rule="splitting", seed=0)
    # a start from all of y would give k = 2 a held-out residual of exactly 0
    assert chosen.value.tolist() == [1, 1]
    assert all(float(chosen.table[2][b]) > 10 * float(chosen.table[1][b]) for b in range(2))
    assert torch.equal(y, y_before)


def test_select_k_default_rules_and_the_discrepancy_principle_on_recorded_fits():
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.solvers.base import Reconstruction
    from deepinv_tunable.tuning import default_k_rule, select_k

    kinds = ("denoising", "mri", "inpainting", "blur", "ct")
    assert [default_k_rule(build_physics({"kind": kind}, (16, 16))) for kind in kinds] == [
        "sure",
        "discrepancy",
        "discrepancy",
        "discrepancy",
        "splitting",
    ]
    inpaint = build_physics({"kind": "inpainting", "keep_fraction": 1.0, "noise_sigma": 0.1}, (16, 16))
    y = inpaint(torch.full((1, 1, 16, 16), 0.5), rng=torch.Generator().manual_seed(0))
    fits = {
        k: Reconstruction(y, 0.0, parameters={"sigma": 0.1}, extras={"residual_sq": torch.tensor([float(k)])})
        for k in (1, 2)
    }
    assert select_k(None, y, inpaint, [1, 2], fits=fits).rule == "discrepancy"
    # a solver that records no noise level: the physics' own is used (m sigma^2 = 2.56 here)
    bare = {k: Reconstruction(y, 0.0, extras={"residual_sq": torch.tensor([2.0 * k])}) for k in (1, 2)}
    assert select_k(None, y, inpaint, [1, 2], fits=bare).value.tolist() == [1]
    bare[1].extras["residual_sq"], bare[2].extras["residual_sq"] = torch.tensor([3.0]), torch.tensor([2.5])
    assert select_k(None, y, inpaint, [1, 2], fits=bare).value.tolist() == [2]
    with pytest.raises(ValueError, match="'auto', 'discrepancy', 'sure', 'splitting'"):
        select_k(None, y, inpaint, [1, 2], rule="stein")
    with pytest.raises(ValueError, match="n_splits must be an integer >= 1, got 0"):
        select_k(None, y, inpaint, [1, 2], rule="splitting", n_splits=0)


def test_one_standard_error_rule_takes_the_smallest_k_the_hold_outs_cannot_tell_from_the_best():
    from deepinv_tunable.tuning import one_standard_error_k

    # example 0: k = 1 trails the best (k = 4) by 1 on average with a per-split spread of 2
    # (SE 2/sqrt(3) = 1.15): admissible. k = 2 trails by 0.2 with no spread: not admissible.
    # example 1: k = 1 trails by 3 +- 0 on every split: a real difference; k = 2 is the best.
    best = torch.tensor([[10.0, 10.0], [12.0, 11.0], [8.0, 9.0]])  # (J = 3, B = 2)
    scores = {
        4: best,
        1: best + torch.tensor([[1.0, 3.0], [-1.0, 3.0], [3.0, 3.0]]),
        2: best + torch.tensor([[0.2, -0.5], [0.2, -0.5], [0.2, -0.5]]),
    }
    assert one_standard_error_k(scores).tolist() == [1, 2]
    # c = 0 is the plain minimum of the summed score
    summed = torch.stack([scores[k].sum(0) for k in (1, 2, 4)])
    assert one_standard_error_k(scores, se_factor=0.0).tolist() == [[1, 2, 4][i] for i in summed.argmin(0)] == [4, 2]
    # a wider tolerance admits k = 1 in example 1 only once c * SE reaches its trail of 3 + 0.5
    assert one_standard_error_k(scores, se_factor=1e6).tolist() == [1, 2]
    # one hold-out has no spread: the plain minimum
    assert one_standard_error_k({k: v[:1] for k, v in scores.items()}).tolist() == [4, 2]


def test_one_standard_error_rule_refuses_bad_scores():
    from deepinv_tunable.tuning import one_standard_error_k

    good = torch.ones(3, 2)
    with pytest.raises(ValueError, match="se_factor must be a finite number >= 0"):
        one_standard_error_k({1: good, 2: good}, se_factor=-1.0)
    with pytest.raises(ValueError, match=r"one shape, got shapes \[\(3,\), \(3, 2\)\]"):
        one_standard_error_k({1: good, 2: torch.ones(3)})
    with pytest.raises(ValueError, match="finite"):
        one_standard_error_k({1: good, 2: torch.full((3, 2), float("nan"))})
    with pytest.raises(ValueError, match="non-empty dict"):
        one_standard_error_k({})


def test_select_k_splitting_chooses_by_the_one_standard_error_rule_over_its_hold_outs():
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.tuning import one_standard_error_k, select_k

    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (16, 16))
    y = physics(torch.full((2, 1, 16, 16), 0.5), rng=torch.Generator().manual_seed(0))
    for se_factor in (0.0, 1.0):
        sel = select_k(_KeepsItsStart(), y, physics, [1, 2], rule="splitting", n_splits=4, se_factor=se_factor)
        assert sel.split_scores[1].shape == (4, 2)
        assert torch.equal(sel.value, one_standard_error_k(sel.split_scores, se_factor))
        assert all(torch.allclose(sel.table[k], sel.split_scores[k].sum(0)) for k in (1, 2))
        # the one result type of every chooser: 4 hold-outs x 2 sizes, then the final solve
        assert sel.name == "k" and sel.n_splits == 4 and sel.n_solves == 4 * 2 + 1 and sel.bounds == (1, 2)
        assert json.loads(json.dumps(sel.as_dict()))["value"] == sel.value.tolist()
    with pytest.raises(ValueError, match="se_factor must be a finite number >= 0, got -0.5"):
        select_k(_KeepsItsStart(), y, physics, [1, 2], rule="splitting", se_factor=-0.5)


class _SeededShrinkage:
    """A 'sampler': x = a_k y + 0.01 eps, with a_k = k / 4 and eps drawn from ``seed`` (a fresh
    draw without one). Its divergence is a_k per entry whatever eps, if the probe redraws the
    fit's eps."""

    stochastic = True

    def __init__(self):
        self.seeds = []

    def reconstruct(self, y, physics, k=None, x_init=None, seed=None):
        from deepinv_tunable.solvers.base import Reconstruction

        self.seeds.append(seed)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        eps = torch.randn(y.shape, generator=g, dtype=y.dtype)
        x = torch.as_tensor(k, dtype=y.dtype).reshape(-1, 1, 1, 1) / 4 * y + 0.01 * eps
        return Reconstruction(x, 0.0, k=k, extras={"residual_sq": (x - y).flatten(1).pow(2).sum(1)})


def test_select_k_sure_is_the_closed_form_when_the_probe_redraws_the_fits_noise():
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.tuning import select_k

    sigma = 0.1
    physics = build_physics({"kind": "denoising", "noise_sigma": sigma}, (16, 16))
    y = physics(torch.full((2, 1, 16, 16), 0.5), rng=torch.Generator().manual_seed(0)).double()
    sampler = _SeededShrinkage()
    sel = select_k(sampler, y, physics, [1, 2, 4], rule="sure", solve_kwargs={"seed": 3})
    assert sampler.seeds == [3] * 6  # a fit and a probe per k, each with the seed
    # the probe b of select_k's seed (0), the same for every k: the Monte-Carlo divergence of
    # a_k y is exactly a_k mean(b^2)
    b_sq = torch.empty_like(y).normal_(generator=torch.Generator().manual_seed(0)).flatten(1).pow(2).mean(1)
    for k in (1, 2, 4):
        fit = sampler.reconstruct(y, physics, k=k, seed=3).x
        closed = (fit - y).flatten(1).pow(2).mean(1) - sigma**2 + 2 * sigma**2 * k / 4 * b_sq
        assert torch.allclose(sel.table[k].double(), closed, atol=1e-7), k
    # the true risk of a_k y is smallest for a_k = 1 here (signal 0.5 >> noise): k = 4
    assert sel.value.tolist() == [4, 4]
    with pytest.raises(ValueError, match=r"stochastic solver \(_SeededShrinkage\) needs solve_kwargs=\{'seed': ...\}"):
        select_k(sampler, y, physics, [1, 2, 4], rule="sure")
    assert len(sampler.seeds) == 6 + 3  # refused before any solve


def test_recipes_offer_exactly_the_k_rules():
    """A recipe's ``k_rule`` names and ``select_k``'s rules agree (a rule added to one is offered
    by the other)."""
    import typing

    from deepinv_tunable.recipes.schema import LatentMAPParams
    from deepinv_tunable.tuning import K_RULES

    offered = typing.get_args(LatentMAPParams.model_fields["k_rule"].annotation)
    assert sorted(offered) == sorted(K_RULES)
