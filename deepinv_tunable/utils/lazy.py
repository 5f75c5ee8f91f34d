"""Package namespaces that import a module only when one of its names is first used, so that a
user of one denoiser does not pay for (or need) the libraries of every other model: diffusers,
Lightning, torchio and matplotlib stay unimported until a latent model, a training run, a volume
or a figure asks for them."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` is defined in the
    submodule ``exports[name]`` (relative, e.g. ``"pnp_hvae"``), imported on first access.

    >>> getattr_, dir_ = lazy_exports("deepinv_tunable.solvers", {"TVPGD": "classical"})
    >>> getattr_("TVPGD").__name__, dir_()
    ('TVPGD', ['TVPGD'])
    """

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
