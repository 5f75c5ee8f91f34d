"""Input checks shared by every public entry point; each raises an error that names the
offending value and says what was expected."""

from __future__ import annotations

import warnings

import deepinv as dinv
import torch


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values.

    :param torch.Tensor x: tensor to check.
    :param str name: how the tensor is named in the error message.
    """
    bad = ~torch.isfinite(x)
    if bad.any():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite values (of {x.numel()}); "
            "expected finite values only. Clean or mask the input first."
        )


def check_image_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is a finite ``(B, C, H, W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    check_finite(x, name)


def check_model_images(
    x: torch.Tensor, image_size: tuple[int, int], model: str, name: str = "x", why: str = ""
) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, 1, H, W)`` with ``(H, W) == image_size``: the
    single-channel images a model with a fixed latent layout was built for.

    >>> check_model_images(torch.zeros(2, 1, 8, 8), (8, 8), "this VAE")
    >>> check_model_images(torch.zeros(2, 1, 8, 4), (8, 8), "this VAE")
    Traceback (most recent call last):
    ...
    ValueError: x has shape (2, 1, 8, 4); this VAE expects (B, 1, 8, 8) images
    """
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != tuple(image_size):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; {model} expects (B, 1, {image_size[0]}, {image_size[1]}) images{why}"
        )


def renamed_keyword(owner: str, old_name: str, old_value, new_name: str, new_value):
    """The value of a keyword renamed to deepinv's name (e.g. ``n_iter`` -> ``max_iter``): the
    old name still works for now, with a :class:`FutureWarning` naming the new one.

    >>> renamed_keyword("TVPGD", "n_iter", None, "max_iter", 100)
    100
    """
    if old_value is None:
        return new_value
    warnings.warn(
        f"{owner}: '{old_name}' is renamed '{new_name}' (deepinv's name); '{old_name}' will be removed",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def require_linear(physics, who: str) -> None:
    """Raise ``TypeError`` unless ``physics`` is a deepinv
    :class:`~deepinv.physics.LinearPhysics` (``who`` names what needs it in the message)."""
    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(
            f"{who} needs a linear physics, got {type(physics).__name__}; expected a deepinv.physics.LinearPhysics"
        )


def check_roi(roi: torch.Tensor, shape: torch.Size, name: str = "roi") -> torch.Tensor:
    """Validate a region-of-interest mask or weight map against images of ``shape`` (it must
    broadcast to it, be real, finite and within [0, 1]); return it as a float tensor."""
    if not isinstance(roi, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor mask or weight map, got {type(roi).__name__}")
    try:
        broadcast = torch.broadcast_shapes(roi.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(
            f"{name} of shape {tuple(roi.shape)} does not broadcast to the images' shape {tuple(shape)}; "
            "expected e.g. (H, W), (1, 1, H, W) or (B, 1, H, W)"
        )
    roi = roi.float() if roi.dtype == torch.bool else roi
    if torch.is_complex(roi):
        raise ValueError(f"{name} must be real with values in [0, 1], got dtype {roi.dtype}")
    check_finite(roi, name)
    low, high = float(roi.min()), float(roi.max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} values must lie in [0, 1], got values in [{low:g}, {high:g}]")
    return roi
