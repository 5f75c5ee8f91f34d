"""What every part of the package shares and no method owns: :mod:`.atomic` (files written whole
or not at all), ``checks`` (input checks with errors that name the value), :mod:`.lazy`
(namespaces imported on first use), :mod:`.metrics` (deepinv's image-quality metrics),
:mod:`.precision` (the precision and memory format networks run in at inference) and
``progress`` (when progress bars show)."""
