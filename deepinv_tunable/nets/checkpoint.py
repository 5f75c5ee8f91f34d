r"""``save_pretrained`` / ``from_pretrained`` for the package's own networks.

Every checkpoint is a folder with ``config.json`` (the constructor's keyword arguments plus the
class name) and ``model.safetensors`` (the state dict), as in diffusers. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write, write_json_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="PretrainedMixin")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as the requested model; the message says why."""


class PretrainedMixin:
    """Mixin for ``torch.nn.Module`` subclasses whose constructor takes JSON-serialisable
    keyword arguments, stored as ``self.config`` (a dict) by the subclass."""

    config: dict[str, Any]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (atomically, each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
        write_json_atomic(directory / CONFIG_NAME, {"class": type(self).__name__, **self.config})
        return directory

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, device: torch.device | str = "cpu") -> T:
        """Build the model from ``config.json`` and load ``model.safetensors``.

        :raises FileNotFoundError: a missing folder or file.
        :raises CheckpointError: a checkpoint of another class, or weights that do not fit the
            config (the message lists the first mismatching tensors).
        """
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"checkpoint '{directory}' has no {name}; expected a folder written by save_pretrained"
                )
        try:
            config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"checkpoint '{directory}': {CONFIG_NAME} is not valid JSON ({err})") from None
        saved_class = config.pop("class", cls.__name__)
        if saved_class != cls.__name__:
            raise CheckpointError(f"checkpoint '{directory}' holds a {saved_class}, not a {cls.__name__}")
        try:
            model = cls(**config)
        except TypeError as err:
            raise CheckpointError(f"checkpoint '{directory}': config does not fit {cls.__name__} ({err})") from None
        state = load_file(str(directory / WEIGHTS_NAME))
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            details = "; ".join(
                f"{what}: {names[:3]}"
                for what, names in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("shape mismatch", [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong]),
                )
                if names
            )
            raise CheckpointError(f"checkpoint '{directory}': weights do not match its config ({details})")
        model.load_state_dict(state)
        return model.to(device).eval()
