"""The converted scico DnCNN weights and the DnCNN denoiser / DPIR built on them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepinv_tunable import pretrained
from deepinv_tunable.nets import DnCNN
from deepinv_tunable.physics import build_physics
from deepinv_tunable.pretrained.convert_scico import MODELS, flax_to_state_dict
from deepinv_tunable.priors import DnCNNDenoiser
from deepinv_tunable.solvers import DPIR
from deepinv_tunable.solvers.dpir import dpir_schedule

REFERENCE = Path(__file__).parent / "data" / "scico_dncnn_reference.safetensors"


@pytest.mark.parametrize("letter", list(MODELS))
def test_converted_weights_reproduce_scico_output(letter):
    """scico's own DnCNNNet output (tests/data, written by pretrained/scico_reference.py) is
    reproduced by the converted torch network to float32 rounding."""
    ref = load_file(str(REFERENCE))
    net = pretrained.load(f"dncnn_scico_17{letter}")
    with torch.no_grad():
        out = net(ref["input"][None, None])[0, 0]
    assert net.trained_sigma == MODELS[letter][0]
    assert float((out - ref[f"output_{letter}"]).abs().max()) < 1e-4
    # and the network does denoise: its output differs from the input by about the trained noise
    assert 0.03 < float((out - ref["input"]).std()) < 0.12


def test_flax_layout_conversion_known_answer():
    """HWIO -> OIHW without flip, and blocks in numerical order (10 after 9, not after 1)."""
    depth = 12
    rng = np.random.default_rng(0)
    params = {
        "conv_start": {"kernel": rng.standard_normal((3, 3, 1, 4)).astype(np.float32)},
        "conv_end": {"kernel": rng.standard_normal((3, 3, 4, 1)).astype(np.float32)},
    }
    stats = {}
    for i in range(depth - 2):
        params[f"ConvBNBlock_{i}"] = {
            "Conv_0": {"kernel": np.full((3, 3, 4, 4), i, np.float32)},
            "BatchNorm_0": {"scale": np.full(4, i, np.float32), "bias": np.zeros(4, np.float32)},
        }
        stats[f"ConvBNBlock_{i}"] = {"BatchNorm_0": {"mean": np.zeros(4, np.float32), "var": np.ones(4, np.float32)}}
    state = flax_to_state_dict({"params": params, "batch_stats": stats}, depth=depth)
    net = DnCNN(depth=depth, num_filters=4)
    net.load_state_dict(state)
    assert torch.equal(state["body.0.weight"][2, 0], torch.from_numpy(params["conv_start"]["kernel"][:, :, 0, 2]))
    assert [float(state[f"body.{3 + 3 * i}.weight"][0]) for i in range(depth - 2)] == list(range(depth - 2))


def test_denoiser_picks_nearest_model_and_scales():
    den = DnCNNDenoiser.from_pretrained()
    assert den.sigmas == [0.06, 0.10, 0.20]
    assert [den.pick(s) for s in (0.01, 0.07, 0.12, 0.5)] == [0, 0, 1, 2]
    x = torch.rand(1, 1, 24, 24)
    net = den.nets[0]
    with torch.no_grad():
        assert torch.allclose(den(x, 0.03), net(x * 2) / 2, atol=1e-6)  # s = 0.06 / 0.03
        two = den(torch.cat([x, x], 1), 0.03)  # complex MRI images: channel by channel
    assert torch.allclose(two[:, 0], two[:, 1], atol=1e-6)
    with pytest.warns(RuntimeWarning, match="outside the range"):
        assert torch.equal(den(x, 0.0), x)  # no noise to remove: the identity (DDRM's last step)


def test_dpir_schedule_matches_deepinv_at_8_iterations():
    from deepinv.optim.dpir import get_DPIR_params

    levels, steps = dpir_schedule(0.02, 8)
    ref_levels, ref_steps, n = get_DPIR_params(0.02)
    assert n == 8
    assert torch.allclose(levels, ref_levels, rtol=1e-5) and torch.allclose(steps, ref_steps, rtol=1e-4)
    with pytest.raises(ValueError, match="max_iter"):
        DPIR(denoiser=DnCNNDenoiser.from_pretrained(), max_iter=1)


def test_dpir_dncnn_beats_the_zero_filled_image_on_mri():
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 64, 64)
    x[..., 16:48, 16:48] = 0.6
    x[..., 24:40, 28:36] = 1.0
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (64, 64))
    from deepinv_tunable.physics import from_physics_domain, to_physics_domain

    y = physics(to_physics_domain(x, physics))
    zero_filled = from_physics_domain(physics.A_adjoint(y), physics)
    x_hat = from_physics_domain(
        DPIR(sigma=0.01, denoiser=DnCNNDenoiser.from_pretrained(), max_iter=8)(y, physics), physics
    )
    err = lambda z: float((z - x).pow(2).mean())  # noqa: E731
    assert err(x_hat) < 0.5 * err(zero_filled)


def test_dncnn_module_learns_and_keeps_its_noise_level(tmp_path):
    from deepinv_tunable.training.dncnn import DnCNNModule

    torch.manual_seed(0)
    module = DnCNNModule(dncnn={"depth": 3, "num_filters": 8, "trained_sigma": 0.1}, lr=1e-2)
    opt = module.configure_optimizers()
    x = torch.full((8, 1, 16, 16), 0.5)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(module.net(module._noisy(x)), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-10:]) < 0.3 * 0.1**2  # well below the input noise power
    module.export(tmp_path / "m", None)
    assert DnCNN.from_pretrained(tmp_path / "m").trained_sigma == 0.1
    with pytest.raises(ValueError, match="trained_sigma"):
        DnCNNModule(dncnn={"depth": 3})
    with pytest.raises(ValueError, match="differs"):
        DnCNNModule(dncnn={"trained_sigma": 0.2}, init="dncnn_scico_17L")


def test_fine_tuning_keeps_the_pretrained_denoiser_working():
    """Batch-norm statistics stay those of the initial weights: in training mode the network
    still denoises as well as the pretrained one (it would not with batch statistics)."""
    from deepinv_tunable.training.dncnn import DnCNNModule

    module = DnCNNModule(init="dncnn_scico_17L")
    module.train()
    x = torch.full((4, 1, 32, 32), 0.4)
    x[..., 8:24, 8:24] = 0.8
    noisy = module._noisy(x, seed=0)
    with torch.no_grad():
        trained_mode = torch.nn.functional.mse_loss(module.net(noisy), x)
    assert float(trained_mode) < 0.2 * 0.06**2
