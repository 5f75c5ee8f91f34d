"""Checkpoints shipped inside the package (each folder: ``config.json``, ``model.safetensors``,
``README.md`` model card). Nothing is downloaded: :func:`load` reads them from disk.

>>> "tunable_vae_mri128" in available()
True
>>> load("tunable_vae_mri128").latent_dim
2048
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import nets
from ..nets.checkpoint import CONFIG_NAME

_DIR = Path(__file__).parent
#: checkpoint ``class`` names this version loads (each a :mod:`deepinv_tunable.nets` class with
#: ``from_pretrained``, imported when a checkpoint of it is loaded)
MODEL_CLASSES = ("ConditionalDRUNet", "DnCNN", "TunableVAE", "LatentUNet", "OrderedFlow", "HVAE", "SeverityEncoder")


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.name for p in _DIR.iterdir() if (p / CONFIG_NAME).is_file())


def path(name: str) -> Path:
    """Folder of the shipped checkpoint ``name`` (its model card is ``README.md`` there)."""
    if name not in available():
        raise ValueError(f"unknown pretrained model '{name}': available are {available()}")
    return _DIR / name


def load(name: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A model ready for inference (eval mode, on ``device``): a shipped ``name`` (see
    :func:`available`) or the path of a folder written by ``save_pretrained`` (e.g. the
    ``model/`` folder of a training run)."""
    folder = Path(name)
    if str(name) in available():
        folder = path(str(name))
    elif not (folder / CONFIG_NAME).is_file():
        raise ValueError(
            f"unknown pretrained model '{name}': available are {available()}, "
            "or give the path of a folder written by save_pretrained"
        )
    cls_name = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("class")
    if cls_name not in MODEL_CLASSES:
        raise ValueError(f"model '{name}' has class '{cls_name}', which this version cannot load")
    return getattr(nets, cls_name).from_pretrained(folder, device=device)
