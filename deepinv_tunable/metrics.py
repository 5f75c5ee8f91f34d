"""Image-quality metrics used across recipes and benchmarks (deepinv's implementations)."""

from __future__ import annotations

import deepinv as dinv
import torch

#: Images are normalised so the robust intensity range maps to [0, 1]; metrics use that range.
METRICS = {
    "psnr": dinv.metric.PSNR(max_pixel=1.0),
    "ssim": dinv.metric.SSIM(max_pixel=1.0),
    "nmse": dinv.metric.NMSE(),
}


def image_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB), SSIM and NMSE per image of a ``(B, 1, H, W)`` batch in ``[0, 1]`` scaling.

    >>> x = torch.zeros(1, 1, 16, 16); x[..., 4:12, 4:12] = 1
    >>> round(image_metrics(x + 0.1, x)["psnr"][0], 3)
    20.0
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"estimate shape {tuple(x_hat.shape)} differs from reference shape {tuple(x.shape)}")
    with torch.no_grad():
        return {name: [float(v) for v in metric(x_hat, x).reshape(-1)] for name, metric in METRICS.items()}
