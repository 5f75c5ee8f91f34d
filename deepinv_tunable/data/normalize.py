r"""Robust intensity normalisation with an exact inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class IntensityScaling:
    r"""Affine intensity map :math:`x \mapsto (x - \text{low}) / (\text{high} - \text{low})`.

    Obtained from :func:`percentile_scaling`; :meth:`apply` and :meth:`invert` are exact inverses.
    """

    low: float
    high: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map intensities to the normalised scale (``low`` to 0, ``high`` to 1)."""
        return (x - self.low) / (self.high - self.low)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised intensities back to the original scale."""
        return x * (self.high - self.low) + self.low


def percentile_scaling(data: torch.Tensor, lower: float = 0.5, upper: float = 99.5) -> IntensityScaling:
    r"""Fit an :class:`IntensityScaling` that maps the ``lower``/``upper`` percentiles to 0/1.

    Robust to a few very bright voxels (vessels, artefacts), unlike min-max scaling. Values
    outside the percentile range are not clipped, so the map stays invertible.

    :param torch.Tensor data: intensities (any shape).
    :param float lower: lower percentile in ``[0, 100)``. Default 0.5.
    :param float upper: upper percentile in ``(lower, 100]``. Default 99.5.

    >>> s = percentile_scaling(torch.arange(101.0), 0, 100)
    >>> s.low, s.high
    (0.0, 100.0)
    """
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    values = data.detach().cpu().numpy().ravel()
    low, high = (float(v) for v in np.percentile(values, [lower, upper]))
    if high <= low:
        raise ValueError(
            f"intensity percentiles {lower}/{upper} are equal ({low}); the volume is constant or nearly so"
        )
    return IntensityScaling(low=low, high=high)
