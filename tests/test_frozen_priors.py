"""The package's pretrained denoisers behave as frozen priors inside other people's loops: a
parent's ``.train()`` leaves them unchanged, they compute in their own dtype, and inputs outside
their domain ([0, 255] images, colour images) are flagged once."""

from __future__ import annotations

import warnings

import pytest
import torch

from deepinv_tunable.nets import HVAE, ConditionalDRUNet
from deepinv_tunable.priors import DnCNNDenoiser, HVAEDenoiser, PixelDenoiser


def denoisers():
    torch.manual_seed(0)
    return {
        "dncnn": DnCNNDenoiser.from_pretrained(("dncnn_corpus_17M",)),
        "hvae": HVAEDenoiser(HVAE(width=8, groups_per_scale=(1, 1))),
        "pixel": PixelDenoiser(ConditionalDRUNet(nc=(4, 4, 4, 4), nb=1, sigma_range=(0.002, 80.0))),
    }


def noisy_slice(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 0.7
    return x + 0.05 * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("name", ["dncnn", "hvae", "pixel"])
def test_a_parents_train_mode_changes_nothing(name):
    den = denoisers()[name]
    y = noisy_slice()
    with torch.no_grad():
        before = den(y, 0.05)
        parent = torch.nn.Sequential(den)
        parent.train()  # what deepinv's Trainer and Lightning do to the model they hold
        assert not any(m.training for m in den.modules())
        den(noisy_slice(1) * 0.5, 0.05)  # another batch passes through "in training"
        parent.eval()
        after = den(y, 0.05)
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize("name", ["dncnn", "hvae", "pixel"])
def test_float64_input_is_computed_in_the_networks_dtype_and_returned_in_float64(name):
    den = denoisers()[name]
    y = noisy_slice()
    with torch.no_grad():
        out = den(y.double(), torch.tensor(0.05, dtype=torch.float64))
        assert out.dtype == torch.float64
        torch.testing.assert_close(out.float(), den(y, 0.05))


@pytest.mark.parametrize("name", ["dncnn", "hvae", "pixel"])
def test_images_on_a_0_255_scale_are_flagged_once(name):
    den = denoisers()[name]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with torch.no_grad():
            den(noisy_slice(), 0.05)  # [0, 1]: silent
            assert not [w for w in record if "trained on images in [0, 1]" in str(w.message)]
            den(noisy_slice() * 255, 0.05)
            den(noisy_slice() * 255, 0.05)
    flagged = [w for w in record if "trained on images in [0, 1]" in str(w.message)]
    assert len(flagged) == 1 and "divide by 255" in str(flagged[0].message)


def test_high_diffusion_levels_are_not_mistaken_for_a_wrong_scale():
    den = denoisers()["pixel"]
    x = noisy_slice() + 80.0 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            den(x, 80.0)


@pytest.mark.parametrize("name", ["dncnn", "pixel"])
def test_colour_images_are_split_with_one_warning_complex_ones_silently(name):
    den = denoisers()[name]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with torch.no_grad():
            den(torch.rand(1, 2, 32, 32), 0.05)  # deepinv's complex MRI layout
            assert not [w for w in record if "channels" in str(w.message)]
            out = den(torch.rand(1, 3, 32, 32), 0.05)
    assert out.shape == (1, 3, 32, 32)
    assert len([w for w in record if "3-channel images are denoised one" in str(w.message)]) == 1
