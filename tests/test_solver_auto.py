"""Each solver's ``"auto"``: TV's weight, PnP-HVAE's temperature, DPIR's final level and the pair
of LatentMAPTV chosen from the measurements, on planted problems with known answers (the rules
and their searches themselves: ``test_autotune``)."""

import warnings

import pytest
import torch
from test_autotune import _phantom

from deepinv_tunable.nets import HVAE
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import TVPGD, PnPHVAE
from deepinv_tunable.solvers.classical import TUNE_SEARCH
from deepinv_tunable.tuning import (
    select_parameter,
)


def test_tv_auto_is_deterministic_records_its_choice_and_leaves_y_alone():
    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.05, "seed": 0}, (32, 32))
    x = _phantom(32)
    y = physics(x)
    before = y.clone()
    solver = TVPGD(lambda_tv="auto", max_iter=20, tune_bounds=(1e-3, 0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a, b = solver.reconstruct(y, physics), solver.reconstruct(y, physics)
    assert torch.equal(y, before) and torch.equal(a.x, b.x)
    record = a.diagnostics().choices["lambda_tv"]
    assert record["value"] == b.choices["lambda_tv"].value
    assert record["rule"] == "discrepancy" and a.parameters["lambda_tv"] == record["value"]
    assert 1e-3 <= record["value"] <= 0.3
    # better than the observation it started from
    assert float((a.x - x).pow(2).mean()) < float((y - x).pow(2).mean())


def test_tv_auto_splitting_rescales_by_the_kept_fraction():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.02, "seed": 0}, (32, 32))
    y = physics(to_physics_domain(_phantom(32), physics))
    out = TVPGD(lambda_tv="auto", max_iter=10).reconstruct(y, physics)
    record = out.diagnostics().choices["lambda_tv"]
    assert record["rule"] == "splitting"
    assert record["value"] < min(
        record["curve"]["values"][i]
        for i in range(len(record["curve"]["values"]))
        if record["curve"]["scores"][i] == min(record["curve"]["scores"])
    )


def test_pnp_hvae_tau_auto_runs_within_bounds_and_records_the_choice():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.05, "seed": 0}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = PnPHVAE(HVAE(width=8, groups_per_scale=(1, 1)), tau="auto", max_iter=3, tune_iter=2).reconstruct(
            y, physics
        )
    record = out.diagnostics().choices["tau"]
    assert 0.5 <= out.parameters["tau"] <= 1.0 and out.parameters["tau"] == record["value"]
    # per hold-out: one pilot, then 3 coarse + 2 golden-section candidates from it
    assert record["n_solves"] == 3 * (1 + 3 + 2) and record["rule"] == "splitting" and record["n_splits"] == 3
    with pytest.raises(ValueError, match="'auto'"):
        PnPHVAE(HVAE(width=8, groups_per_scale=(1, 1)), tau="best")
    for bad in ((1.5, 30), (0.8, 0), "pilot"):
        with pytest.raises(ValueError, match="tune_pilot"):
            PnPHVAE(HVAE(width=8, groups_per_scale=(1, 1)), tune_pilot=bad)


def test_pnp_hvae_discrepancy_candidates_are_full_solves_and_the_chosen_one_is_returned(monkeypatch):
    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.05, "seed": 0}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    hvae = HVAE(width=8, groups_per_scale=(1, 1)).eval()
    solver = PnPHVAE(hvae, tau="auto", max_iter=4, tol=0.0, tune_iter=2, schedule="fixed")
    runs = []
    iterate = solver._iterate

    def counted(y_, physics_, tau, *args):
        runs.append((float(tau), args[-2], args[-3] is None))  # (tau, iterations, from the baseline)
        return iterate(y_, physics_, tau, *args)

    monkeypatch.setattr(solver, "_iterate", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = solver.reconstruct(y, physics)
        fixed = PnPHVAE(hvae, tau=out.parameters["tau"], max_iter=4, tol=0.0).reconstruct(y, physics)
    record = out.diagnostics().choices["tau"]
    assert record["rule"] == "discrepancy" and record["n_solves"] == 5
    # five candidates of max_iter iterations from the measurement baseline, no pilot, no final solve
    assert len(runs) == 5 and all(n == 4 and cold for _, n, cold in runs)
    assert torch.equal(out.x, fixed.x) and out.n_iter == fixed.n_iter == 4


def test_a_shared_start_is_computed_once_per_fit_problem_and_begins_every_candidate():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.05, "seed": 0}, (16, 16))
    y = physics(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    starts, inits = [], []

    def start(y_, physics_):
        starts.append(physics_)
        return torch.full_like(y_, float(len(starts)))  # problem i starts from the constant i

    def solve(value, y_, physics_, x0):
        inits.append((physics_, None if x0 is None else float(x0.flatten()[0])))
        return value * y_

    choice = select_parameter(
        solve,
        y,
        physics,
        (0.1, 1.0),
        rule="splitting",
        n_splits=3,
        n_coarse=3,
        n_refine=2,
        start=start,
        warn=False,
        resolve_bounds=False,
    )
    assert len(starts) == 3 and len({id(p) for p in starts}) == 3  # one per hold-out
    assert choice.n_solves == 3 + 3 * 5 == 3 + len(inits)
    for physics_, first in inits:  # every candidate of a hold-out starts where that hold-out's start put it
        assert first == 1 + [id(p) for p in starts].index(id(physics_))
    starts.clear()
    choice = select_parameter(
        solve, y, physics, (0.1, 1.0), rule="discrepancy", n_coarse=3, n_refine=2, start=start, resolve_bounds=False
    )
    assert len(starts) == 1 and starts[0] is physics and choice.n_solves == 1 + 5


def test_a_choice_at_a_hard_bound_is_the_constrained_optimum_and_not_flagged():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1, "seed": 0}, (32, 32))
    y = physics(torch.full((1, 1, 32, 32), 0.5))
    shrink = lambda a, y, physics, x0: a * y + (1 - a) * y.mean()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no bound warning
        choice = select_parameter(
            shrink, y, physics, (0.0, 0.3), rule="discrepancy", tau=0.25, log=False, hard_bounds=(False, True)
        )
    assert choice.value == pytest.approx(0.3) and not choice.at_bound
    with pytest.warns(RuntimeWarning, match="bound"):  # the low end is not a hard limit
        low = select_parameter(
            shrink, y, physics, (0.9, 1.0), rule="discrepancy", tau=0.25, log=False, hard_bounds=(False, True)
        )
    assert low.value == pytest.approx(0.9) and low.at_bound


def test_dpir_sigma_auto_stays_within_its_noise_relative_bounds():
    from deepinv_tunable.priors import DnCNNDenoiser
    from deepinv_tunable.solvers import DPIR

    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.05, "seed": 0}, (32, 32))
    x = _phantom(32)
    y = physics(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = DPIR(sigma="auto", denoiser=DnCNNDenoiser.from_pretrained(), max_iter=4).reconstruct(y, physics)
    record = out.diagnostics().choices["sigma"]
    assert 0.025 - 1e-9 <= out.parameters["sigma"] == record["value"] <= 0.15 + 1e-9
    # the grid's middle and the neighbour that brackets the root, then 2 root steps
    assert record["rule"] == "discrepancy" and record["n_solves"] == 4
    assert float((out.x - x).pow(2).mean()) < float((y - x).pow(2).mean())


def test_dpir_sigma_auto_plans_for_the_noise_floor_on_noiseless_data():
    from deepinv_tunable.physics import NOISE_FLOOR
    from deepinv_tunable.priors import DnCNNDenoiser
    from deepinv_tunable.solvers import DPIR

    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.0, "seed": 0}, (32, 32))
    x = _phantom(32)
    y = physics(torch.cat([x, torch.zeros_like(x)], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = DPIR(sigma="auto", denoiser=DnCNNDenoiser.from_pretrained(), max_iter=4).reconstruct(y, physics)
    # bounds (0.5, 3) times the floor, not times the ~1e-8 std estimated from noiseless k-space
    assert 0.5 * NOISE_FLOOR - 1e-12 <= out.parameters["sigma"] <= 3 * NOISE_FLOOR + 1e-12
    assert out.diagnostics().choices["sigma"]["sigma_estimated"] is True


def test_latent_map_tv_chooses_lambda_then_beta_from_the_measurements():
    from deepinv_tunable.nets import TunableVAE
    from deepinv_tunable.solvers import LatentMAP, LatentMAPTV

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.02, "seed": 0}, (32, 32))
    y = physics(to_physics_domain(_phantom(32), physics))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = LatentMAPTV(LatentMAP(vae, max_iter=2), lambda_tv="auto", beta="auto", max_iter=5).reconstruct(
            y, physics, k=16
        )
    assert set(out.choices) == {"lambda_tv", "beta"}
    assert 0.0 <= out.parameters["beta"] <= 1.0 and out.parameters["beta"] == out.choices["beta"].value
    assert out.x.shape == (1, 2, 32, 32)


@pytest.mark.parametrize("generator_is_right", [True, False])
def test_latent_map_tv_compares_beta_pairs_on_one_hold_out_under_splitting(generator_is_right):
    from deepinv_tunable.nets import TunableVAE
    from deepinv_tunable.solvers import LatentMAP, LatentMAPTV
    from deepinv_tunable.solvers.base import Reconstruction
    from deepinv_tunable.solvers.latent_tv import BETA_GRID

    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.02, "seed": 0}, (64, 64))
    x = _phantom(64)
    y = physics(to_physics_domain(x, physics))
    # planted generators: the truth itself, or an image of the same mean and no anatomy at all
    wrong = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 * x.mean()
    image = x if generator_is_right else wrong
    fitted = []

    class Planted(LatentMAP):
        def reconstruct(self, y, physics_, **kwargs):
            fitted.append(int((y != 0).sum()))  # measurements the generator was fitted to
            return Reconstruction(x=to_physics_domain(image, physics_), wall_time=0.0)

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = LatentMAPTV(Planted(vae), lambda_tv="auto", beta="auto", max_iter=10).reconstruct(y, physics)
    beta = out.choices["beta"]
    assert beta.rule == "splitting" and beta.tried == list(BETA_GRID) and not beta.at_bound
    assert out.parameters["beta"] == beta.value == (1.0 if generator_is_right else 0.0)
    assert out.parameters["lambda_tv"] == out.choices["lambda_tv"].value
    # the two other betas' lambda searches (5 candidates each) and their final deviations, and
    # the chosen pair's deviation solved again on all the data; a lambda search that ends at an
    # edge of its interval searches once more beyond it (5 more)
    extra = beta.n_solves - (2 * (sum(TUNE_SEARCH) + 1) + 1)
    assert extra >= 0 and extra % sum(TUNE_SEARCH) == 0
    # the generator the scores use saw the kept lines only, the returned one all of them
    assert fitted[0] == int((y != 0).sum()) and fitted[1] < fitted[0]


@pytest.mark.parametrize("generator_is_right", [True, False])
def test_latent_map_tv_ranks_beta_pairs_on_held_out_views_on_ct(generator_is_right):
    from deepinv_tunable.nets import TunableVAE
    from deepinv_tunable.solvers import LatentMAP, LatentMAPTV
    from deepinv_tunable.solvers.base import Reconstruction
    from deepinv_tunable.solvers.latent_tv import BETA_GRID

    physics = build_physics({"kind": "ct", "n_views": 20, "noise_sigma": 0.01, "seed": 0}, (32, 32))
    x = _phantom(32)
    y = physics(x)
    wrong = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 * x.mean()
    image = x if generator_is_right else wrong
    fitted = []

    class Planted(LatentMAP):
        def reconstruct(self, y, physics_, **kwargs):
            fitted.append(int((y != 0).any(-2).sum()))  # views the generator was fitted to
            return Reconstruction(x=image.clone(), wall_time=0.0)

    vae = TunableVAE(image_size=(32, 32), block_out_channels=(8, 8), latent_channels=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = LatentMAPTV(Planted(vae), lambda_tv="auto", beta="auto", max_iter=20).reconstruct(y, physics)
    beta, lam = out.choices["beta"], out.choices["lambda_tv"]
    # the discrepancy principle picks each pair's lambda; the held-out views pick the pair
    assert beta.rule == "splitting" and lam.rule == "discrepancy" and beta.tried == list(BETA_GRID)
    assert out.parameters["beta"] == beta.value == (1.0 if generator_is_right else 0.0)
    assert out.parameters["lambda_tv"] == lam.value and not beta.at_bound
    # the two other betas' lambda searches and the three refits on the kept views
    others = beta.n_solves - len(BETA_GRID)
    assert 2 * 4 <= others <= 2 * 5
    # the generator of the returned image saw all 20 views, the one the scores use 18 of them
    assert fitted == [20, 18]
    # the pair's answer is its own discrepancy-chosen candidate: solving that pair again gives it
    again = LatentMAPTV(Planted(vae), lambda_tv=lam.value, beta=beta.value, max_iter=20).reconstruct(y, physics)
    torch.testing.assert_close(out.x, again.x, atol=1e-5, rtol=0)


def test_tv_auto_returns_the_matching_candidate_instead_of_solving_again():
    physics = build_physics({"kind": "blur", "blur_sigma": 1.0, "noise_sigma": 0.05, "seed": 0}, (32, 32))
    y = physics(_phantom(32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        auto = TVPGD(lambda_tv="auto", max_iter=15).reconstruct(y, physics)
        fixed = TVPGD(lambda_tv=auto.parameters["lambda_tv"], max_iter=15).reconstruct(y, physics)
    torch.testing.assert_close(auto.x, fixed.x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kind,expected",
    [
        ({"kind": "blur", "blur_sigma": 1.0}, 1),  # discrepancy: every candidate on the one physics
        ({"kind": "mri", "acceleration": 4}, 1 + 1),  # splitting: the hold-out's physics, then the full one
    ],
)
def test_tv_auto_runs_the_power_iteration_and_the_baseline_once_per_physics(monkeypatch, kind, expected):
    from deepinv_tunable.solvers import classical

    physics = build_physics({**kind, "noise_sigma": 0.05, "seed": 0}, (32, 32))
    y = physics(to_physics_domain(_phantom(32), physics))
    calls, starts = [], []
    step_size = TVPGD.step_size
    monkeypatch.setattr(TVPGD, "step_size", staticmethod(lambda ph, x: calls.append(ph) or step_size(ph, x)))
    baseline = classical.MeasurementBaseline

    class Counted(baseline):
        def forward(self, y_, physics_, **kwargs):
            starts.append(physics_)
            return super().forward(y_, physics_, **kwargs)

    monkeypatch.setattr(classical, "MeasurementBaseline", Counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = TVPGD(lambda_tv="auto", max_iter=5).reconstruct(y, physics)
        fixed = TVPGD(lambda_tv=out.parameters["lambda_tv"], max_iter=5).reconstruct(y, physics)
    assert out.diagnostics().choices["lambda_tv"]["n_solves"] >= 4
    assert len(calls) == expected + 1 and len({id(ph) for ph in calls[:-1]}) == expected
    assert len(starts) == expected + 1  # the fixed solve adds one of each
    # a shared start is never modified by a candidate: the automatic result is a plain solve
    torch.testing.assert_close(out.x, fixed.x, atol=1e-6, rtol=0)


def test_parameter_search_shows_a_progress_bar_over_its_candidates_when_asked(capsys):
    from deepinv_tunable.physics import build_physics
    from deepinv_tunable.tuning import grid_search, select_parameter

    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (8, 8))
    y = physics(torch.full((1, 1, 8, 8), 0.5))
    shrink = lambda a, y, physics, x0: a * y + (1 - a) * y.mean()  # noqa: E731
    select_parameter(
        shrink, y, physics, (0.01, 1.0), name="a", rule="discrepancy", n_coarse=4, n_refine=2, progress=True
    )
    err = capsys.readouterr().err
    assert "choosing a (discrepancy)" in err and "/6 " in err  # n_coarse + n_refine candidates
    select_parameter(shrink, y, physics, (0.01, 1.0), name="a", rule="discrepancy", progress=False)
    grid_search(lambda v: y * v, y, [0.5, 1.0], param="lam", progress=False)
    assert capsys.readouterr().err == ""
    grid_search(lambda v: y * v, y, [0.5, 1.0], param="lam", progress=True)
    assert "tuning lam (psnr)" in capsys.readouterr().err
