"""What a run has finished, on disk as it goes, so that an interrupted run keeps its finished
slices and ``--resume`` continues from them.

* **Slice stacks**: each a ``float32`` ``.npy`` memory map of shape ``(n_slices, H, W)`` in
  ``OUT/.partial/``, shared by the processes of an N-device run (each writes its own slices).
  The memory maps also keep the results of a long volume out of RAM (the OS pages them out).
* **Shard logs**: ``OUT/.partial/rank_R.json``, one per process, the list of its finished batches
  (slices, per-slice metrics, solver seconds, records), rewritten atomically after a batch's
  slices are flushed to the stacks: every slice a log calls finished is on disk.

When the run completes, the NIfTI volumes are written from the stacks and the folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..utils.atomic import write_json_atomic

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


class ShardLog:
    """One process's finished batches, ``OUT/.partial/rank_R.json``: a JSON list of entries
    ``{"slices", "metrics", "seconds", "records", "rank"}`` (see
    :mod:`~deepinv_tunable.recipes.runner`), rewritten atomically after each batch.

    :param pathlib.Path out_dir: the run's output folder.
    :param int rank: the process's global rank.
    :param bool resume: keep the entries an interrupted run of this rank wrote.
    """

    def __init__(self, out_dir: Path, rank: int, resume: bool = False):
        self.path = Path(out_dir) / PARTIAL_DIR / f"rank_{rank}.json"
        self.entries: list[dict] = json.loads(self.path.read_text()) if resume and self.path.is_file() else []

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        write_json_atomic(self.path, self.entries)


def read_shard_logs(out_dir: Path, indices: list[int] | None = None) -> list[dict]:
    """Every process's finished batches (of this run and of the runs it resumes), ordered by
    their first slice. Raises ``RuntimeError`` when a slice was finished twice, or, given the
    evaluation ``indices``, when one of them is missing or another slice appears.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> (out / PARTIAL_DIR).mkdir()
    >>> ShardLog(out, 1).append({"slices": [3, 4]})
    >>> ShardLog(out, 0).append({"slices": [1, 2]})
    >>> [entry["slices"] for entry in read_shard_logs(out, [1, 2, 3, 4])]
    [[1, 2], [3, 4]]
    """
    paths = sorted((Path(out_dir) / PARTIAL_DIR).glob("rank_*.json"))
    entries = [entry for path in paths for entry in json.loads(path.read_text())]
    seen: dict[int, int] = {}
    for entry in entries:
        for k in entry["slices"]:
            if k in seen:
                raise RuntimeError(f"slice {k} was reconstructed twice (ranks {seen[k]} and {entry.get('rank', 0)})")
            seen[k] = entry.get("rank", 0)
    if indices is not None:
        missing, extra = sorted(set(indices) - set(seen)), sorted(set(seen) - set(indices))
        if missing or extra:
            raise RuntimeError(f"the run is incomplete: missing slices {missing}, unexpected {extra}")
    return sorted(entries, key=lambda entry: min(entry["slices"]))


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a freshly created (sparse) memory-mapped file now: on a full
    disk, a store into an unbacked page of a memory map kills the process with SIGBUS ("Bus
    error"), while this raises an ``OSError`` (ENOSPC) the command line reports as exit 3."""
    if not hasattr(os, "posix_fallocate"):  # not on macOS / Windows: nothing to reserve with
        return
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
