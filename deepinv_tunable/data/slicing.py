r"""Orientation-aware slicing of volumes into ``(N, 1, H, W)`` image batches and back.

Volumes are first brought to the closest canonical orientation (RAS+) with torchio, so a plane
name means the same anatomy whatever the file's storage order:

==========  ==========  ==============================  ==========================
plane       slice axis  image rows (top to bottom)      image columns
==========  ==========  ==============================  ==========================
axial       S (2)       anterior -> posterior           left -> right (R index)
coronal     A (1)       superior -> inferior            left -> right (R index)
sagittal    R (0)       superior -> inferior            posterior -> anterior
==========  ==========  ==============================  ==========================

:func:`prepare_volume` optionally resamples to an isotropic in-plane spacing and crops/pads to
a fixed in-plane size (torchio keeps the affine right); :func:`volume_to_slices` and
:func:`slices_to_volume` are exact inverses of each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torchio as tio

from .volume import Volume

PLANES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}


def _slice_axis(plane: str) -> int:
    if plane not in PLANES:
        raise ValueError(f"unknown plane '{plane}': expected one of {sorted(PLANES)}")
    return PLANES[plane]


def _in_plane_axes(plane: str) -> tuple[int, int]:
    """(row axis, column axis) of the canonical array for ``plane``; rows are flipped."""
    return {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}[plane]


def prepare_volume(
    volume: Volume,
    plane: str = "axial",
    spacing: float | None = None,
    size: Sequence[int] | None = None,
) -> Volume:
    r"""Reorient to RAS+, optionally resample in-plane and crop/pad to ``size``.

    :param Volume volume: input volume (not modified).
    :param str plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``; fixes which axes are in-plane.
    :param float spacing: in-plane voxel size in mm after resampling; ``None`` keeps the grid.
        The through-plane spacing is kept, so slices stay the acquired ones.
    :param tuple size: in-plane ``(H, W)`` after centred crop/pad; ``None`` keeps the size.
    :return: a new :class:`Volume` whose affine maps the new grid to the same world space.
    """
    axis = _slice_axis(plane)
    image = tio.ScalarImage(tensor=volume.data[None].clone(), affine=volume.affine)
    image = tio.ToCanonical()(image)
    if spacing is not None:
        if spacing <= 0:
            raise ValueError(f"spacing must be a positive number of millimetres, got {spacing}")
        target = list(image.spacing)
        for a in range(3):
            if a != axis:
                target[a] = float(spacing)
        image = tio.Resample(tuple(target), image_interpolation="bspline")(image)
    if size is not None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be two positive integers (H, W), got {size}")
        rows, cols = _in_plane_axes(plane)
        target_shape = list(image.spatial_shape)
        target_shape[rows], target_shape[cols] = int(size[0]), int(size[1])
        image = tio.CropOrPad(tuple(target_shape))(image)
    data = image.data[0].to(torch.float32)
    return volume.with_data(data.contiguous(), affine=np.asarray(image.affine, dtype=float))


def volume_to_slices(data: torch.Tensor, plane: str) -> torch.Tensor:
    """Canonical ``(X, Y, Z)`` array -> ``(N, 1, H, W)`` slices in display orientation."""
    axis = _slice_axis(plane)
    rows, cols = _in_plane_axes(plane)
    return data.permute(axis, rows, cols).flip(1).unsqueeze(1).contiguous()


def slices_to_volume(slices: torch.Tensor, plane: str) -> torch.Tensor:
    """Inverse of :func:`volume_to_slices`: ``(N, 1, H, W)`` -> canonical ``(X, Y, Z)``."""
    axis = _slice_axis(plane)
    rows, cols = _in_plane_axes(plane)
    order = (axis, rows, cols)
    inverse = [order.index(a) for a in range(3)]
    return slices[:, 0].flip(1).permute(*inverse).contiguous()


def select_slices(
    n_total: int,
    start: int | None = None,
    stop: int | None = None,
    count: int | None = None,
) -> list[int]:
    r"""Indices of the slices to process: ``count`` evenly spaced slices in ``[start, stop)``.

    ``start``/``stop`` default to the whole range; ``count=None`` takes every slice.

    >>> select_slices(100, 40, 60, count=5)
    [40, 44, 48, 52, 56]
    """
    start = 0 if start is None else start
    stop = n_total if stop is None else stop
    if not 0 <= start < stop <= n_total:
        raise ValueError(f"slice range [{start}, {stop}) is empty or outside [0, {n_total})")
    if count is None:
        return list(range(start, stop))
    if not 1 <= count <= stop - start:
        raise ValueError(f"count must be in [1, {stop - start}] for the range [{start}, {stop}), got {count}")
    return np.linspace(start, stop, count, endpoint=False).astype(int).tolist()


def batched(indices: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive chunks of ``indices`` with at most ``batch_size`` elements."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(indices), batch_size):
        yield list(indices[i : i + batch_size])
