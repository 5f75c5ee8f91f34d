"""LatentMAPTV: latent MAP plus a TV-regularised deviation (known answers and bad input)."""

import pytest
import torch

from deepinv_tunable.nets import TunableVAE
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.recipes.schema import RecipeError, parse_recipe
from deepinv_tunable.solvers import TVPGD, LatentMAP, LatentMAPTV, Reconstruction


def _tiny_latent_map(size: int = 32) -> LatentMAP:
    torch.manual_seed(0)
    return LatentMAP(TunableVAE(image_size=(size, size), block_out_channels=(8, 8), latent_channels=2), max_iter=2)


class _Oracle(LatentMAP):
    """A latent MAP whose generator 'returns' a fixed image (to plant what it can represent)."""

    def __init__(self, image: torch.Tensor):
        super().__init__(TunableVAE(image_size=image.shape[-2:], block_out_channels=(8, 8), latent_channels=2))
        self.image = image

    def _solve(self, y, physics, k=None, **kwargs):
        return Reconstruction(x=self.image.clone(), wall_time=0.0, n_iter=0, k=k, nfe=0)


def test_beta_zero_is_plain_tv():
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.6, "noise_sigma": 0.02, "seed": 1}, (32, 32))
    torch.manual_seed(1)
    y = physics(torch.rand(2, 1, 32, 32))
    hybrid = LatentMAPTV(_tiny_latent_map(), lambda_tv=0.03, beta=0.0, max_iter=20)
    assert torch.allclose(hybrid(y, physics), TVPGD(lambda_tv=0.03, max_iter=20)(y, physics), atol=1e-6)


def test_no_deviation_when_the_generator_explains_the_data():
    """Noiseless data of the generator's own image: the residual measurements are zero, the
    deviation stays exactly zero and the estimate is the generator's image."""
    torch.manual_seed(2)
    image = torch.rand(1, 1, 32, 32)
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "seed": 2}, (32, 32))
    out = LatentMAPTV(_Oracle(image), lambda_tv=0.05, max_iter=30).reconstruct(physics(image), physics)
    assert torch.equal(out.x, image)
    assert out.parameters["beta"] == 1.0 and out.parameters["lambda_tv"] == 0.05


def test_planted_sparse_deviation_is_recovered():
    """Truth = texture the generator represents + a square it does not. Denoising: the hybrid
    recovers both; TV alone loses the texture, the generator alone misses the square."""
    size = 48
    grid = torch.linspace(0, 6.28 * 6, size)
    texture = 0.3 + 0.2 * torch.sin(grid)[None, :] * torch.cos(grid)[:, None]
    square = torch.zeros(size, size)
    square[14:34, 14:34] = 0.4
    truth = (texture + square)[None, None]
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.05}, (size, size))
    torch.manual_seed(3)
    y = physics(truth)
    generator_image = texture[None, None].clone()
    hybrid = LatentMAPTV(_Oracle(generator_image), lambda_tv=0.05, max_iter=100)(y, physics)
    tv = TVPGD(lambda_tv=0.05, max_iter=100)(y, physics)

    def mse(x):
        return float((x - truth).pow(2).mean())

    assert mse(hybrid) < 0.1 * mse(generator_image)
    assert mse(hybrid) < 0.25 * mse(tv)
    assert mse(hybrid) < 0.25 * mse(y)


def test_input_is_not_modified_and_k_is_passed_through():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (32, 32))
    torch.manual_seed(4)
    y = physics(torch.rand(1, 2, 32, 32))
    before = y.clone()
    out = LatentMAPTV(_tiny_latent_map(), max_iter=3).reconstruct(y, physics, k=100)
    assert torch.equal(y, before)
    assert out.k == 100 and out.x.shape == (1, 2, 32, 32)
    assert out.n_iter == 2 + 3


def test_per_call_overrides_give_the_closed_composition():
    """x = beta * g + TVPGD(y - beta * A g) for the per-call beta and lambda_tv, whatever the
    solver was built with; beta = 0 per call is plain TV."""
    torch.manual_seed(5)
    g = torch.rand(1, 1, 32, 32)
    physics = build_physics({"kind": "inpainting", "keep_fraction": 0.7, "noise_sigma": 0.02, "seed": 5}, (32, 32))
    y = physics(torch.rand(1, 1, 32, 32))
    hybrid = LatentMAPTV(_Oracle(g), lambda_tv=0.5, beta=1.0, max_iter=15)
    out = hybrid.reconstruct(y, physics, beta=0.3, lambda_tv=0.02)
    expected = 0.3 * g + TVPGD(lambda_tv=0.02, max_iter=15)(y - 0.3 * physics.A(g), physics)
    assert torch.allclose(out.x, expected, atol=1e-6)
    assert out.parameters["beta"] == 0.3 and out.parameters["lambda_tv"] == 0.02
    assert torch.allclose(
        hybrid(y, physics, beta=0.0, lambda_tv=0.02), TVPGD(lambda_tv=0.02, max_iter=15)(y, physics), atol=1e-6
    )
    with pytest.raises(ValueError, match="beta must be in \\[0, 1\\], got 1.5"):
        hybrid(y, physics, beta=1.5)


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match=f"beta must be in \\[0, 1\\], got {beta}"):
        LatentMAPTV(_tiny_latent_map(), beta=beta)


def test_bad_arguments():
    with pytest.raises(TypeError, match="must be a LatentMAP solver, got TVPGD"):
        LatentMAPTV(TVPGD())
    with pytest.raises(ValueError, match="lambda_tv must be >= 0, got -1"):
        LatentMAPTV(_tiny_latent_map(), lambda_tv=-1)
    physics = build_physics({"kind": "phase_retrieval"}, (32, 32))
    y = physics(to_physics_domain(torch.rand(1, 1, 32, 32), physics))
    with pytest.raises(TypeError, match="LatentMAPTV needs a linear physics, got RandomPhaseRetrieval"):
        LatentMAPTV(_tiny_latent_map())(y, physics)


def test_recipe_schema_builds_the_hybrid():
    from deepinv_tunable.recipes.prepared import _solver

    raw = {
        "name": "t",
        "data": {"input": "sample:mni152_t1", "size": [128, 128]},
        "physics": {"kind": "mri", "acceleration": 4},
        "solver": {
            "name": "latent_map_tv",
            "params": {"model": "tunable_vae_f4_mri128", "lambda_tv": 0.01, "beta": 0.5},
        },
    }
    recipe = parse_recipe(raw)
    solver = _solver(recipe)
    assert isinstance(solver, LatentMAPTV) and solver.beta == 0.5 and solver.deviation.lambda_tv == 0.01
    assert solver.latent_map.model.latent_dim == 4096
    raw["solver"]["params"]["k"] = "auto"
    with pytest.raises(RecipeError, match=r"solver\.latent_map_tv\.params\.k"):
        parse_recipe(raw)
    raw["solver"]["params"].update(k="full", k_rule="discrepancy")  # a k-selection key it would ignore
    with pytest.raises(RecipeError, match="k_rule"):
        parse_recipe(raw)
