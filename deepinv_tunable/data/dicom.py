"""DICOM series reading through SimpleITK (GDCM): the series of a folder, listed and chosen by
SeriesInstanceUID, checked for gaps, as voxels and their affine only:
:func:`~deepinv_tunable.data.load_volume` wraps them in a ``Volume``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.checks import check_finite

#: relative tolerance on the spacing between consecutive slices before a series counts as gapped
SLICE_SPACING_RTOL = 0.01
#: DICOM tags read from each file's header (SimpleITK's "gggg|eeee" keys)
_TAGS = {
    "position": "0020|0032",
    "orientation": "0020|0037",
    "description": "0008|103e",
    "modality": "0008|0060",
}


@dataclass(frozen=True)
class DicomSeries:
    """One series of a DICOM folder: its ``uid`` (SeriesInstanceUID), ``n_files``, and the
    ``description`` (SeriesDescription) and ``modality`` of its first file."""

    uid: str
    n_files: int
    description: str
    modality: str

    def __str__(self) -> str:
        return f"{self.uid} ({self.n_files} files, {self.modality or '?'}: {self.description or 'no description'})"


def _sitk():
    import SimpleITK as sitk  # a dependency of torchio; imported late, the CLI starts faster

    return sitk


def _header(path: str):
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def _tag(reader, name: str) -> str:
    key = _TAGS[name]
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series in ``folder`` (not its sub-folders), in SimpleITK's order.

    :raises FileNotFoundError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: '{folder}'")
    sitk = _sitk()
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        first = _header(files[0])
        out.append(DicomSeries(uid, len(files), _tag(first, "description"), _tag(first, "modality")))
    return out


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    r"""Read one single-frame DICOM series from ``folder``: its voxels ``(X, Y, Z)`` (``float32``,
    ``RescaleSlope``/``Intercept`` applied) and the ``4 x 4`` voxel-to-world affine (RAS+,
    millimetres, converted from DICOM's LPS).

    Slices are ordered by their position along the slice normal and must be evenly spaced (a
    missing or duplicated slice would silently misplace every slice after it).

    :param str folder: folder holding the ``.dcm`` files (other files are ignored).
    :param str series_uid: the SeriesInstanceUID to read; needed when the folder holds several
        series (:func:`list_dicom_series` lists them).
    :raises ValueError: no readable series, several series and no ``series_uid``, an unknown
        ``series_uid``, or uneven slice spacing; the message lists the series to choose from.
    """
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise ValueError(f"no readable DICOM series in '{folder}'")
    listing = "; ".join(str(s) for s in series)
    if series_uid is None:
        if len(series) > 1:
            raise ValueError(
                f"'{folder}' holds {len(series)} DICOM series: {listing}. Choose one with --series UID "
                "(recipe key data.series)"
            )
        series_uid = series[0].uid
    elif series_uid not in {s.uid for s in series}:
        raise ValueError(f"series '{series_uid}' is not in '{folder}', which holds: {listing}")
    sitk = _sitk()
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    headers = [_header(f) for f in files]
    orientation = np.array([float(v) for v in _tag(headers[0], "orientation").split("\\")])
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([[float(v) for v in _tag(h, "position").split("\\")] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    files, positions = [files[i] for i in order], positions[order]
    _check_even_spacing(positions @ normal, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()
    # SimpleITK arrays are (Z, Y, X); the package's volumes are (X, Y, Z)
    data = torch.from_numpy(np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0)))
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    if len(files) > 1:  # the slice step from the positions themselves, whatever the header's thickness
        affine_lps[:3, 2] = (positions[-1] - positions[0]) / (len(files) - 1)
    check_finite(data, f"DICOM series '{folder}'")
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps


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
