"""DICOM series reading (optional: needs ``pip install deepinv_tunable[dicom]``). The voxels and
their affine only: :func:`~deepinv_tunable.data.load_volume` wraps them in a ``Volume``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..checks import check_finite

#: relative tolerance on the spacing between consecutive slices before a series counts as gapped
SLICE_SPACING_RTOL = 0.01


def read_dicom_series(folder: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    r"""Read one single-frame DICOM series from ``folder``: its voxels ``(X, Y, Z)`` (``float32``)
    and the ``4 x 4`` voxel-to-world affine (RAS+, millimetres).

    Slices are ordered by their position along the slice normal; the affine is built from
    ``ImageOrientationPatient``, ``ImagePositionPatient`` and ``PixelSpacing`` and converted
    from DICOM's LPS to NIfTI's RAS world convention. ``RescaleSlope``/``Intercept`` are applied.

    :param str folder: folder holding the ``.dcm`` files of exactly one series.
    :raises ImportError: if pydicom is not installed.
    :raises ValueError: if the folder holds no readable DICOM slices, several series, or slices
        that are not evenly spaced along the normal (a missing or duplicated slice would silently
        misplace every slice after it).
    """
    try:
        import pydicom
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading DICOM needs pydicom: pip install 'deepinv_tunable[dicom]'") from err
    folder = Path(folder)
    datasets = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            try:
                datasets.append(pydicom.dcmread(str(f)))
            except Exception:  # not a DICOM file: skip it, the folder may hold other files
                continue
    datasets = [d for d in datasets if "PixelData" in d and "ImagePositionPatient" in d]
    if not datasets:
        raise ValueError(f"no readable DICOM slices with pixel data and positions in '{folder}'")
    series = {str(d.get("SeriesInstanceUID", "")) for d in datasets}
    if len(series) > 1:
        raise ValueError(f"'{folder}' holds {len(series)} DICOM series; expected exactly one")
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    datasets.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    positions = np.array([d.ImagePositionPatient for d in datasets], dtype=float)
    _check_even_spacing(positions @ normal, folder)
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    slice_step = (
        (positions[-1] - positions[0]) / (len(datasets) - 1)
        if len(datasets) > 1
        else normal * float(datasets[0].get("SliceThickness", 1.0))
    )
    # Array axis 0 runs along columns of the DICOM frame (x, along row_dir), axis 1 along rows.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    frames = []
    for d in datasets:
        frame = d.pixel_array.astype(np.float32)
        frame = frame * float(d.get("RescaleSlope", 1.0)) + float(d.get("RescaleIntercept", 0.0))
        frames.append(frame.T)  # (rows, cols) -> (x, y)
    data = torch.from_numpy(np.stack(frames, axis=-1))
    check_finite(data, f"DICOM series '{folder}'")
    return data, affine


def _check_even_spacing(depths: np.ndarray, folder: Path) -> None:
    """Raise if the sorted slice positions along the normal are not evenly spaced."""
    if len(depths) < 3:
        return
    steps = np.diff(depths)
    typical = float(np.median(steps))
    if typical <= 0:
        raise ValueError(f"DICOM series '{folder}' has {int(np.sum(steps <= 0)) + 1} slices at the same position")
    off = np.flatnonzero(np.abs(steps - typical) > SLICE_SPACING_RTOL * typical)
    if off.size:
        i = int(off[0])
        raise ValueError(
            f"DICOM series '{folder}' is not evenly spaced: slices {i} and {i + 1} (positions "
            f"{depths[i]:.3f} and {depths[i + 1]:.3f} mm along the normal) are {steps[i]:.3f} mm apart, "
            f"where the series' spacing is {typical:.3f} mm; a slice is missing or duplicated"
        )
