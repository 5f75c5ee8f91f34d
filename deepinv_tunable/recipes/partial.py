"""Slice stacks written to disk as a run goes, so that an interrupted run keeps its finished
slices and ``--resume`` continues from them.

Each stack is a ``float32`` ``.npy`` memory map of shape ``(n_slices, H, W)`` in
``OUT/.partial/``: a finished batch is written and flushed before ``metrics.json`` lists its
slices, so every slice that ``metrics.json`` calls finished is on disk. The memory maps also
keep the results of a long volume out of RAM (the OS pages them out). When the run completes,
the NIfTI volumes are written from them and the folder is removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

PARTIAL_DIR = ".partial"


class PartialStacks:
    """Named ``(n_slices, H, W)`` stacks backed by ``.npy`` memory maps in ``out_dir/.partial``.

    :param pathlib.Path out_dir: the run's output folder.
    :param tuple names: stack names, e.g. ``("reconstruction", "baseline")``.
    :param tuple shape: ``(n_slices, H, W)``.
    :param bool resume: open existing stacks (they must exist with this shape) instead of
        creating zeroed ones.

    :Examples:

        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> stacks = PartialStacks(out, ("reconstruction",), (3, 2, 2))
        >>> stacks.write([1], {"reconstruction": torch.ones(1, 1, 2, 2)})
        >>> PartialStacks(out, ("reconstruction",), (3, 2, 2), resume=True).tensor("reconstruction").sum().item()
        4.0
    """

    def __init__(self, out_dir: Path, names: tuple[str, ...], shape: tuple[int, int, int], resume: bool = False):
        self.folder = Path(out_dir) / PARTIAL_DIR
        self.arrays: dict[str, np.ndarray] = {}
        if not resume:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
        for name in names:
            path = self.folder / f"{name}.npy"
            if resume:
                if not path.is_file():
                    raise FileNotFoundError(f"cannot resume: '{path}' is missing (the earlier run wrote no slices?)")
                array = np.load(path, mmap_mode="r+")
                if array.shape != tuple(shape) or array.dtype != np.float32:
                    raise ValueError(
                        f"cannot resume: '{path}' holds {array.dtype} {array.shape}, expected float32 {tuple(shape)}"
                    )
            else:
                array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(shape))
                _reserve(path)
            self.arrays[name] = array

    def write(self, indices: list[int], values: dict[str, torch.Tensor]) -> None:
        """Store ``(B, 1, H, W)`` results at slice ``indices`` and flush them to disk."""
        for name, tensor in values.items():
            self.arrays[name][indices] = tensor[:, 0].detach().cpu().numpy()
            self.arrays[name].flush()

    def tensor(self, name: str) -> torch.Tensor:
        """The whole stack as a ``(n_slices, 1, H, W)`` tensor (sharing the memory map)."""
        return torch.from_numpy(self.arrays[name]).unsqueeze(1)

    def remove(self) -> None:
        """Delete the memory maps (after the final volumes are written)."""
        self.arrays.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a freshly created (sparse) memory-mapped file now: on a full
    disk, a store into an unbacked page of a memory map kills the process with SIGBUS ("Bus
    error"), while this raises an ``OSError`` (ENOSPC) the command line reports as exit 3."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS / Windows: nothing to reserve with
        return
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
