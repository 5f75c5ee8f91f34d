"""The corpus' reserved subjects as the benchmarks read them (``run_reserved.py`` and every study
on its protocol): interleaved, disjoint reference and evaluation slices of a subject, padded to a
square and resized to 128x128, and their measurements, simulated with one seeded generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch

from deepinv_tunable.data.corpus import load_corpus
from deepinv_tunable.data.slicing import select_slices
from deepinv_tunable.physics import to_physics_domain

#: the repository root (the corpus and results folders are found from it)
ROOT = Path(__file__).resolve().parents[1]
SIZE = 128
#: reserved subject -> modality (the keys of ``benchmarks.tasks.RESERVED_TASKS_OF``)
SUBJECTS = {"itk_t1": "mr", "pyradiomics_brain2": "mr", "pyradiomics_lung2": "ct"}


def fit_square(image: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Zero-pad ``(H, W)`` to a centred square; shrink (antialiased) to ``size`` if larger."""
    h, w = image.shape
    side = max(h, w, size)
    out = torch.zeros(side, side)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    if side > size:
        out = torch.nn.functional.interpolate(
            out[None, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0, 0]
    return out.clamp(0, 1)


@dataclass
class Subject:
    name: str
    modality: str
    calibration: torch.Tensor
    evaluation: torch.Tensor
    calibration_idx: list[int]
    evaluation_idx: list[int]


def load_subject(name: str, n_cal: int, n_eval: int, root: str) -> Subject:
    """Interleaved reference and evaluation slices of a reserved subject (disjoint); a
    training-split subject's the same way, for developing a rule before any reserved run."""
    records = load_corpus(root, split="eval" if name in SUBJECTS else "train", subjects=(name,)).images
    if not records:
        raise ValueError(f"subject {name!r} is not in the corpus at {root!r}")
    images = [c.image for c in records]
    n = len(images)
    ev = select_slices(n, 0, n, n_eval)
    gap = max(1, n // n_eval // 2)
    cal_pool = [i + gap for i in ev if i + gap < n and i + gap not in ev]
    cal = [cal_pool[j] for j in np.linspace(0, len(cal_pool) - 1, min(n_cal, len(cal_pool))).round().astype(int)]
    if set(cal) & set(ev):
        raise ValueError(f"subject {name}: reference and evaluation slices overlap")
    stack = torch.stack([fit_square(im) for im in images]).unsqueeze(1)
    return Subject(name, records[0].modality, stack[cal], stack[ev], cal, ev)


def measure(
    subject: Subject, physics: dinv.physics.Physics, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference and the evaluation measurements of ``subject`` (one generator seeded with
    ``seed``, reference slices first): every benchmark that compares with this one sees the same."""
    gen = torch.Generator(device=device).manual_seed(seed)
    y_cal = physics(to_physics_domain(subject.calibration.to(device), physics), rng=gen)
    return y_cal, physics(to_physics_domain(subject.evaluation.to(device), physics), rng=gen)
