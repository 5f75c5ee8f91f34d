r"""Training data: 2D slices of a bundled (or user) volume, with a held-out slab and torchio
augmentation, as a Lightning ``DataModule``.

The held-out slab (``holdout``) never reaches the training set; validation uses it without
augmentation, so every validation number is on slices the model never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torchio as tio
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from ..data import load_volume, percentile_scaling, prepare_volume, resolve_input, volume_to_slices


class SliceDataConfig(BaseModel):
    """Where training slices come from (validated; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    input: str = "sample:mni152_t1"
    plane: str = "axial"
    spacing: float | None = 1.8
    size: tuple[int, int] = (128, 128)
    holdout: tuple[int, int] = Field((100, 140), description="[start, stop) slice slab kept out of training")
    min_foreground: float = Field(0.05, ge=0, description="skip slices whose mean intensity is below this")
    augment: bool = True
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    samples_per_epoch: int = Field(512, ge=1)
    val_slices: int = Field(8, ge=1, description="held-out slices used for validation")
    patch_size: int | None = Field(None, ge=8, description="train on random square patches of this size "
                                   "(validation keeps whole slices)")


def load_slices(cfg: SliceDataConfig) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Normalised ``(N, 1, H, W)`` training and held-out slices and their indices.

    Slices with mean intensity below ``min_foreground`` (air above and below the head) are
    dropped from both sets.
    """
    volume = prepare_volume(load_volume(resolve_input(cfg.input)), cfg.plane, spacing=cfg.spacing, size=cfg.size)
    scaling = percentile_scaling(volume.data)
    slices = scaling.apply(volume_to_slices(volume.data, cfg.plane)).clamp(0, 1)
    start, stop = cfg.holdout
    if not 0 <= start < stop <= len(slices):
        raise ValueError(f"holdout slab [{start}, {stop}) is empty or outside [0, {len(slices)})")
    keep = [i for i in range(len(slices)) if float(slices[i].mean()) >= cfg.min_foreground]
    train_idx = [i for i in keep if not start <= i < stop]
    held_idx = [i for i in keep if start <= i < stop]
    if not train_idx or not held_idx:
        raise ValueError(f"no slices left for training ({len(train_idx)}) or validation ({len(held_idx)}); "
                         "lower min_foreground or move the holdout slab")
    step = max(1, len(held_idx) // cfg.val_slices)
    held_idx = held_idx[::step][: cfg.val_slices]
    return slices[train_idx], slices[held_idx], train_idx, held_idx


def default_augmentation() -> tio.Compose:
    """Geometry and contrast changes that make a prior learned from a template fit individual
    subjects: small rotations and scalings, elastic deformation, left-right flips, a smooth bias
    field and a gamma change of contrast."""
    return tio.Compose([
        tio.RandomAffine(scales=(0.9, 1.1), degrees=(0, 0, 8), translation=(4, 4, 0), p=0.8),
        tio.RandomElasticDeformation(num_control_points=7, max_displacement=(6, 6, 0), p=0.3),
        tio.RandomFlip(axes=(0,), p=0.5),
        tio.RandomBiasField(coefficients=0.3, p=0.5),
        tio.RandomGamma(log_gamma=0.3, p=0.5),
    ])


class AugmentedSlices(Dataset):
    """``samples_per_epoch`` random slices of ``slices``, each freshly augmented."""

    def __init__(self, slices: torch.Tensor, samples_per_epoch: int, transform: tio.Transform | None,
                 patch_size: int | None = None, min_foreground: float = 0.05):
        self.slices = slices
        self.samples_per_epoch = samples_per_epoch
        self.transform = transform
        self.patch_size = patch_size
        self.min_foreground = min_foreground
        if patch_size is not None and patch_size > min(slices.shape[-2:]):
            raise ValueError(f"patch_size {patch_size} exceeds the slice size {tuple(slices.shape[-2:])}")

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        x = self.slices[index % len(self.slices)]
        if self.transform is not None:
            # torchio works on (C, X, Y, Z) volumes: a 2D slice is a one-voxel-thick volume.
            x = self.transform(x.unsqueeze(-1))[..., 0].clamp(0, 1)
        return x if self.patch_size is None else self.random_patch(x)

    def random_patch(self, x: torch.Tensor) -> torch.Tensor:
        """A random ``patch_size`` square of ``x``; up to 8 draws avoid patches of pure air."""
        p = self.patch_size
        for _ in range(8):
            i = int(torch.randint(0, x.shape[-2] - p + 1, ()))
            j = int(torch.randint(0, x.shape[-1] - p + 1, ()))
            patch = x[..., i:i + p, j:j + p]
            if float(patch.mean()) >= self.min_foreground:
                break
        return patch


class SliceDataModule(L.LightningDataModule):
    """Training slices (augmented, reshuffled every epoch) and held-out validation slices."""

    def __init__(self, config: SliceDataConfig | dict | None = None, slices: Sequence[torch.Tensor] | None = None):
        super().__init__()
        self.cfg = config if isinstance(config, SliceDataConfig) else SliceDataConfig(**(config or {}))
        self._given = slices

    def setup(self, stage: str | None = None) -> None:
        if self._given is not None:
            self.train_slices, self.val_slices = self._given
        else:
            self.train_slices, self.val_slices, _, _ = load_slices(self.cfg)

    def train_dataloader(self) -> DataLoader:
        transform = default_augmentation() if self.cfg.augment else None
        data = AugmentedSlices(self.train_slices, self.cfg.samples_per_epoch, transform, self.cfg.patch_size,
                               self.cfg.min_foreground)
        return DataLoader(data, batch_size=self.cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_slices, batch_size=self.cfg.batch_size)
