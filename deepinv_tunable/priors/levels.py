"""Noise levels of a deepinv ``Denoiser`` call: one for the batch, or one per image."""

from __future__ import annotations

from collections.abc import Callable

import torch


def noise_levels(sigma: float | torch.Tensor | None, batch: int, who: str) -> torch.Tensor:
    """``sigma`` as a flat float64 tensor of 1 or ``batch`` finite, non-negative values.

    >>> noise_levels(0.1, 4, "D").tolist()
    [0.1]
    """
    if sigma is None:
        raise ValueError(f"{who} needs the noise level sigma")
    levels = torch.as_tensor(sigma, dtype=torch.float64).flatten().cpu()
    if levels.numel() not in (1, batch):
        raise ValueError(f"sigma has {levels.numel()} values for a batch of {batch} images")
    if not bool(torch.isfinite(levels).all()) or bool((levels < 0).any()):
        raise ValueError(f"{who}: sigma must be finite and >= 0, got {levels.tolist()}")
    return levels


def by_noise_level(x: torch.Tensor, levels: torch.Tensor,
                   denoise: Callable[[torch.Tensor, float], torch.Tensor]) -> torch.Tensor:
    """``denoise(x, level)`` on the whole batch when all levels agree, image by image otherwise."""
    if levels.numel() == 1 or bool((levels == levels[0]).all()):
        return denoise(x, float(levels[0]))
    return torch.cat([denoise(x[i:i + 1], float(s)) for i, s in enumerate(levels)])
