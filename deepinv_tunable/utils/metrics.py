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


def foreground_mask(x: torch.Tensor, threshold: float = 0.05, margin: int = 2) -> torch.Tensor:
    """Boolean mask of the object in ``(B, 1, H, W)`` images in [0, 1]: pixels above
    ``threshold`` after a 5x5 mean filter, grown by ``margin`` pixels (so edges count).

    >>> x = torch.zeros(1, 1, 16, 16); x[..., 6:10, 6:10] = 1
    >>> int(foreground_mask(x, margin=0).sum()), int(foreground_mask(x).sum())
    (60, 140)
    """
    smooth = torch.nn.functional.avg_pool2d(x.float(), 5, stride=1, padding=2, count_include_pad=False)
    mask = smooth > threshold
    if margin > 0:
        mask = torch.nn.functional.max_pool2d(mask.float(), 2 * margin + 1, stride=1, padding=margin) > 0
    return mask


def masked_psnr(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """PSNR (peak 1) over the pixels of ``mask`` only, per image.

    >>> x = torch.zeros(1, 1, 8, 8); m = torch.zeros_like(x, dtype=torch.bool); m[..., :4, :] = True
    >>> y = x.clone(); y[..., :4, :] += 0.1; y[..., 4:, :] += 0.5
    >>> round(masked_psnr(y, x, m)[0], 3)
    20.0
    """
    err = ((x_hat - x) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return [float(v) for v in -10 * torch.log10(err.clamp_min(1e-12))]


def masked_ssim(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """SSIM (data range 1, the same Gaussian window as deepinv's :class:`~deepinv.metric.SSIM`)
    averaged over the pixels of ``mask`` only, per image: the local SSIM map is computed on the
    whole image, then only the object's windows are counted (in a black background, SSIM's small
    constants make faint noise score as badly as a wrong anatomy).

    >>> x = torch.rand(1, 1, 32, 32); m = torch.ones_like(x, dtype=torch.bool)
    >>> round(masked_ssim(x, x, m)[0], 4)
    1.0
    """
    from torchmetrics.functional.image import structural_similarity_index_measure  # imports matplotlib: on use

    _, ssim_map = structural_similarity_index_measure(
        x_hat.float(), x.float(), data_range=1.0, reduction="none", return_full_image=True
    )
    inside = (ssim_map * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return [float(v) for v in inside]


def image_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, list[float]]:
    """PSNR (dB), SSIM and NMSE per image of a ``(B, 1, H, W)`` batch in ``[0, 1]`` scaling, and
    ``psnr_fg`` / ``ssim_fg``, the PSNR and SSIM inside the reference's :func:`foreground_mask`
    (the background of a slice inflates the whole-image PSNR, and its faint noise deflates SSIM).

    >>> x = torch.zeros(1, 1, 16, 16); x[..., 4:12, 4:12] = 1
    >>> round(image_metrics(x + 0.1, x)["psnr"][0], 3)
    20.0
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"estimate shape {tuple(x_hat.shape)} differs from reference shape {tuple(x.shape)}")
    with torch.no_grad():
        out = {name: [float(v) for v in metric(x_hat, x).reshape(-1)] for name, metric in METRICS.items()}
        mask = foreground_mask(x)
        out["psnr_fg"] = masked_psnr(x_hat, x, mask)
        out["ssim_fg"] = masked_ssim(x_hat, x, mask)
        return out
