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


def warmup_ema_update(average: torch.Tensor, current: torch.Tensor, num_averaged, decay: float) -> torch.Tensor:
    """One update of the averaged tensor; ``num_averaged`` (:math:`n \\ge 1`) counts the averages so far."""
    # kept a tensor on the weights' device: a Python float would sync the GPU once per tensor
    n = torch.as_tensor(num_averaged, device=average.device).to(torch.float32)
    d = ((1 + n) / (10 + n)).clamp(max=decay)
    if average.is_floating_point():
        d = d.to(average.dtype)
    return average * d + current * (1 - d)


class WarmupEMA(WeightAveraging):
    r"""Lightning callback keeping the warmed-up EMA of a module's weights (and buffers); the
    average replaces the weights in validation, checkpoints and at the end of training.

    :param float decay: the decay :math:`d` reached after the warm-up, in (0, 1). Default 0.999.

    >>> cb = WarmupEMA(decay=0.999)
    >>> round(float(warmup_ema_update(torch.tensor(0.0), torch.tensor(1.0), 1, 0.999)), 4)  # d_1 = 2/11
    0.8182
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(avg_fn=partial(warmup_ema_update, decay=decay))
        self.decay = decay
