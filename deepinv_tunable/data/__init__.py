"""Volume I/O, slicing, normalisation, phantoms and the bundled sample data."""

from .normalize import IntensityScaling, percentile_scaling
from .phantoms import random_ellipses_2d, random_ellipsoids_3d, shepp_logan_2d
from .sample import available_samples, resolve_input, sample_path, sample_slices
from .slicing import PLANES, batched, prepare_volume, select_slices, slices_to_volume, volume_to_slices
from .volume import Volume, load_volume, save_volume

__all__ = [
    "IntensityScaling",
    "PLANES",
    "Volume",
    "available_samples",
    "batched",
    "load_volume",
    "percentile_scaling",
    "prepare_volume",
    "random_ellipses_2d",
    "random_ellipsoids_3d",
    "resolve_input",
    "sample_path",
    "sample_slices",
    "save_volume",
    "select_slices",
    "shepp_logan_2d",
    "slices_to_volume",
    "volume_to_slices",
]
