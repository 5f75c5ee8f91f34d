"""Where a run may write: an output folder that can be one and never holds the run's inputs."""

from __future__ import annotations

import os
from pathlib import Path

from .schema import RecipeError


def check_output_dir(out_dir: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output folder that cannot be one before anything runs: an existing file, a
    place the user may not write to (the folder itself, or its nearest existing parent), or a
    folder holding one of the run's ``inputs`` (a run writes ``reference.nii.gz``,
    ``metrics.json``, ``figures/`` ... there, and an input of that name would be overwritten)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(f"output.dir: {out_dir} is a file; expected a folder (created if missing)")
    for source in inputs:
        if source.resolve().is_relative_to(out_dir.resolve()):
            raise RecipeError(
                f"output.dir: {out_dir} contains the input {source}; the run's outputs could overwrite it. "
                "Choose an --out folder that does not hold the input"
            )
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RecipeError(f"output.dir: {existing} (on the way to {out_dir}) is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(
            f"output.dir: cannot write to {existing} (permission denied); choose another --out"
            + ("" if existing == out_dir else f" (needed to create {out_dir})")
        )
