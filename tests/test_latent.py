import math

import pytest
import torch

from deepinv_tunable.nets.truncation import KDistribution, check_k, latent_size, truncate, truncation_mask


def test_mask_is_channel_major_and_per_example():
    mask = truncation_mask((2, 2, 3), torch.tensor([1, 7, 12]))
    assert mask.shape == (3, 2, 2, 3)
    flat = mask.flatten(1)
    assert flat.sum(1).tolist() == [1, 7, 12]
    # k = 7: the whole first channel (6 coordinates) and the first pixel of the second one
    assert mask[1, 0].sum() == 6 and mask[1, 1, 0, 0] == 1 and mask[1, 1].sum() == 1
    assert torch.equal(flat, (torch.arange(12) < torch.tensor([[1], [7], [12]])).float())


def test_truncate_keeps_the_first_k_coordinates_and_leaves_the_input_alone():
    z = torch.randn(3, 4, 5, 5)
    before = z.clone()
    out = truncate(z, torch.tensor([10, 50, 100]))
    assert torch.equal(z, before)
    for b, k in enumerate((10, 50, 100)):
        assert torch.equal(out[b].flatten()[:k], z[b].flatten()[:k])
        assert not out[b].flatten()[k:].any()
    assert truncate(z, None) is z and torch.equal(truncate(z, 100), z)


@pytest.mark.parametrize(
    "k, message",
    [
        (0, r"k = 0 is outside \[1, 12\]"),
        (13, r"k = 13 is outside \[1, 12\]"),
        (torch.tensor([3, 40]), r"k = 40 is outside"),
        (2.5, r"must be an integer"),
    ],
)
def test_bad_k_is_a_clear_error(k, message):
    with pytest.raises(ValueError, match=message):
        truncation_mask((3, 2, 2), k)


def test_batch_of_k_must_match_the_batch():
    with pytest.raises(ValueError, match=r"k holds 2 values for a batch of 3 latents"):
        truncate(torch.zeros(3, 1, 2, 2), torch.tensor([1, 2]))


def test_geometric_sampler_matches_its_law():
    d = KDistribution(K=30, k_min=5, kind="geometric", p=0.15)
    probs = d.probabilities()
    j = torch.arange(26, dtype=torch.float64)
    expected = 0.15 * 0.85**j / (1 - 0.85**26)
    torch.testing.assert_close(probs, expected)
    k = d.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert int(k.min()) == 5 and int(k.max()) <= 30
    freq = torch.bincount(k - 5, minlength=26).double() / len(k)
    assert float((freq - probs).abs().max()) < 0.004
    assert float(k.double().mean()) == pytest.approx(d.mean(), rel=0.01)


def test_tiny_p_over_a_large_latent_is_stable_and_uniform_is_uniform():
    d = KDistribution(K=100_000, k_min=1, p=5e-5)
    k = d.sample(50_000, generator=torch.Generator().manual_seed(1))
    assert int(k.min()) >= 1 and int(k.max()) <= 100_000
    assert float(k.double().mean()) == pytest.approx(d.mean(), rel=0.02)
    u = KDistribution(K=10, k_min=3, kind="uniform").sample(70_000, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(u - 3, minlength=8).double() / len(u)
    assert float((freq - 1 / 8).abs().max()) < 0.006


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"K": 0}, "K must be >= 1"),
        ({"K": 5, "k_min": 6}, r"k_min must be in \[1, K=5\]"),
        ({"K": 5, "p": 0.0}, r"p must be in \(0, 1\]"),
        ({"K": 5, "kind": "poisson"}, "kind must be"),
    ],
)
def test_bad_distributions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KDistribution(**kwargs)


def test_latent_size_and_check_k():
    assert latent_size((8, 16, 16)) == 2048 == math.prod((8, 16, 16))
    check_k(torch.tensor([1, 2048]), 2048)
