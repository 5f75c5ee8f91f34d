"""What every solver of the package shares: the :class:`Reconstruction` result and a
``reconstruct`` method that returns it, beside deepinv's plain ``forward``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import deepinv as dinv
import torch

from ..checks import check_finite


@dataclass
class Reconstruction:
    """Result of :meth:`TunableReconstructor.reconstruct`.

    :param torch.Tensor x: the reconstruction, in the physics' image domain (deepinv convention).
    :param float wall_time: seconds spent in the solver.
    :param int n_iter: iterations performed, when the solver counts them.
    :param k: latent size used (int or per-example ``(B,)`` tensor), for tunable priors.
    :param int nfe: network evaluations (decoder / denoiser calls per example).
    :param list iterates: intermediate estimates, when asked for (``return_iterates=True``).
    :param dict extras: solver-specific outputs (residual history, chosen parameters, ...).
    """

    x: torch.Tensor
    wall_time: float
    n_iter: int | None = None
    k: Any = None
    nfe: int | None = None
    iterates: list[torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def diagnostics(self) -> dict[str, list]:
        """Per-example solver diagnostics as JSON-ready lists (``metrics.json`` and the report
        show them); solvers with more to say override it. Default: the NFE when counted per
        example."""
        return {"nfe": self.nfe.tolist()} if isinstance(self.nfe, torch.Tensor) else {}


class NoiseStream:
    r"""The noise of a stochastic solver, one mechanism for all of them: the solver's own
    generator, seeded once, so successive calls draw fresh but reproducible noise; a call's
    ``seed=`` (a fresh generator) or ``generator=`` overrides it; without any seed, ``None``
    (torch's global RNG). The generator is made on first use on the device asked for (a CPU
    generator cannot feed CUDA noise).

    :param int seed: the stream's seed, or ``None``.

    >>> stream = NoiseStream(seed=0)
    >>> a, b = (torch.randn(2, generator=stream.generator()) for _ in range(2))
    >>> bool((a != b).all()), torch.equal(a, torch.randn(2, generator=torch.Generator().manual_seed(0)))
    (True, True)
    >>> NoiseStream().generator() is None
    True
    """

    def __init__(self, seed: int | None = None):
        self.seed = None if seed is None else int(seed)
        self._generator: torch.Generator | None = None

    def generator(
        self, device: torch.device | str = "cpu", seed: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Generator | None:
        """The generator of one call (see the class)."""
        if generator is not None:
            return generator
        device = torch.device(device)
        if seed is not None:
            return torch.Generator(device=device).manual_seed(int(seed))
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device.type != device.type:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


class TunableReconstructor(dinv.models.Reconstructor):
    """A deepinv :class:`~deepinv.models.Reconstructor` whose :meth:`reconstruct` also reports
    timing and solver details. Subclasses implement :meth:`_solve`."""

    #: whether repeated calls draw different (posterior) samples
    stochastic = False

    def forward(self, y: torch.Tensor, physics: dinv.physics.Physics, **kwargs) -> torch.Tensor:
        return self.reconstruct(y, physics, **kwargs).x

    def reconstruct(self, y: torch.Tensor, physics: dinv.physics.Physics, **kwargs) -> Reconstruction:
        """Reconstruct from ``y`` and return a :class:`Reconstruction` (``forward`` returns its ``x``)."""
        if not torch.is_complex(y):
            check_finite(y, "measurements y")
        start = time.perf_counter()
        out = self._solve(y, physics, **kwargs)
        if isinstance(out, Reconstruction):
            out.wall_time = time.perf_counter() - start
            return out
        x, n_iter, extras = out
        return Reconstruction(x=x, wall_time=time.perf_counter() - start, n_iter=n_iter, extras=extras)

    def _solve(self, y, physics, **kwargs) -> tuple[torch.Tensor, int | None, dict] | Reconstruction:
        """Return ``(x, n_iter, extras)`` or a :class:`Reconstruction` (its ``wall_time`` is set here)."""
        raise NotImplementedError
