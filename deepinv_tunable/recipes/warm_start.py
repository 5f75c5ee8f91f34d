r"""The order in which a run reconstructs its slices, and where each slice starts from.

Without a warm start, batches are consecutive runs of ``batch_size`` evaluation slices. With
``solver.warm_start``, the evaluation slices are cut into ``batch_size`` contiguous *chains* and
batch ``j`` holds the ``j``-th slice of every chain, so a batch stays full for throughput while
each of its slices starts from the reconstruction of the slice just before it in its chain (one
evaluation slice away). The first batch starts from the measurements.

>>> batches, predecessor = slice_batches([10, 11, 12, 13, 14, 15, 16], batch_size=3, warm_start=True)
>>> batches  # chains 10-12, 13-14, 15-16
[[10, 13, 15], [11, 14, 16], [12]]
>>> predecessor[14], predecessor[13]
(13, None)
>>> slice_batches([10, 11, 12], batch_size=2, warm_start=False)[0]
[[10, 11], [12]]
"""

from __future__ import annotations

from ..data import batched


def slice_batches(
    indices: list[int], batch_size: int, warm_start: bool
) -> tuple[list[list[int]], dict[int, int | None]]:
    """The batches of ``indices`` in processing order, and each slice's predecessor (the slice
    whose reconstruction it starts from; ``None``: it starts from the measurements)."""
    if not warm_start:
        return [list(b) for b in batched(indices, batch_size)], dict.fromkeys(indices)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_chains = max(min(batch_size, len(indices)), 1)
    size, longer = divmod(len(indices), n_chains)  # the first ``longer`` chains hold one slice more
    starts = [c * size + min(c, longer) for c in range(n_chains + 1)]
    chains = [list(indices[starts[c] : starts[c + 1]]) for c in range(n_chains)]
    length = max((len(chain) for chain in chains), default=0)
    batches = [[chain[j] for chain in chains if j < len(chain)] for j in range(length)]
    predecessor = {k: (chain[j - 1] if j else None) for chain in chains for j, k in enumerate(chain)}
    return batches, predecessor


def rank_batches(
    indices: list[int], batch_size: int, warm_start: bool, rank: int = 0, world_size: int = 1
) -> tuple[list[list[int]], dict[int, int | None]]:
    """Process ``rank``'s batches (of ``world_size``) and each slice's predecessor. Without a warm
    start the ranks share out the single-process run's batches (contiguous blocks of them), so a
    slice is computed in the same batch, with the same result, whatever the number of processes;
    with one, each rank runs the chains of its own contiguous block of slices (:func:`shard`).

    >>> rank_batches([10, 11, 12, 13, 14], 2, False, rank=1, world_size=2)[0]
    [[14]]
    >>> rank_batches([10, 11, 12, 13, 14], 2, True, rank=1, world_size=2)[0]
    [[13, 14]]
    """
    if warm_start:
        return slice_batches(shard(indices, rank, world_size), batch_size, True)
    batches, predecessor = slice_batches(indices, batch_size, False)
    return shard(batches, rank, world_size), predecessor


def shard(indices: list, rank: int, world_size: int) -> list:
    """Rank ``rank``'s contiguous block of ``indices`` (slices, or batches; block lengths differ by one at most), so
    that a warm start's chains stay within one process: each shard starts cold.

    >>> [shard(list(range(7)), r, 3) for r in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    size, longer = divmod(len(indices), world_size)
    start = rank * size + min(rank, longer)
    return list(indices[start : start + size + (rank < longer)])


__all__ = ["rank_batches", "shard", "slice_batches"]
