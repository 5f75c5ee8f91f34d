"""The spectrum of a trained generator: a planted linear generator recovered in truncation order,
and the closed-form risk of each prefix (``deepinv_tunable.tuning.spectrum``)."""

import pytest
import torch

from deepinv_tunable.tuning import generator_spectrum, linear_denoising_mse, optimal_k_linear

F64 = torch.float64


class _PlantedLinear(torch.nn.Module):
    """decode(z) = U diag(c) z on a (2, 3, 4) latent: orthonormal columns of norm c_i."""

    latent_shape = (2, 3, 4)
    latent_dim = 24

    def __init__(self, c):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.u, _ = torch.linalg.qr(torch.randn(40, 24, generator=g, dtype=F64))
        self.c = torch.as_tensor(c, dtype=F64)

    def decode(self, z, k=None):
        return ((z.flatten(1).to(F64) * self.c) @ self.u.T).reshape(-1, 1, 5, 8)


def test_generator_spectrum_recovers_a_planted_linear_generator_in_truncation_order():
    c = torch.linspace(4.0, 0.5, 24, dtype=F64)[torch.randperm(24, generator=torch.Generator().manual_seed(0))]
    g = torch.Generator().manual_seed(1)
    spread = torch.linspace(0.5, 2.0, 24, dtype=F64)
    latents = (torch.randn(500, 24, generator=g, dtype=F64) * spread + 0.3).reshape(500, 2, 3, 4)
    s = generator_spectrum(_PlantedLinear(c), latents, batch_size=5)
    expected = latents.flatten(1).std(0) * c  # the sample spread, the planted column norms
    assert torch.allclose(s, expected, rtol=1e-6)
    # stride: measured coordinates exact, each held over the next stride - 1
    coarse = generator_spectrum(_PlantedLinear(c), latents, stride=5)
    assert torch.allclose(coarse[::5], expected[::5], rtol=1e-6)
    assert torch.equal(coarse[1:5], coarse[:1].expand(4)) and coarse.numel() == 24
    with pytest.raises(ValueError, match="latents must be"):
        generator_spectrum(_PlantedLinear(c), latents[:, 0])


def test_closed_form_in_truncation_order_is_the_per_coordinate_sum_and_its_best_prefix():
    s = torch.tensor([2.0, 0.1, 1.5, 0.05, 0.8, 0.02], dtype=F64)  # not sorted: a trained model's order
    sigma, lam = 0.3, 0.01
    with pytest.raises(ValueError, match="non-increasing"):
        linear_denoising_mse(s, sigma, lam, 2)
    shrink = s**2 / (s**2 + lam)
    kept = (1 - shrink) ** 2 * s**2 + shrink**2 * sigma**2
    table = linear_denoising_mse(s, sigma, lam, torch.arange(7), truncation_order=True)
    for k in range(7):
        assert float(table[k]) == pytest.approx(float(kept[:k].sum() + (s[k:] ** 2).sum()), rel=1e-12)
    # coordinates 2 and 4 help, 1 and 3 hurt: the best prefix stops after the 5th coordinate
    assert optimal_k_linear(s, sigma, lam, truncation_order=True) == int(table.argmin()) == 5
    # on a sorted spectrum the prefix search and the counting formula agree
    ordered = s.sort(descending=True).values
    for sig in (0.05, 0.3, 1.0, 3.0):
        assert optimal_k_linear(ordered, sig, lam, truncation_order=True) == optimal_k_linear(ordered, sig, lam)
