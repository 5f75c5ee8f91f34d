r"""``save_pretrained`` / ``from_pretrained`` for the package's own networks.

Every checkpoint is a folder with ``config.json`` (the constructor's keyword arguments, the
class name and the SHA-256 of the weights file) and ``model.safetensors`` (the state dict), as in
diffusers. Nothing is pickled. Loading checks the digest, so a weights file changed on disk (a
flipped byte, a truncated copy) is refused instead of producing NaN images downstream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils.atomic import atomic_write, file_sha256, write_json_atomic

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: config key of the weights file's SHA-256 (hex)
DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as the requested model; the message says why."""


class PretrainedMixin:
    """Mixin for ``torch.nn.Module`` subclasses whose constructor takes JSON-serialisable
    keyword arguments, stored as ``self.config`` (a dict) by the subclass."""

    config: dict[str, Any]

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (atomically, each).

        :param torch.dtype dtype: storage type of the floating-point weights (e.g. ``torch.float16``
            halves a float32 file; :meth:`from_pretrained` loads them into the model's own type).
            Default ``None``: as they are.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.state_dict().items()
        }
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
        config = {"class": type(self).__name__, **self.config, DIGEST_KEY: file_sha256(directory / WEIGHTS_NAME)}
        write_json_atomic(directory / CONFIG_NAME, config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> Self:
        """Build the model from ``config.json`` and load ``model.safetensors``.

        :raises FileNotFoundError: a missing folder or file.
        :raises CheckpointError: a checkpoint of another class, a weights file whose SHA-256
            differs from the one its config records, an unreadable or non-finite weights file, or
            weights that do not fit the config (the message lists the first mismatching tensors).
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
        expected_digest = config.pop(DIGEST_KEY, None)  # None: written before digests were kept
        if expected_digest is not None and (actual := file_sha256(directory / WEIGHTS_NAME)) != expected_digest:
            raise CheckpointError(
                f"checkpoint '{directory}': {WEIGHTS_NAME} has SHA-256 {actual}, but its {CONFIG_NAME} records "
                f"{expected_digest}: the file changed after it was saved (corrupted or replaced); restore it"
            )
        saved_class = config.pop("class", cls.__name__)
        if saved_class != cls.__name__:
            raise CheckpointError(f"checkpoint '{directory}' holds a {saved_class}, not a {cls.__name__}")
        try:
            model = cls(**config)
        except TypeError as err:
            raise CheckpointError(f"checkpoint '{directory}': config does not fit {cls.__name__} ({err})") from None
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except SafetensorError as err:
            raise CheckpointError(
                f"checkpoint '{directory}': {WEIGHTS_NAME} is not a readable safetensors file ({err})"
            ) from None
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"checkpoint '{directory}': non-finite values in {bad[:3]}")
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
