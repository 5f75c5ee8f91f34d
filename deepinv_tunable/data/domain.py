"""Is a volume what the recipe assumes? Reasons to doubt a run's input, found before any work:
the run still goes ahead (none of these makes the answer meaningless), but each is recorded in
``metrics.json``'s ``doubts`` and said on one warning line."""

from __future__ import annotations

import nibabel as nib

from .volume import Volume

#: below this value a volume is taken for CT in Hounsfield units (air is -1000 HU)
HU_AIR_THRESHOLD = -500.0
#: in-plane resampling by more than this factor (either way) is flagged
MAX_RESAMPLING = 2.0


def input_doubts(volume: Volume, physics_kind: str, spacing: float | None, plane_axis: int) -> list[str]:
    """One sentence per reason to doubt that ``volume`` suits a recipe whose physics is
    ``physics_kind`` and which resamples in-plane to ``spacing`` mm (``None``: kept), slicing
    along array axis ``plane_axis`` of the canonical (RAS) volume.

    >>> import numpy as np, torch, nibabel as nib
    >>> ct = Volume(torch.full((4, 4, 4), -1024.0), np.diag([0.5, 0.5, 6.0, 1.0]), nib.Nifti1Header())
    >>> [d.split(":")[0] for d in input_doubts(ct, "mri", 1.8, 2)]
    ['intensities reach -1024', 'in-plane resampling by 3.6x']
    """
    doubts = []
    low = float(volume.data.min())
    if low < HU_AIR_THRESHOLD and physics_kind in ("mri", "multicoil_mri"):
        doubts.append(
            f"intensities reach {low:.0f}: the volume looks like CT in Hounsfield units, but the recipe "
            f"simulates {physics_kind} (the priors were trained per modality; results may not transfer)"
        )
    header = volume.header
    no_geometry = (
        volume.source is not None
        and str(volume.source).lower().endswith((".nii", ".nii.gz"))
        and int(header["qform_code"]) == 0
        and int(header["sform_code"]) == 0
    )
    if no_geometry:
        doubts.append(
            "the NIfTI file states no geometry (qform and sform codes 0): orientation and voxel size "
            f"{tuple(round(s, 3) for s in volume.spacing)} mm are nibabel's fallback, not the scanner's; "
            "spacing-dependent steps (resampling, slicing plane) may be wrong"
        )
    if spacing is not None:
        canonical = [0.0, 0.0, 0.0]  # voxel sizes along R, A, S: the axes the slicing plane names
        for array_axis, (ras_axis, _) in enumerate(nib.io_orientation(volume.affine)):
            canonical[int(ras_axis)] = volume.spacing[array_axis]
        in_plane = [s for a, s in enumerate(canonical) if a != plane_axis]
        factor = max(spacing / min(in_plane), max(in_plane) / spacing)
        if factor > MAX_RESAMPLING:
            doubts.append(
                f"in-plane resampling by {factor:.1f}x: voxels of {min(in_plane):.2f}-{max(in_plane):.2f} mm "
                f"to {spacing:g} mm (the recipe's data.spacing) {'discard' if spacing > min(in_plane) else 'invent'} "
                "in-plane detail; set data.spacing to null to keep the acquired grid"
            )
    return doubts
