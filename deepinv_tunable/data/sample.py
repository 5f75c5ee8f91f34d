"""The sample volumes shipped inside the package (see ``data_cards/`` for their cards)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
