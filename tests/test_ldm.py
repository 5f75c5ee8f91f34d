import deepinv as dinv
import pytest
import torch

from deepinv_tunable.diffusion.consistency import (
    LDPS,
    PSLD,
    AdamDC,
    DataConsistency,
    DDSLocalMAP,
    LatentProblem,
    ScheduledLocalMAP,
)
from deepinv_tunable.diffusion.schedule import add_noise, ddim_update, latent_reverse_step, reverse_steps, tweedie_z0
from deepinv_tunable.nets import LatentUNet, TunableVAE
from deepinv_tunable.nets.truncation import truncate
from deepinv_tunable.physics import build_physics
from deepinv_tunable.solvers import TunableLDMSolver


class IdentityAE(torch.nn.Module):
    """Latent = image (1, n, n): data-consistency steps then have closed forms."""

    def __init__(self, n=8):
        super().__init__()
        self.latent_shape, self.latent_dim = (1, n, n), n * n

    def decode(self, z, k=None):
        return truncate(z, k)

    def encode_mean(self, x):
        return x


def test_reverse_steps_follow_the_ddim_schedule():
    sched = LatentUNet(latent_channels=1, latent_size=8, block_out_channels=(8, 8)).sampling_scheduler()
    steps = reverse_steps(sched, 10, eta=0.5)
    assert len(steps) == 10 and [s.t for s in steps] == sorted((s.t for s in steps), reverse=True)
    assert steps[-1].t_prev == -1 and steps[-1].alpha_bar_prev == 1.0 and steps[-1].noise_std == 0.0
    for s in steps[:-1]:
        assert s.noise_std == pytest.approx(0.5 * float(sched._get_variance(s.t, s.t_prev)) ** 0.5, rel=1e-5)
    assert [s.t for s in reverse_steps(sched, 10, 0.5, start=500)] == [s.t for s in steps if s.t <= 500]
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\], got 2"):
        reverse_steps(sched, 10, eta=2)


def test_deterministic_ddim_with_the_true_noise_lands_on_the_forward_marginal():
    sched = LatentUNet(latent_channels=1, latent_size=8, block_out_channels=(8, 8)).sampling_scheduler()
    z0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for step in reverse_steps(sched, 5, eta=0.0):
        z_t = add_noise(z0, eps, step.alpha_bar)
        torch.testing.assert_close(tweedie_z0(z_t, eps, step.alpha_bar), z0, atol=1e-4, rtol=0)
        torch.testing.assert_close(
            ddim_update(z0, eps, step), add_noise(z0, eps, step.alpha_bar_prev), atol=1e-5, rtol=0
        )


def test_dds_local_map_is_the_closed_form_for_inpainting():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.1, "seed": 1}, (8, 8))
    mask = physics.mask.expand(2, 1, 8, 8)
    y = physics(torch.rand(2, 1, 8, 8))
    z0 = torch.rand(2, 1, 8, 8)
    gamma = 0.7
    out = DDSLocalMAP(gamma=gamma).correct_z0(z0, None, LatentProblem(IdentityAE(), physics, y, None))
    # argmin ||m x - y||^2 + gamma ||x - z0||^2 = (m y + gamma z0) / (m + gamma) for a binary mask m
    torch.testing.assert_close(out, (mask * y + gamma * z0) / (mask + gamma), atol=1e-5, rtol=0)


def test_dds_local_map_on_a_subset_of_the_batch_uses_each_rows_own_operator():
    """Per-example masks: the prox of rows [2, 0] of a subset is those rows' closed form, the
    same as on the whole batch (a severity-adaptive sampler runs only the samples that started)."""
    masks = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=masks, noise_model=dinv.physics.GaussianNoise(0.1))
    y = physics(torch.rand(3, 1, 8, 8))
    z0 = torch.rand(3, 1, 8, 8)
    problem = LatentProblem(IdentityAE(), physics, y, None)
    whole = DDSLocalMAP(gamma=0.7).correct_z0(z0, None, problem)
    rows = torch.tensor([2, 0])
    part = DDSLocalMAP(gamma=0.7).correct_z0(z0[rows], None, problem.subset(rows))
    closed = (masks * y + 0.7 * z0) / (masks + 0.7)
    torch.testing.assert_close(part, closed[rows], atol=1e-5, rtol=0)
    torch.testing.assert_close(part, whole[rows], atol=1e-6, rtol=0)


def test_scheduled_local_map_is_the_closed_form_with_diffpirs_weight():
    """gamma_t = lambda sigma^2 / sigma_t^2, sigma_t^2 = (1 - abar) / abar: at abar = 0.2 and
    lambda = 2, sigma = 0.1 the proximity weight is 2 * 0.01 / 4 = 0.005 (the data dominate)."""
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.1, "seed": 1}, (8, 8))
    mask = physics.mask.expand(2, 1, 8, 8)
    y, z0 = physics(torch.rand(2, 1, 8, 8)), torch.rand(2, 1, 8, 8)
    step = reverse_steps(
        LatentUNet(latent_channels=1, latent_size=8, block_out_channels=(8, 8)).sampling_scheduler(), 4, 0.0
    )[1]
    step = type(step)(step.t, step.t_prev, 0.2, step.alpha_bar_prev, step.noise_std)
    out = ScheduledLocalMAP(lambda_=2.0).correct_z0(z0, step, LatentProblem(IdentityAE(), physics, y, None))
    gamma = 2.0 * 0.1**2 / (0.8 / 0.2)
    torch.testing.assert_close(out, (mask * y + gamma * z0) / (mask + gamma), atol=1e-5, rtol=0)
    # a stated sigma overrides the physics' (here 0.2: four times the weight)
    out = ScheduledLocalMAP(lambda_=2.0, sigma=0.2).correct_z0(z0, step, LatentProblem(IdentityAE(), physics, y, None))
    torch.testing.assert_close(out, (mask * y + 4 * gamma * z0) / (mask + 4 * gamma), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"lambda_ must be > 0 or 'auto', got 0"):
        ScheduledLocalMAP(lambda_=0)


def test_scheduled_local_map_auto_lambda_follows_the_operator():
    """1 for operators that keep what they measure (masks, denoising), 100 for blur and CT."""
    auto = ScheduledLocalMAP()
    x = torch.rand(1, 1, 16, 16)
    for spec, expected in [
        ({"kind": "inpainting", "keep_fraction": 0.5}, 1.0),
        ({"kind": "denoising"}, 1.0),
        ({"kind": "mri", "acceleration": 4}, 1.0),
        ({"kind": "blur", "blur_sigma": 2.0}, 100.0),
        ({"kind": "ct", "n_views": 20}, 100.0),
    ]:
        physics = build_physics({**spec, "noise_sigma": 0.01, "seed": 0}, (16, 16))
        image = torch.cat([x, 0 * x], 1) if spec["kind"] == "mri" else x
        problem = LatentProblem(IdentityAE(16), physics, physics(image), None)
        assert auto.resolved_lambda(problem) == expected, spec["kind"]


class ShiftZ0(DataConsistency):
    """Moves the clean estimate by a known offset."""

    def __init__(self, delta):
        self.delta = delta

    def correct_z0(self, z0, step, problem):
        return z0 + self.delta


def test_diffpir_transition_renoises_the_corrected_estimate_with_its_own_noise():
    """zeta = 1: z' = sqrt(abar') z0_dc + sqrt(1 - abar') xi; zeta = 0: the direction term uses the
    noise re-derived from the corrected estimate, eps - sqrt(abar / (1 - abar)) delta."""
    unet = LatentUNet(latent_channels=1, latent_size=8, block_out_channels=(8, 8))
    sched = unet.sampling_scheduler()
    z, xi, delta = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), 0.3 * torch.randn(2, 1, 8, 8)
    problem = LatentProblem(IdentityAE(), None, None, None)
    with torch.no_grad():
        for zeta in (1.0, 0.0):
            step = reverse_steps(sched, 5, eta=0.5, zeta=zeta)[1]
            assert step.rederive_eps and step.noise_std == pytest.approx((zeta * (1 - step.alpha_bar_prev)) ** 0.5)
            eps = unet(z, step.t)
            z0_dc = tweedie_z0(z, eps, step.alpha_bar) + delta
            z_prev, z0_out = latent_reverse_step(unet, z, step, ShiftZ0(delta), problem, noise=xi)
            torch.testing.assert_close(z0_out, z0_dc)
            if zeta == 1.0:
                expected = step.alpha_bar_prev**0.5 * z0_dc + (1 - step.alpha_bar_prev) ** 0.5 * xi
            else:
                eps_dc = eps - (step.alpha_bar / (1 - step.alpha_bar)) ** 0.5 * delta
                expected = step.alpha_bar_prev**0.5 * z0_dc + (1 - step.alpha_bar_prev) ** 0.5 * eps_dc
            torch.testing.assert_close(z_prev, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"zeta must be in \[0, 1\] \(or None for DDIM\), got 1.5"):
        reverse_steps(sched, 5, 0.1, zeta=1.5)


def test_adam_dc_lowers_the_data_error_and_only_moves_kept_coordinates():
    sched = LatentUNet(latent_channels=1, latent_size=8, block_out_channels=(8, 8)).sampling_scheduler()
    step = reverse_steps(sched, 10, eta=1.0)[3]
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (8, 8))
    y = physics(torch.rand(3, 1, 8, 8))
    problem = LatentProblem(IdentityAE(), physics, y, k=40)
    z0 = torch.randn(3, 1, 8, 8)
    out = AdamDC(max_iter=5, lr=0.05, lambda_f=100.0).correct_z0(z0, step, problem)
    assert bool((problem.residual(out) < problem.residual(z0)).all())
    assert torch.equal(out.flatten(1)[:, 40:], z0.flatten(1)[:, 40:])
    move = (out - z0).flatten(1).norm(dim=1)
    assert bool((move <= step.noise_std * 64**0.5 + 1e-5).all())  # trust radius


def test_ldps_guidance_is_the_normalised_residual_gradient():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.0}, (8, 8))
    y = torch.rand(2, 1, 8, 8)
    z_t = torch.rand(2, 1, 8, 8, requires_grad=True)
    problem = LatentProblem(IdentityAE(), physics, y, k=None)
    g = LDPS(eta=1.5).guidance(z_t, z_t * 1.0, problem)
    diff = (z_t - y).detach()
    expected = 1.5 * 2 * diff / diff.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-5)


def tiny_models(seed=0):
    torch.manual_seed(seed)
    vae = TunableVAE(image_size=(16, 16), block_out_channels=(8, 8), latent_channels=2)
    unet = LatentUNet(latent_channels=2, latent_size=8, block_out_channels=(8, 16))
    return vae, unet


@pytest.mark.parametrize(
    "consistency", [AdamDC(), LDPS(), PSLD(), DDSLocalMAP(), ScheduledLocalMAP()], ids=lambda c: type(c).__name__
)
def test_sampler_runs_with_every_consistency_step_and_keeps_the_truncation(consistency):
    vae, unet = tiny_models()
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05}, (16, 16))
    y = physics(torch.rand(2, 1, 16, 16))
    # the sampler itself: no measurement guard (an untrained prior would fall back, see below)
    solver = TunableLDMSolver(vae, unet, max_iter=3, consistency=consistency, max_chi2=float("inf"))
    out = solver.reconstruct(y, physics, k=torch.tensor([10, 100]), seed=1)
    assert out.nfe == 3 and torch.isfinite(out.x).all()
    latent = out.extras["latent"].flatten(1)
    assert not latent[0, 10:].any() and not latent[1, 100:].any() and latent[1, :100].abs().sum() > 0
    again = solver.reconstruct(y, physics, k=torch.tensor([10, 100]), seed=1)
    assert torch.equal(out.x, again.x)
    assert not torch.equal(out.x, solver.reconstruct(y, physics, k=torch.tensor([10, 100]), seed=2).x)


def test_an_image_space_step_ends_the_sampler_on_its_own_proximal_image():
    """The default step's sampler returns prox(D(z_0)) at the last step's weight (so the
    autoencoder's round trip is not left in the data misfit); a latent step returns D(z_0)."""
    vae, unet = tiny_models()
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05, "seed": 0}, (16, 16))
    y = physics(torch.rand(2, 1, 16, 16))
    for step, finishes in [(ScheduledLocalMAP(), True), (AdamDC(), False)]:
        solver = TunableLDMSolver(
            vae, unet, max_iter=3, consistency=step, max_chi2=float("inf"), final_consistency=False
        )
        out = solver.reconstruct(y, physics, seed=0)
        problem = LatentProblem(vae, physics, y, None, scale=solver.scale)
        decoded = problem.image(out.extras["latent"])
        expected = step.image_step(decoded, solver.steps()[-1], problem) if finishes else decoded
        torch.testing.assert_close(out.x, expected)
        assert finishes == bool((out.x - decoded).abs().max() > 1e-4)
        # the k rules score the prior's own fit, before the finishing step
        torch.testing.assert_close(out.extras["residual_sq"], (physics.A(decoded) - y).pow(2).flatten(1).sum(1))


def test_the_final_weighted_data_step_is_on_by_default_for_a_linear_physics_only():
    """Default ``final_consistency=None``: the weighted data-consistency step ends the solve on a
    linear physics (a finite weight per sample), not on a nonlinear one (phase retrieval has no
    prox); ``False`` turns it off (NaN weights: no step taken)."""
    vae, unet = tiny_models()
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05, "seed": 0}, (16, 16))
    y = physics(torch.rand(2, 1, 16, 16))
    on = TunableLDMSolver(vae, unet, max_iter=3, max_chi2=float("inf")).reconstruct(y, physics, seed=0)
    off = TunableLDMSolver(vae, unet, max_iter=3, max_chi2=float("inf"), final_consistency=False)
    off = off.reconstruct(y, physics, seed=0)
    assert torch.isfinite(on.dc_weight).all() and torch.isnan(off.dc_weight).all()
    assert not torch.equal(on.x, off.x)
    retrieval = build_physics({"kind": "phase_retrieval", "oversampling": 2.0, "noise_sigma": 0.01}, (16, 16))
    z = retrieval(torch.rand(1, 1, 16, 16).to(torch.cfloat))
    out = TunableLDMSolver(vae, unet, max_iter=2, consistency=LDPS()).reconstruct(z, retrieval, seed=0)
    assert torch.isnan(out.dc_weight).all()


def test_an_estimate_worse_than_the_measurements_falls_back_to_them_loudly():
    """Untrained networks explain 50% inpainting data far worse than the observed pixels do
    (chi2 in the hundreds against 0): every sample is replaced by the measurement baseline, with a
    warning, its flag and a doubt in the diagnostics; the estimate's own chi2 is kept."""
    from deepinv_tunable.solvers import MeasurementBaseline

    vae, unet = tiny_models()
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.05}, (16, 16))
    y = physics(torch.rand(2, 1, 16, 16))
    with pytest.warns(RuntimeWarning, match=r"TunableLDMSolver: samples \[0, 1\] explain the measurements worse"):
        out = TunableLDMSolver(vae, unet, max_iter=3).reconstruct(y, physics, seed=1)
    assert out.fallback.tolist() == [True, True] and (out.chi2_estimate > 50).all()
    torch.testing.assert_close(out.x, MeasurementBaseline()(y, physics))
    assert any("replaced by it" in d for d in out.diagnostics().doubts("tunable_ldm", [7, 8]))


def test_sampler_handles_nonlinear_physics_and_rejects_bad_settings():
    vae, unet = tiny_models()
    physics = build_physics({"kind": "phase_retrieval", "oversampling": 2.0, "noise_sigma": 0.01}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16).to(torch.cfloat))
    out = TunableLDMSolver(vae, unet, max_iter=2, consistency=LDPS()).reconstruct(y, physics, seed=0)
    assert out.x.is_complex() and torch.isfinite(out.x.abs()).all()
    with pytest.raises(TypeError, match=r"PSLD's gluing term needs a linear physics, got RandomPhaseRetrieval"):
        TunableLDMSolver(vae, unet, max_iter=2, consistency=PSLD())(y, physics)
    with pytest.raises(ValueError, match=r"eta must be > 0"):
        TunableLDMSolver(vae, unet, eta=0.0)
    with pytest.raises(ValueError, match=r"k = 600 is outside \[1, 128\]"):
        TunableLDMSolver(vae, unet)(y, physics, k=600)
    other = LatentUNet(latent_channels=4, latent_size=8, block_out_channels=(8, 16))
    with pytest.raises(ValueError, match=r"share one latent shape, got {'VAE': \(2, 8, 8\), 'UNet': \(4, 8, 8\)}"):
        TunableLDMSolver(vae, other)
    assert isinstance(physics, dinv.physics.Physics)


def test_recipes_offer_exactly_the_registered_consistency_steps():
    """The recipe schema's ``consistency`` names and the one name -> step table agree, so a recipe
    can neither name a step the registry lacks nor miss one it has."""
    import typing

    from deepinv_tunable.diffusion.consistency import CONSISTENCY_STEPS
    from deepinv_tunable.recipes.schema import TunableLDMParams

    offered = typing.get_args(TunableLDMParams.model_fields["consistency"].annotation)
    assert sorted(offered) == sorted(CONSISTENCY_STEPS)
    assert CONSISTENCY_STEPS["dds"] is DDSLocalMAP and CONSISTENCY_STEPS["adam_dc"] is AdamDC


def test_tunable_ldm_solver_from_pretrained_loads_the_recorded_pair(tmp_path):
    """No argument: the shipped UNet and the autoencoder its config records; a folder whose UNet
    records no autoencoder, or one whose latents do not fit, is refused with the reason."""
    solver = TunableLDMSolver.from_pretrained(max_iter=7)
    assert solver.unet.config["vae"] == "tunable_vae_f4c12_mri128" and solver.max_iter == 7
    assert tuple(solver.vae.latent_shape) == (12, 32, 32)
    old = TunableLDMSolver.from_pretrained("tunable_ldm_mri128")  # the f8 pair stays loadable by name
    assert tuple(old.vae.latent_shape) == (8, 16, 16)
    LatentUNet(latent_channels=8, latent_size=16, block_out_channels=(8, 16)).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="does not record the autoencoder"):
        TunableLDMSolver.from_pretrained(tmp_path / "bare")
    LatentUNet(latent_channels=4, latent_size=32, block_out_channels=(8, 16), vae="tunable_vae_mri128").save_pretrained(
        tmp_path / "misfit"
    )
    with pytest.raises(ValueError, match=r"works on latents \(4, 32, 32\).*gives \(8, 16, 16\)"):
        TunableLDMSolver.from_pretrained(tmp_path / "misfit")
    with pytest.raises(ValueError, match="not a LatentUNet"):
        TunableLDMSolver.from_pretrained("tunable_vae_mri128")
