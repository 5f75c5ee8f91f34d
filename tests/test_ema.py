"""Known answers for the warmed-up EMA of the weights (``deepinv_tunable.training.ema``)."""

import math

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from deepinv_tunable.training.ema import WarmupEMA, warmup_ema_update


def test_warmup_decay_follows_the_closed_form_and_caps_at_decay():
    # a constant target 1 from an average of 0: after updates n = 1..N the gap is prod(d_n)
    decay, avg = 0.9, [torch.tensor(0.0), torch.zeros(3, dtype=torch.float64)]
    gap = 1.0
    for n in range(1, 200):
        warmup_ema_update(avg, [torch.tensor(1.0), torch.ones(3, dtype=torch.float64)], torch.tensor(n), decay)
        gap *= min(decay, (1 + n) / (10 + n))
        assert float(avg[0]) == pytest.approx(1 - gap, abs=1e-6)
        torch.testing.assert_close(avg[1], torch.full((3,), 1 - gap, dtype=torch.float64), rtol=0, atol=1e-6)
    # past the warm-up (n >= 80 for d = 0.9) every step is the plain EMA step
    assert min(decay, (1 + 150) / (10 + 150)) == decay


def test_short_run_average_is_dominated_by_recent_weights():
    # 2000 updates at d = 0.9995: the plain EMA keeps 0.9995**2000 = 0.37 of the initial weights,
    # the warmed-up one less than 1 %
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = AveragedModel(model, multi_avg_fn=lambda a, c, n: warmup_ema_update(a, c, n, 0.9995))
    ema.update_parameters(model)  # the first update copies the initial weights
    with torch.no_grad():
        model.weight.fill_(1.0)
        for _ in range(2000):
            ema.update_parameters(model)
    assert 0.0 < 1 - float(ema.module.weight.detach()) < 0.01
    assert 0.9995**2000 == pytest.approx(math.exp(2000 * math.log(0.9995)))
    assert 0.9995**2000 > 0.36


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WarmupEMA(decay)


def test_hvae_and_drunet_modules_use_the_warmed_up_ema():
    from deepinv_tunable.training.drunet import ConditionalDenoiserModule
    from deepinv_tunable.training.hvae import HVAEModule

    hvae = HVAEModule(hvae={"width": 8, "z_channels": 2, "groups_per_scale": [1, 1]}, ema_decay=0.99)
    (cb,) = hvae.configure_callbacks()
    assert isinstance(cb, WarmupEMA) and cb.decay == 0.99
    (cb,) = ConditionalDenoiserModule().configure_callbacks()
    assert isinstance(cb, WarmupEMA)


def test_callback_averages_parameters_and_buffers_of_every_dtype_in_one_group_update():
    # what Lightning builds from the callback: AveragedModel(model, use_buffers=True, **kwargs)
    cb = WarmupEMA(decay=0.5)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = AveragedModel(model, use_buffers=True, **cb._kwargs)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.fill_(0)
    ema.update_parameters(model)  # copies
    expected = 0.0
    for n in range(1, 6):
        with torch.no_grad():
            for t in model.state_dict().values():
                t.fill_(10 * n)
        ema.update_parameters(model)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * 10 * n
        state = ema.module.state_dict()
        torch.testing.assert_close(state["0.weight"], torch.full((2, 3), expected), rtol=0, atol=1e-5)
        torch.testing.assert_close(state["1.running_mean"], torch.full((2,), expected), rtol=0, atol=1e-5)
        assert state["1.num_batches_tracked"].dtype == torch.int64
        assert abs(int(state["1.num_batches_tracked"]) - expected) <= 1
