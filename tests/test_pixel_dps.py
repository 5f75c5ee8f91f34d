"""PixelDPS (deepinv's DPS configured for the diffusion pixel prior) and the real-image view of a
physics it samples through."""

import deepinv as dinv
import pytest
import torch

from deepinv_tunable.physics import build_physics, real_image_physics, to_physics_domain
from deepinv_tunable.solvers import PixelDPS
from deepinv_tunable.solvers.pixel_dps import DPS_STEPS, DPS_WEIGHT


class PlantedDenoiser(dinv.models.Denoiser):
    """Knows the answer: every noisy input of one channel denoises to ``truth``."""

    def __init__(self, truth: torch.Tensor):
        super().__init__()
        self.truth = truth

    def forward(self, x, sigma=None, **kwargs):
        assert x.shape[1] == 1, f"the prior must see real single-channel images, got {tuple(x.shape)}"
        return self.truth.to(x.dtype) + 0.0 * x  # in the graph, with a zero gradient


@pytest.mark.parametrize("kind", ["mri", "ct", "blur"])
def test_the_real_image_view_of_a_physics_is_its_adjoint_pair(kind):
    physics = build_physics({"kind": kind, "noise_sigma": 0.01, "seed": 0}, (32, 32))
    real = real_image_physics(physics)
    if kind != "mri":
        assert real is physics  # already on real single-channel images
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)
    y = torch.randn(physics.A(to_physics_domain(x, physics)).shape, generator=g)
    assert torch.allclose(real.A(x), physics.A(to_physics_domain(x, physics)))
    lhs, rhs = float((real.A(x) * y).sum()), float((x * real.A_adjoint(y)).sum())
    assert abs(lhs - rhs) <= 1e-4 * max(abs(lhs), 1.0)
    assert real.A_adjoint(y).shape == x.shape


def test_pixel_dps_configures_deepinv_dps_and_samples_mri_as_a_real_image():
    truth = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (32, 32))
    y = physics(to_physics_domain(truth, physics))
    sampler = PixelDPS(PlantedDenoiser(truth), num_steps=10, rng=torch.Generator().manual_seed(0))
    assert isinstance(sampler, dinv.sampling.DPS)
    assert sampler.data_fidelity.guidance == "annealed" and sampler.data_fidelity.weight == DPS_WEIGHT
    assert len(PixelDPS(PlantedDenoiser(truth)).solver.timesteps) == DPS_STEPS
    x = sampler(y, physics)
    # deepinv's 2-channel MRI convention, imaginary channel zero; the planted answer comes back
    assert x.shape == (1, 2, 32, 32) and float(x[:, 1].abs().max()) == 0.0
    assert float((x[:, :1].float() - truth).abs().max()) < 1e-3
