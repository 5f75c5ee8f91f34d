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
    geometric_augment: bool = Field(
        True,
        description="with augment: also rotate, scale and elastically deform (torchio resamples these with "
        "SimpleITK; off leaves flips, bias field and gamma)",
    )
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    samples_per_epoch: int = Field(512, ge=1)
    val_slices: int = Field(8, ge=1, description="held-out slices used for validation")
    patch_size: int | None = Field(
        None, ge=8, description="train on random square patches of this size (validation keeps whole slices)"
    )
    corpus_root: str = Field("corpus", description="folder of `make corpus` (used when input is 'corpus')")
    modality_weights: dict[str, float] = Field(
        {"mr": 0.5, "natural": 0.35, "ct": 0.15},
        description="corpus only: share of each modality in a batch; within a modality every subject is "
        "drawn equally often, whatever its number of slices",
    )
    val_subjects: tuple[str, ...] = Field(
        ("nibabel_example4d",), description="corpus only: training-split subjects kept out of training for validation"
    )


CORPUS_INPUT = "corpus"


def load_corpus_images(cfg: SliceDataConfig) -> tuple[list[torch.Tensor], torch.Tensor, list[float]]:
    """Training images of the corpus' ``train`` split (``(1, H, W)``, any size at least the
    patch size), their sampling weights, and the validation subjects' slices cropped or padded
    to ``cfg.size``. The corpus' ``eval`` subjects are never read here."""
    from ..data.corpus import load_corpus

    if cfg.patch_size is None:
        raise ValueError("training on the corpus needs data.patch_size: its images have different sizes")
    corpus = load_corpus(cfg.corpus_root, split="train")
    unknown = set(cfg.val_subjects) - set(corpus.subjects)
    if unknown:
        raise ValueError(
            f"val_subjects {sorted(unknown)} are not training-split subjects of the corpus "
            f"(available: {corpus.subjects})"
        )
    # images a little smaller than the patch (a 111x111 brain slice for 128x128 patches) are
    # zero-padded, as the whole head then sits in the field of view; much smaller ones are skipped
    items = [
        c
        for c in corpus.images
        if c.subject not in cfg.val_subjects
        and min(c.image.shape) >= cfg.patch_size // 2
        and c.modality in cfg.modality_weights
    ]
    if not items:
        raise ValueError(f"no corpus image is at least {cfg.patch_size // 2} pixels on each side")
    # equal mass per subject within a modality, modality_weights across modalities
    per_subject: dict[str, int] = {}
    for c in items:
        per_subject[c.subject] = per_subject.get(c.subject, 0) + 1
    subjects_of = {m: {c.subject for c in items if c.modality == m} for m in cfg.modality_weights}
    present = {m: w for m, w in cfg.modality_weights.items() if subjects_of[m]}
    total = sum(present.values())
    weights = [present[c.modality] / total / len(subjects_of[c.modality]) / per_subject[c.subject] for c in items]
    val = [c.image for c in corpus.images if c.subject in cfg.val_subjects]
    if not val:
        raise ValueError(
            "no validation images: data.val_subjects must name at least one training-split subject "
            f"of the corpus to keep out of training (available: {corpus.subjects})"
        )
    step = max(1, len(val) // cfg.val_slices)
    h, w = cfg.size
    val_t = torch.stack([_crop_or_pad(v, h, w) for v in val[::step][: cfg.val_slices]]).unsqueeze(1)
    p = cfg.patch_size
    train = [_crop_or_pad(c.image, max(p, c.image.shape[0]), max(p, c.image.shape[1])).unsqueeze(0) for c in items]
    return train, val_t, weights


def _crop_or_pad(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centred crop / zero pad of a 2D image to ``(h, w)``."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    x = torch.nn.functional.pad(
        x, (max(dw, 0) // 2, max(dw, 0) - max(dw, 0) // 2, max(dh, 0) // 2, max(dh, 0) - max(dh, 0) // 2)
    )
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


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
        raise ValueError(
            f"no slices left for training ({len(train_idx)}) or validation ({len(held_idx)}); "
            "lower min_foreground or move the holdout slab"
        )
    step = max(1, len(held_idx) // cfg.val_slices)
    held_idx = held_idx[::step][: cfg.val_slices]
    return slices[train_idx], slices[held_idx], train_idx, held_idx


def default_augmentation(geometric: bool = True) -> tio.Compose:
    """Geometry and contrast changes that make a prior learned from a template fit individual
    subjects: small rotations and scalings, elastic deformation (``geometric``, default on),
    left-right flips, a smooth bias field and a gamma change of contrast."""
    spatial = [
        tio.RandomAffine(scales=(0.9, 1.1), degrees=(0, 0, 8), translation=(4, 4, 0), p=0.8),
        tio.RandomElasticDeformation(num_control_points=7, max_displacement=(6, 6, 0), p=0.3),
    ]
    return tio.Compose(
        (spatial if geometric else [])
        + [
            tio.RandomFlip(axes=(0,), p=0.5),
            tio.RandomBiasField(coefficients=0.3, p=0.5),
            tio.RandomGamma(log_gamma=0.3, p=0.5),
        ]
    )


class AugmentedSlices(Dataset):
    """``samples_per_epoch`` random slices of ``slices``, each freshly augmented."""

    def __init__(
        self,
        slices: torch.Tensor | Sequence[torch.Tensor],
        samples_per_epoch: int,
        transform: tio.Transform | None,
        patch_size: int | None = None,
        min_foreground: float = 0.05,
        weights: Sequence[float] | None = None,
    ):
        self.slices = slices
        self.samples_per_epoch = samples_per_epoch
        # with weights, each item is a weighted draw (the corpus mixes subjects of very different sizes)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.transform = transform
        self.patch_size = patch_size
        self.min_foreground = min_foreground
        smallest = min(min(s.shape[-2:]) for s in slices)
        if patch_size is not None and patch_size > smallest:
            raise ValueError(f"patch_size {patch_size} exceeds the smallest slice side {smallest}")

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.weights is not None:
            index = int(torch.multinomial(self.weights, 1))
        x = self.slices[index % len(self.slices)]
        if self.patch_size is not None:
            # augment a region 1.5x the patch, not the whole (possibly large) image: same
            # distribution of patches, a fraction of the cost
            x = self.random_patch(x, min(int(1.5 * self.patch_size), *x.shape[-2:]))
        if self.transform is not None:
            # torchio works on (C, X, Y, Z) volumes: a 2D slice is a one-voxel-thick volume.
            x = self.transform(x.unsqueeze(-1))[..., 0].clamp(0, 1)
        return x if self.patch_size is None else self.random_patch(x)

    def random_patch(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A random square of ``x`` (side ``size``, default ``patch_size``); up to 8 draws avoid
        patches of pure air."""
        p = size or self.patch_size
        for _ in range(8):
            i = int(torch.randint(0, x.shape[-2] - p + 1, ()))
            j = int(torch.randint(0, x.shape[-1] - p + 1, ()))
            patch = x[..., i : i + p, j : j + p]
            if float(patch.mean()) >= self.min_foreground:
                break
        return patch


class SliceDataModule(L.LightningDataModule):
    """Training slices (augmented, reshuffled every epoch) and held-out validation slices."""

    def __init__(self, config: SliceDataConfig | dict | None = None, slices: Sequence[torch.Tensor] | None = None):
        super().__init__()
        self.cfg = config if isinstance(config, SliceDataConfig) else SliceDataConfig(**(config or {}))
        self._given = slices
        self.weights: list[float] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._given is not None:
            self.train_slices, self.val_slices = self._given
        elif self.cfg.input == CORPUS_INPUT:
            self.train_slices, self.val_slices, self.weights = load_corpus_images(self.cfg)
        else:
            self.train_slices, self.val_slices, _, _ = load_slices(self.cfg)

    def train_images(self) -> torch.Tensor:
        """The training images as one ``(N, 1, H, W)`` tensor (corpus images of other sizes are
        centre-cropped or padded to the patch size), for statistics such as a latent scaling."""
        if isinstance(self.train_slices, torch.Tensor):
            return self.train_slices
        p = self.cfg.patch_size
        return torch.stack([_crop_or_pad(x, p, p) for x in self.train_slices])

    def train_dataloader(self) -> DataLoader:
        transform = default_augmentation(self.cfg.geometric_augment) if self.cfg.augment else None
        data = AugmentedSlices(
            self.train_slices,
            self.cfg.samples_per_epoch,
            transform,
            self.cfg.patch_size,
            self.cfg.min_foreground,
            self.weights,
        )
        return DataLoader(
            data,
            batch_size=self.cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_slices, batch_size=self.cfg.batch_size)
