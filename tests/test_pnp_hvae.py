"""PnP-HVAE as a solver: the fixed point with a planted prior, the annealed schedule as DPIR's
recursion, complex MRI images, per-group temperatures, the schedule rules and batch grouping (the
HVAE itself: ``test_hvae``)."""

from __future__ import annotations

import warnings

import deepinv as dinv
import pytest
import torch
from test_hvae import images

from deepinv_tunable.nets import HVAE
from deepinv_tunable.physics import build_physics
from deepinv_tunable.priors import HVAEDenoiser, corpus_tau_for_sigma, tau_for_sigma
from deepinv_tunable.solvers import PnPHVAE
from deepinv_tunable.solvers.dpir import dpir_schedule
from deepinv_tunable.solvers.pnp_hvae import MIN_SIGMA


class ZeroPrior(HVAE):
    """An 'HVAE' whose reconstruction is 0: PnP-HVAE then has a closed-form fixed point."""

    def reconstruct(self, x, tau=1.0, pad=True):
        self.temperatures(tau)
        return torch.zeros_like(x)


def test_pnp_hvae_fixed_point_with_a_zero_prior_is_the_wiener_shrinkage():
    # x = argmin ||M x - y||^2 / (2 s^2) + ||x||^2 / (2 g^2)  =  g^2 / (g^2 + s^2) * M y
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.6, "noise_sigma": 0.02}, (16, 16))
    y = physics(images(1))
    out = PnPHVAE(ZeroPrior(width=4, groups_per_scale=(1,), gamma=0.04), tau=None, tol=1e-6).reconstruct(y, physics)
    expected = 0.04**2 / (0.04**2 + 0.02**2) * y * physics.mask
    torch.testing.assert_close(out.x, expected)
    assert out.n_iter == 2 and out.extras["residuals"][-1] == 0.0 and out.converged
    assert out.parameters["tau"] == pytest.approx(tau_for_sigma(0.02))


def test_pnp_hvae_on_mri_returns_complex_images_and_reports_history(hvae):
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (16, 16))
    x = images(2)
    y = physics(torch.cat([x, torch.zeros_like(x)], 1))
    with pytest.warns(RuntimeWarning, match="stopped after 4 iterations"):
        out = PnPHVAE(hvae, tau=0.8, max_iter=4, tol=0.0).reconstruct(y, physics, return_iterates=True)
    assert out.x.shape == (2, 2, 16, 16)
    assert out.n_iter == 4 and len(out.extras["residuals"]) == 4 and len(out.iterates) == 5


def test_pnp_hvae_per_group_temperatures_equal_the_uniform_ones_they_repeat(hvae):
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (16, 16))
    x = images(2)
    y = physics(torch.cat([x, torch.zeros_like(x)], 1))
    with pytest.warns(RuntimeWarning, match=r"with tau \[0.8, 0.8, 0.8\]"):
        listed = PnPHVAE(hvae, tau=[0.8, 0.8, 0.8], max_iter=3, tol=0.0).reconstruct(y, physics)
    with pytest.warns(RuntimeWarning, match="with tau 0.8;"):
        single = PnPHVAE(hvae, tau=0.8, max_iter=3, tol=0.0).reconstruct(y, physics)
    torch.testing.assert_close(listed.x, single.x)
    assert listed.parameters["tau"] == [0.8, 0.8, 0.8] and single.parameters["tau"] == 0.8
    fine = PnPHVAE(hvae, tau=[1.0, 1.0, 0.5], max_iter=3, tol=0.0)
    with pytest.warns(RuntimeWarning):
        assert not torch.allclose(fine.reconstruct(y, physics).x, single.x)


def test_pnp_hvae_refuses_nonlinear_physics_and_bad_parameters(hvae):
    with pytest.raises(ValueError, match="tau must lie"):
        PnPHVAE(hvae, tau=1.2)
    with pytest.raises(ValueError, match="gamma must be positive"):
        PnPHVAE(hvae, gamma=0.0)
    physics = dinv.physics.Physics(A=lambda x: x**2)
    with pytest.raises(TypeError, match="linear physics"):
        PnPHVAE(hvae)(torch.rand(1, 1, 16, 16), physics)


class HalvingPrior(HVAE):
    """An 'HVAE' whose reconstruction is x / 2: DPIR's iteration is then a scalar recursion."""

    def reconstruct(self, x, tau=1.0, pad=True):
        self.temperatures(tau)
        return x / 2


def test_pnp_hvae_annealed_schedule_is_dpirs_recursion_with_a_halving_prior():
    # denoising (A = I, f = ||x - y||^2 / 2): HQS from x_0 = y takes z = prox_{g_k f}(x_k) =
    # (x_k + g_k y) / (1 + g_k), then x_{k+1} = z / 2, so x_K = a_K y with a_{k+1} = (a_k + g_k) / (2 (1 + g_k))
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.02}, (16, 16))
    y = physics(images(2))
    out = PnPHVAE(HalvingPrior(width=4, groups_per_scale=(1,)), schedule="anneal", anneal_sigma=0.02).reconstruct(
        y, physics
    )
    _, steps = dpir_schedule(0.02, 8)
    a = 1.0
    for g in steps.tolist():
        a = (a + g) / (2 * (1 + g))
    torch.testing.assert_close(out.x, a * y)
    assert out.extras["schedule"] == "anneal" and out.n_iter == 8 and out.nfe == 8
    assert out.parameters == pytest.approx({"anneal_sigma": 0.02, "tau_final": 1.0}) and not out.choices


def test_real_image_denoiser_denoises_the_real_channel_of_mri_images_and_zeroes_the_imaginary():
    from deepinv_tunable.solvers.pnp_hvae import RealImageDenoiser

    halving = HVAEDenoiser(HalvingPrior(width=4, groups_per_scale=(1,)), sigma_range=(0, 1))
    mri = build_physics({"kind": "mri", "acceleration": 2}, (16, 16))
    x = images(2)
    z = torch.cat([x, 1 + x], 1)  # a non-zero imaginary channel
    torch.testing.assert_close(RealImageDenoiser(halving, mri)(z, 0.05), torch.cat([x / 2, 0 * x], 1))
    blur = build_physics({"kind": "blur"}, (16, 16))
    torch.testing.assert_close(RealImageDenoiser(halving, blur)(x, 0.05), x / 2)


def test_pnp_hvae_auto_schedule_anneals_blur_at_the_noise_std_and_keeps_the_fixed_point_for_mri(hvae):
    from deepinv_tunable.solvers import DPIR

    blur = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.03, "seed": 0}, (16, 16))
    y = blur(images(1))
    out = PnPHVAE(hvae).reconstruct(y, blur)
    assert out.extras["schedule"] == "anneal" and out.parameters["anneal_sigma"] == pytest.approx(0.03)
    # the same solve as the package's DPIR with the HVAE at the corpus temperature map
    same = DPIR(
        sigma=0.03,
        denoiser=HVAEDenoiser(hvae, tau_map=corpus_tau_for_sigma, sigma_range=(0, 1)),
        max_iter=8,
        precision="fp32",
    )
    torch.testing.assert_close(out.x, same(y, blur))
    # noiseless data end at the fixed point's noise floor, not at an impossible level 0
    noiseless = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.0}, (16, 16))
    flat = noiseless(torch.full((1, 1, 16, 16), 0.5))
    assert PnPHVAE(hvae).reconstruct(flat, noiseless).parameters["anneal_sigma"] == pytest.approx(MIN_SIGMA)
    # a given temperature asks for the fixed point; so does MRI
    assert PnPHVAE(hvae, tau=0.8, max_iter=2).reconstruct(y, blur).extras["schedule"] == "fixed"
    mri = build_physics({"kind": "mri", "acceleration": 2, "noise_sigma": 0.01, "seed": 0}, (32, 32))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="stopped after"):
        fixed = PnPHVAE(hvae, max_iter=2, tol=0.0, tune_iter=1).reconstruct(mri(torch.cat([x, 0 * x], 1)), mri)
    assert fixed.extras["schedule"] == "fixed" and "tau" in fixed.choices


def test_pnp_hvae_annealed_schedule_chooses_its_final_level_when_asked(hvae):
    blur = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.03, "seed": 0}, (16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an untrained HVAE may choose at a bound
        out = PnPHVAE(hvae, schedule="anneal", anneal_sigma="auto").reconstruct(blur(images(1)), blur)
    record = out.diagnostics().choices["anneal_sigma"]
    assert 0.015 <= out.parameters["anneal_sigma"] == record["value"] <= 0.09
    assert record["name"] == "anneal_sigma" and out.nfe == 8 * record["n_solves"]


def test_pnp_hvae_schedule_refuses_bad_combinations(hvae):
    with pytest.raises(ValueError, match="schedule must be one of"):
        PnPHVAE(hvae, schedule="cosine")
    with pytest.raises(ValueError, match="tau must be 'auto', got 0.7"):
        PnPHVAE(hvae, tau=0.7, schedule="anneal")
    for bad in (0.0, -1.0, "median"):
        with pytest.raises(ValueError, match="anneal_sigma"):
            PnPHVAE(hvae, anneal_sigma=bad)
    with pytest.raises(ValueError, match="max_iter >= 2"):
        PnPHVAE(hvae, anneal_iter=1)
    blur = build_physics({"kind": "blur", "noise_sigma": 0.01}, (16, 16))
    y = blur(images(1))
    with pytest.raises(ValueError, match="schedule='fixed'"):
        PnPHVAE(hvae, schedule="anneal").reconstruct(y, blur, x_init=y)


def test_pnp_hvae_passes_large_batches_in_groups_with_the_same_result(monkeypatch):
    """``pass_pixels``: a batch whose slices hold more pixels than one HVAE pass may goes through
    in groups of whole slices; the reconstruction is the one-pass result."""
    from deepinv_tunable.nets import HVAE
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.solvers import PnPHVAE

    torch.manual_seed(0)
    hvae = HVAE(width=8, groups_per_scale=(1, 1)).eval()
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.01}, (16, 16))
    y = physics(torch.rand(5, 1, 16, 16))
    whole = PnPHVAE(hvae, tau=0.9, max_iter=3, tol=0.0, pass_pixels=None).reconstruct(y, physics).x
    sizes, real = [], HVAE.reconstruct
    monkeypatch.setattr(HVAE, "reconstruct", lambda self, x, *a, **k: sizes.append(len(x)) or real(self, x, *a, **k))
    grouped = PnPHVAE(hvae, tau=0.9, max_iter=3, tol=0.0, pass_pixels=2 * 16 * 16).reconstruct(y, physics).x
    assert sizes == [2, 2, 1] * 3  # three iterations, each in groups of 2 slices
    torch.testing.assert_close(grouped, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pass_pixels must be >= 1 or None, got 0"):
        PnPHVAE(hvae, pass_pixels=0)
