"""Reading and writing medical volumes (NIfTI through nibabel, DICOM series through SimpleITK).

A :class:`Volume` keeps the voxel array together with its affine and header from the moment
it is read until every output derived from it is written, so results overlay the input in any
viewer. Inputs are never modified; writes are atomic (see :mod:`deepinv_tunable.utils.atomic`).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ..utils.atomic import atomic_write
from ..utils.checks import check_finite
from .dicom import read_dicom_series

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Volume:
    r"""A 3D scalar volume with its spatial metadata.

    :param torch.Tensor data: voxel values, shape ``(X, Y, Z)``, ``float32``, indexed like the
        file's array (voxel ``(i, j, k)`` sits at world position ``affine @ (i, j, k, 1)``).
    :param numpy.ndarray affine: ``4 x 4`` voxel-to-world (RAS+, millimetres) matrix.
    :param nibabel.nifti1.Nifti1Header header: header of the source file (a copy).
    :param pathlib.Path source: file or folder the volume was read from, if any.
    """

    data: torch.Tensor
    affine: np.ndarray
    header: nib.Nifti1Header = field(repr=False)
    source: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the three array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Axis codes, e.g. ``"RAS"``: the world direction each array axis increases towards."""
        return "".join(nib.aff2axcodes(self.affine))

    def with_data(self, data: torch.Tensor, affine: np.ndarray | None = None) -> Volume:
        """A new volume with other voxel values (and optionally another affine), same header."""
        return replace(self, data=data, affine=self.affine if affine is None else affine)


def _nifti_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(NIFTI_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def load_volume(path: str | Path, volume_index: int | None = None, series: str | None = None) -> Volume:
    r"""Read a 3D volume from a NIfTI file (``.nii``, ``.nii.gz``) or a DICOM series folder.

    A 4D file (e.g. fMRI, diffusion, multi-echo) gives its volume ``volume_index``; one whose
    last axis has length 1 is accepted as 3D. Intensities are returned as ``float32`` with the
    header's scaling applied; the affine is the file's.

    :param str path: NIfTI file, or a folder of DICOM files (read with SimpleITK, see
        :func:`~deepinv_tunable.data.dicom.read_dicom_series`).
    :param int volume_index: which volume of a 4D file (0-based); required when it has several.
    :param str series: SeriesInstanceUID of the DICOM series to read; required when the folder
        holds several (the error lists them).
    :raises FileNotFoundError: if ``path`` does not exist.
    :raises ValueError: for an unsupported extension, an unreadable or corrupt file, a volume
        that is not 3D (or 4D with ``volume_index``), an index out of range, an ambiguous or
        gapped DICOM series, or NaN/infinite voxels; the message names the file and the problem.
    :return: the :class:`Volume`.

    :Examples:

        >>> from deepinv_tunable.data import load_volume, sample_path
        >>> vol = load_volume(sample_path("itk_t1"))
        >>> vol.shape, vol.orientation
        ((128, 128, 62), 'LSA')
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"volume file not found: '{path}'")
    if path.is_dir():
        if volume_index is not None:
            raise ValueError(f"volume_index applies to 4D NIfTI files; '{path}' is a DICOM folder (use series)")
        data, affine = read_dicom_series(path, series)
        header = nib.Nifti1Header()
        header.set_data_dtype(np.float32)
        return Volume(data=data, affine=affine, header=header, source=path)
    if _nifti_suffix(path) is None:
        raise ValueError(
            f"unsupported volume file '{path.name}': expected a NIfTI file ending in "
            f"{' or '.join(NIFTI_SUFFIXES)}, or a folder holding a DICOM series"
        )
    if series is not None:
        raise ValueError(f"series applies to DICOM folders; '{path}' is a NIfTI file")
    unreadable = (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError)
    try:
        image = nib.load(str(path))
    except unreadable as err:
        raise ValueError(f"could not read NIfTI file '{path}': {err} (is the file complete and uncorrupted?)") from err
    shape = image.shape
    pick = len(shape) == 4 and (shape[-1] > 1 or volume_index is not None)
    if pick:
        n = shape[-1]
        if volume_index is None:
            raise ValueError(
                f"'{path.name}' is 4D with {n} volumes (shape {shape}); choose one with --volume-index "
                f"0..{n - 1} (recipe key data.volume_index)"
            )
        if not 0 <= volume_index < n:
            raise ValueError(f"volume_index {volume_index} is out of range for '{path.name}' ({n} volumes: 0..{n - 1})")
    elif volume_index is not None:
        raise ValueError(f"volume_index {volume_index} given, but '{path.name}' is {len(shape)}D, not 4D")
    try:
        if pick:  # only that volume is read
            array = np.asarray(image.dataobj[..., volume_index], dtype=np.float32)
        else:
            array = np.asarray(image.get_fdata(dtype=np.float32))
    except unreadable as err:
        raise ValueError(f"could not read NIfTI file '{path}': {err} (is the file complete and uncorrupted?)") from err
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"'{path.name}' holds a {array.ndim}D image of shape {array.shape}; expected a 3D volume")
    data = torch.from_numpy(np.ascontiguousarray(array))
    check_finite(data, f"volume '{path.name}'")
    header = image.header.copy()
    header.set_data_shape(array.shape)  # the outputs are 3D, whatever the input was
    return Volume(data=data, affine=image.affine.copy(), header=header, source=path)


def save_volume(
    data: torch.Tensor | np.ndarray,
    path: str | Path,
    like: Volume,
    affine: np.ndarray | None = None,
    dtype: np.dtype | str | None = np.float32,
) -> Path:
    r"""Write a 3D array as NIfTI with the header of ``like`` (and its affine unless given).

    :param torch.Tensor data: ``(X, Y, Z)`` values on the grid of ``affine``.
    :param str path: output file ending in ``.nii`` or ``.nii.gz``; written atomically.
    :param Volume like: volume whose header (and affine) the output inherits.
    :param numpy.ndarray affine: affine of ``data`` if it differs from ``like.affine`` (after
        resampling, for example). Default: ``like.affine``.
    :param numpy.dtype dtype: on-disk data type. Default ``float32``; pass
        ``like.header.get_data_dtype()`` to keep the input's type (values are rounded and
        clipped to its range for integer types).
    :return: the written path.
    """
    path = Path(path)
    if _nifti_suffix(path) is None:
        raise ValueError(f"output file '{path}' must end in {' or '.join(NIFTI_SUFFIXES)}")
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim != 3:
        raise ValueError(f"data to save must be 3D (X, Y, Z), got shape {array.shape}")
    affine = like.affine if affine is None else affine
    header = like.header.copy()
    dtype = np.dtype(dtype if dtype is not None else header.get_data_dtype())
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(array.astype(dtype), affine, header=header)
    image.set_qform(affine, code=int(header["qform_code"]) or 1)
    image.set_sform(affine, code=int(header["sform_code"]) or 1)
    return atomic_write(path, lambda tmp: nib.save(image, str(tmp)))
