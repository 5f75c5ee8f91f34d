"""The sample volumes shipped inside the package (see ``data_cards/`` for their cards)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

_SAMPLE_DIR = Path(__file__).parent / "sample"


@dataclass(frozen=True)
class SampleVolume:
    name: str
    filename: str
    description: str
    kind: str  # "template" | "subject"
    card: str


SAMPLES: dict[str, SampleVolume] = {
    s.name: s
    for s in (
        SampleVolume(
            "mni152_t1",
            "mni_icbm152_2009a_t1.nii.gz",
            "MNI ICBM152 2009a symmetric T1 template, 197x233x189 at 1 mm (population average)",
            "template",
            "data_cards/mni152_t1.md",
        ),
        SampleVolume(
            "itk_t1",
            "itk_kmeans_t1.nii.gz",
            "Single-subject T1 head MRI from ITK's examples, 128x128x62 at 2x2x3 mm",
            "subject",
            "data_cards/itk_t1.md",
        ),
    )
}

SAMPLE_PREFIX = "sample:"


def available_samples() -> list[str]:
    """Names of the bundled sample volumes."""
    return sorted(SAMPLES)


def sample_path(name: str) -> Path:
    """Path of a bundled sample volume.

    >>> sample_path("mni152_t1").name
    'mni_icbm152_2009a_t1.nii.gz'
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample volume '{name}': available are {available_samples()}")
    return _SAMPLE_DIR / SAMPLES[name].filename


def resolve_input(spec: str | Path) -> Path:
    """Turn ``"sample:NAME"`` into the bundled file's path; other values are paths as given."""
    spec = str(spec)
    if spec.startswith(SAMPLE_PREFIX):
        return sample_path(spec[len(SAMPLE_PREFIX) :])
    return Path(spec)


def sample_slices(
    name: str,
    plane: str = "coronal",
    indices: Sequence[int] = (40, 44, 48, 52),
    spacing: float | None = None,
    size: Sequence[int] | None = (128, 128),
) -> torch.Tensor:
    r"""Slices of a bundled volume as a deepinv image batch in ``[0, 1]``: the volume reoriented
    to RAS+ (:func:`~deepinv_tunable.data.prepare_volume`), scaled by its robust intensity range
    (:func:`~deepinv_tunable.data.percentile_scaling`) and cut along ``plane``.

    The ground truth of the docs' examples and tutorials; reconstructing your own data goes
    through :func:`~deepinv_tunable.data.load_volume` the same way.

    :param str name: a bundled volume (:func:`available_samples`).
    :param str plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``. Default ``"coronal"``.
    :param indices: slice indices along ``plane``. Default four slices through the ITK subject's
        ventricles.
    :param float spacing: in-plane voxel size in mm after resampling; ``None`` keeps the grid.
    :param size: in-plane ``(H, W)`` after a centred crop or pad. Default ``(128, 128)``.
    :return: ``(len(indices), 1, H, W)`` float32 tensor.

    >>> sample_slices("itk_t1", indices=[40, 50]).shape
    torch.Size([2, 1, 128, 128])
    """
    from .normalize import percentile_scaling
    from .slicing import prepare_volume, volume_to_slices
    from .volume import load_volume

    volume = prepare_volume(load_volume(sample_path(name)), plane, spacing=spacing, size=size)
    slices = volume_to_slices(volume.data, plane)
    bad = [i for i in indices if not 0 <= i < slices.shape[0]]
    if bad:
        raise ValueError(f"slice indices {bad} are outside the {slices.shape[0]} {plane} slices of '{name}'")
    return percentile_scaling(volume.data).apply(slices[list(indices)]).float()
