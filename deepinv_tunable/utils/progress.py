"""The package's progress bars: one rule for when they show."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(iterable=None, progress: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand with ``total=``). ``progress``: ``True``
    shows it, ``False`` hides it, ``None`` (the default everywhere) shows it only on a terminal,
    so logs and CI output stay free of bars."""
    return tqdm(iterable, disable=None if progress is None else not progress, **kwargs)
