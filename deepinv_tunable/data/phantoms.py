r"""Seeded synthetic phantoms (ellipses / ellipsoids) for CT examples and known-answer tests.

An ellipse is ``(value, a, b, x0, y0, angle_deg)`` on the square ``[-1, 1]^2``; overlapping
ellipses add up, as in the Shepp-Logan construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Toft's "modified Shepp-Logan" table: higher-contrast values than the original 1974 phantom.
MODIFIED_SHEPP_LOGAN: tuple[tuple[float, ...], ...] = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def ellipses_2d(size: int | tuple[int, int], ellipses: Sequence[Sequence[float]]) -> torch.Tensor:
    r"""Rasterise ellipses on an ``(H, W)`` grid covering ``[-1, 1]^2`` (y up).

    :param size: ``H`` or ``(H, W)``.
    :param ellipses: rows ``(value, a, b, x0, y0, angle_deg)``.
    :return: ``(H, W)`` float32 image.
    """
    h, w = (size, size) if isinstance(size, int) else size
    y = torch.linspace(1, -1, h).view(-1, 1)
    x = torch.linspace(-1, 1, w).view(1, -1)
    image = torch.zeros(h, w)
    for value, a, b, x0, y0, angle in ellipses:
        t = math.radians(angle)
        xr = (x - x0) * math.cos(t) + (y - y0) * math.sin(t)
        yr = -(x - x0) * math.sin(t) + (y - y0) * math.cos(t)
        image += value * ((xr / a) ** 2 + (yr / b) ** 2 <= 1).float()
    return image


def shepp_logan_2d(size: int | tuple[int, int] = 128) -> torch.Tensor:
    """Modified Shepp-Logan head phantom, values in ``[0, 1]``, shape ``(H, W)``.

    >>> shepp_logan_2d(64).shape
    torch.Size([64, 64])
    """
    return ellipses_2d(size, MODIFIED_SHEPP_LOGAN).clamp(0, 1)


def random_ellipses_2d(
    size: int | tuple[int, int] = 128, n_ellipses: int = 8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random head-like phantom: an outer ellipse with ``n_ellipses`` inner ones, in ``[0, 1]``.

    Reproducible for a seeded ``generator``.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=g))  # noqa: E731
    rows = [(0.8, u(0.6, 0.8), u(0.75, 0.92), 0.0, 0.0, u(-10, 10))]
    for _ in range(n_ellipses):
        rows.append((u(-0.4, 0.4), u(0.05, 0.3), u(0.05, 0.3), u(-0.4, 0.4), u(-0.5, 0.5), u(0, 180)))
    return ellipses_2d(size, rows).clamp(0, 1)


def random_ellipsoids_3d(
    shape: tuple[int, int, int] = (64, 64, 64), n_ellipsoids: int = 8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random 3D phantom (axis-aligned ellipsoids inside an outer one), values in ``[0, 1]``."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=g))  # noqa: E731
    axes = [torch.linspace(-1, 1, n) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    volume = torch.zeros(shape)

    def add(value, radii, centre):
        inside = sum(((c - c0) / r) ** 2 for c, c0, r in zip((x, y, z), centre, radii)) <= 1
        volume.add_(value * inside.float())

    add(0.8, (u(0.7, 0.9), u(0.75, 0.92), u(0.7, 0.9)), (0.0, 0.0, 0.0))
    for _ in range(n_ellipsoids):
        add(u(-0.4, 0.4), tuple(u(0.05, 0.3) for _ in range(3)), tuple(u(-0.4, 0.4) for _ in range(3)))
    return volume.clamp(0, 1)
