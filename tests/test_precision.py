"""The precision= option: bf16 reaches the network calls and never the physics; "auto" follows
the hardware."""

import deepinv as dinv
import pytest
import torch

from deepinv_tunable.physics import build_physics
from deepinv_tunable.solvers import DPIR
from deepinv_tunable.utils import precision
from deepinv_tunable.utils.precision import AtPrecision, at_precision, resolve_precision


class AutocastProbe(dinv.models.Denoiser):
    """A denoiser that records whether bf16 autocast was on when it ran (and shrinks a little)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1, 1, 1, 1))
        self.seen: list[bool] = []

    def forward(self, x, sigma=None, **kwargs):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return torch.nn.functional.conv2d(x.to(self.weight.dtype), 0.9 * self.weight)  # as the package's priors


class RecordingPhysics(dinv.physics.Denoising):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[bool] = []

    def A(self, x, **kwargs):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return super().A(x, **kwargs)


@pytest.mark.parametrize("choice, network_bf16", [("fp32", False), ("bf16", True)])
def test_dpir_autocasts_its_network_and_never_its_physics(choice, network_bf16):
    probe = AutocastProbe()
    physics = RecordingPhysics(noise_model=dinv.physics.GaussianNoise(0.05))
    y = physics(torch.full((1, 1, 16, 16), 0.5))
    physics.seen.clear()
    out = DPIR(sigma=0.05, denoiser=probe, max_iter=3, precision=choice)(y, physics)
    assert probe.seen and set(probe.seen) == {network_bf16}
    assert physics.seen and not any(physics.seen)
    assert out.dtype == torch.float32  # returned in the input's dtype


def test_auto_is_bf16_only_where_the_hardware_computes_it(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        DPIR(sigma=0.05, denoiser=AutocastProbe(), precision="half")


def test_at_precision_leaves_fp32_unwrapped_and_the_denoiser_unmodified():
    probe = AutocastProbe()
    assert at_precision(probe, "fp32") is probe
    wrapped = at_precision(probe, "bf16")
    assert isinstance(wrapped, AtPrecision) and wrapped.denoiser is probe
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    out = wrapped(x, 0.1)
    assert out.dtype == torch.float64 and probe.weight.dtype == torch.float32
    assert torch.allclose(out, 0.9 * x, atol=1e-2)  # bf16's rounding, nothing more


def test_a_physics_in_a_recipe_is_unchanged_by_precision():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (16, 16))
    x = torch.rand(1, 2, 16, 16)
    with precision.network_precision("bf16", "cpu"):
        inside = physics.A(x)
    assert inside.dtype == torch.float32 and torch.equal(inside, physics.A(x))
