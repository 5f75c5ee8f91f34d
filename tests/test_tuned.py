"""``"auto"`` is one mechanism: :class:`Tuned` on the solver's plan (issue 48, item 1)."""

import pytest
import torch

from deepinv_tunable.physics import build_physics
from deepinv_tunable.solvers import DPIR, TVPGD
from deepinv_tunable.solvers.base import Reconstruction, TunableReconstructor
from deepinv_tunable.tuning import AutoK, Tuned, TuningPlan


class Shrink(TunableReconstructor):
    """``a y + (1 - a) mean(y)``: its residual is ``(1 - a)^2 ||y - mean||^2``, so the
    discrepancy principle's root is known in closed form."""

    tunable = ("a",)

    def __init__(self, a="auto"):
        super().__init__()
        self.a = a
        self.solves = 0

    def _estimate(self, a, y):
        self.solves += 1
        return a * y + (1 - a) * y.mean()

    def tuning_plan(self, name, y, physics, **kwargs):
        return TuningPlan(
            candidate=lambda a, y_, ph_, x0: self._estimate(a, y_),
            bounds=(0.05, 1.0),
            finish=lambda choice: Reconstruction(choice.estimate, 0.0, parameters={"a": choice.value}),
            rule="discrepancy",
            options={"tau": 1.0, "n_refine": 12, "log": False},
        )

    def _solve(self, y, physics, a=None, **kwargs):
        a = self.a if a is None else a
        return Reconstruction(self._estimate(float(a), y), 0.0, parameters={"a": float(a)})


def _planted():
    """Denoising of a constant image whose noise is exactly sigma: the residual
    ``(1 - a)^2 m sigma^2`` meets the discrepancy target ``m sigma^2`` at ``a = 0``; with the
    noise scaled by 2 the target is met at ``(1 - a) = 1/2``, a = 0.5."""
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (32, 32))
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = (noise - noise.mean()) / noise.std(unbiased=False)
    return physics, 0.5 + 2 * 0.05 * noise


def test_auto_on_a_solver_chooses_the_planted_root_through_tuned():
    physics, y = _planted()
    result = Shrink().reconstruct(y, physics)
    choice = result.choices["a"]
    assert choice.rule == "discrepancy"
    assert result.parameters["a"] == pytest.approx(0.5, abs=0.01)
    assert choice.value == result.parameters["a"]


def test_a_given_value_never_searches():
    physics, y = _planted()
    solver = Shrink(a=0.3)
    result = solver.reconstruct(y, physics)
    assert solver.solves == 1 and result.choices == {} and result.parameters == {"a": 0.3}


def test_auto_in_the_call_overrides_a_fixed_attribute():
    physics, y = _planted()
    result = Shrink(a=0.3).reconstruct(y, physics, a="auto")
    assert result.parameters["a"] == pytest.approx(0.5, abs=0.01)


def test_tuned_wrapper_equals_the_solvers_own_auto():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 1
    y = physics(x)
    auto = TVPGD(max_iter=15).reconstruct(y, physics)
    wrapped = Tuned(TVPGD(lambda_tv=0.01, max_iter=15), "lambda_tv").reconstruct(y, physics)
    assert wrapped.parameters == auto.parameters
    assert torch.equal(wrapped.x, auto.x)
    assert wrapped.choices["lambda_tv"].tried == auto.choices["lambda_tv"].tried


def test_tuned_overrides_rule_and_bounds():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (32, 32))
    y = physics(torch.full((1, 1, 32, 32), 0.5))
    result = Tuned(TVPGD(max_iter=10), "lambda_tv", rule="sure", bounds=(1e-3, 1e-2)).reconstruct(y, physics)
    choice = result.choices["lambda_tv"]
    assert choice.rule == "sure"
    assert min(choice.tried) >= 1e-3 * 0.999


@pytest.mark.filterwarnings("ignore:sigma = .* at a bound")
def test_dpir_auto_records_an_estimated_noise_level():
    """The plan resolves the noise level once (estimated here: the physics states 0) and the
    choice records that it was estimated, though the search itself was given the level."""
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.0}, (32, 32))
    y = torch.full((1, 1, 32, 32), 0.5) + 0.02 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    choice = DPIR(sigma="auto", denoiser=_Identity(), max_iter=3).reconstruct(y, physics).choices["sigma"]
    assert choice.sigma_estimated is True
    assert choice.sigma == pytest.approx(0.02, rel=0.2)


class _Identity(torch.nn.Module):
    def forward(self, x, sigma=None):
        return x


def test_tuned_refuses_a_parameter_the_solver_does_not_declare():
    with pytest.raises(ValueError, match="no parameter 'max_iter'.*declares \\['lambda_tv'\\]"):
        Tuned(TVPGD(), "max_iter")
    with pytest.raises(ValueError, match="needs the candidate latent sizes"):
        Tuned(TVPGD(), "k")
    with pytest.raises(ValueError, match="low < high"):
        Tuned(TVPGD(), "lambda_tv", bounds=(0.1, 0.01))
    with pytest.raises(TypeError, match="TunableReconstructor"):
        Tuned(torch.nn.Identity(), "lambda_tv")


def test_autok_is_tuned_for_k():
    assert issubclass(AutoK, Tuned)


class TwoKnobs(TunableReconstructor):
    """Two tunable parameters and no joint plan: both 'auto' at once is refused."""

    tunable = ("a", "b")

    def __init__(self):
        super().__init__()
        self.a, self.b = "auto", "auto"

    def _solve(self, y, physics, a=None, b=None):
        return y, 0, {}


def test_a_joint_choice_takes_the_lowest_held_out_score_ties_to_the_smaller_value_and_records_it():
    from deepinv_tunable.tuning import ParameterChoice
    from deepinv_tunable.tuning.joint import JointPlan, grid_choice

    def inner(value, solves):
        return ParameterChoice(
            name="lam",
            value=value,
            rule="splitting",
            tried=[value],
            scores=[0.0],
            bounds=(0, 10),
            at_bound=False,
            sigma=0.1,
            sigma_estimated=False,
            n_solves=solves,
            seconds=1.0,
        )

    plan = JointPlan(
        "beta", (0.0, 0.5, 1.0), [inner(1, 4), inner(2, 5), inner(3, 6)], [0.3, 0.2, 0.2], 2, 3, lambda i, c: (i, c)
    )
    index, choice = grid_choice(plan)
    assert index == 1 and choice.value == 0.5 and choice.tried == [0.0, 0.5, 1.0] and not choice.at_bound
    assert choice.n_solves == 4 + 6 + 3 and choice.n_splits == 2  # the other values' searches and the extra solves
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.1}, (8, 8))
    with pytest.raises(ValueError, match=r"\['a', 'b'\] are all 'auto'; it chooses one parameter at a time"):
        TwoKnobs().reconstruct(torch.rand(1, 1, 8, 8), physics)
