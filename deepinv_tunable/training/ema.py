r"""Exponential moving average of the weights with a warm-up of its decay.

A plain EMA with decay :math:`d` starts from the initial weights and forgets them at rate
:math:`1-d`: after :math:`n` updates they still weigh :math:`d^n` (0.37 after 2000 updates at
:math:`d = 0.9995`), so a short run exports mostly untrained weights. Here the :math:`n`-th update
(:math:`n \ge 1` averages so far) uses

.. math::

    d_n = \min\left(d, \frac{1 + n}{10 + n}\right), \qquad
    \bar\theta \leftarrow d_n\,\bar\theta + (1 - d_n)\,\theta,

the warm-up of the TensorFlow / timm EMAs: the average follows the weights closely early on and
reaches the full horizon :math:`1/(1-d)` only once that many updates have been made.
"""

from __future__ import annotations

from functools import partial

import torch
from lightning.pytorch.callbacks import WeightAveraging


def warmup_ema_update(averages: list[torch.Tensor], currents: list[torch.Tensor], num_averaged, decay: float) -> None:
    """One in-place update of the averaged tensors (all on one device with one dtype, as
    :class:`~torch.optim.swa_utils.AveragedModel` groups them); ``num_averaged`` (:math:`n \\ge 1`)
    counts the averages so far.

    One fused ``lerp`` for the whole group instead of a few kernels per tensor, and the decay kept
    a tensor on the weights' device: a Python float would make the GPU wait once per step.
    """
    if not averages:
        return
    n = torch.as_tensor(num_averaged, device=averages[0].device).to(torch.float32)
    d = ((1 + n) / (10 + n)).clamp(max=decay)
    if averages[0].is_floating_point():
        torch._foreach_lerp_(averages, currents, (1 - d).to(averages[0].dtype))
    else:  # integer buffers (e.g. a batch counter): the same average, rounded back
        for average, current in zip(averages, currents, strict=True):
            average.copy_(average * d + current * (1 - d))


class WarmupEMA(WeightAveraging):
    r"""Lightning callback keeping the warmed-up EMA of a module's weights (and buffers); the
    average replaces the weights in validation, checkpoints and at the end of training.

    :param float decay: the decay :math:`d` reached after the warm-up, in (0, 1). Default 0.999.

    >>> cb = WarmupEMA(decay=0.999)
    >>> average = [torch.tensor(0.0)]
    >>> warmup_ema_update(average, [torch.tensor(1.0)], 1, 0.999)  # d_1 = 2/11
    >>> round(float(average[0]), 4)
    0.8182
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(multi_avg_fn=partial(warmup_ema_update, decay=decay))
        self.decay = decay
