"""Where an image crosses between the package's real single-channel images and a physics' domain
(2-channel complex MRI, complex phase retrieval): the one place that conversion lives."""

from __future__ import annotations

import copy

import deepinv as dinv
import torch


def is_complex_mri(physics: dinv.physics.Physics) -> bool:
    """Whether ``physics`` expects deepinv's 2-channel complex images (MRI operators)."""
    return isinstance(physics, (dinv.physics.MRI, dinv.physics.MultiCoilMRI))


def is_phase_retrieval(physics: dinv.physics.Physics) -> bool:
    return isinstance(physics, dinv.physics.PhaseRetrieval)


def magnitude(x: torch.Tensor) -> torch.Tensor:
    r"""Magnitude of a deepinv complex image ``(B, 2, H, W)`` -> ``(B, 1, H, W)``:
    :math:`\sqrt{x_\text{re}^2 + x_\text{im}^2}`. Complex dtypes are accepted too."""
    if torch.is_complex(x):
        return x.abs()
    if x.shape[1] != 2:
        raise ValueError(f"expected a complex image with 2 channels (real, imaginary), got shape {tuple(x.shape)}")
    return torch.linalg.vector_norm(x, dim=1, keepdim=True)


def to_physics_domain(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """A real single-channel image ``(B, 1, H, W)`` as the input ``physics`` expects:
    2 channels with zero imaginary part for MRI, a complex tensor for phase retrieval,
    unchanged otherwise. Images already in that domain are returned as they are."""
    if is_complex_mri(physics):
        return x if x.shape[1] == 2 else torch.cat([x, torch.zeros_like(x)], dim=1)
    if is_phase_retrieval(physics):
        return x.to(torch.cfloat)
    return x


def physics_domain_adjoint(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """Adjoint of :func:`to_physics_domain` (a linear embedding of real images): the real
    channel of a 2-channel MRI image, the real part of a complex one, ``x`` otherwise."""
    if is_complex_mri(physics):
        return x[:, :1]
    return x.real if torch.is_complex(x) else x


def real_image_physics(physics: dinv.physics.Physics) -> dinv.physics.Physics:
    r"""``physics`` as an operator on real single-channel images, :math:`A \circ \iota` with
    :math:`\iota` = :func:`to_physics_domain` (adjoint :math:`\iota^\top A^\top`, its noise model
    kept); ``physics`` itself where images already are real single-channel.

    A sampler or solver that takes any deepinv physics then carries a real image as its state: a
    prior trained on magnitude images never sees (and never invents) an imaginary channel, and on
    MRI it runs on one channel instead of two. The answer is in the real domain
    (``(B, 1, H, W)``); :func:`to_physics_domain` maps it back.

    >>> import torch
    >>> from deepinv_tunable.physics import build_physics
    >>> mri = build_physics({"kind": "mri", "acceleration": 4}, (16, 16))
    >>> real = real_image_physics(mri)
    >>> x, y = torch.rand(1, 1, 16, 16), torch.randn(1, 2, 16, 16)
    >>> real.A(x).shape, real.A_adjoint(y).shape
    (torch.Size([1, 2, 16, 16]), torch.Size([1, 1, 16, 16]))
    >>> bool(torch.allclose((real.A(x) * y).sum(), (x * real.A_adjoint(y)).sum(), atol=1e-4))  # adjoint
    True
    """
    if not (is_complex_mri(physics) or is_phase_retrieval(physics)):
        return physics

    def forward(x, **kwargs):
        return physics.A(to_physics_domain(x, physics))

    if isinstance(physics, dinv.physics.LinearPhysics):
        return dinv.physics.LinearPhysics(
            A=forward,
            A_adjoint=lambda v, **kw: physics_domain_adjoint(physics.A_adjoint(v), physics),
            noise_model=physics.noise_model,
        )
    return dinv.physics.Physics(A=forward, noise_model=physics.noise_model)


def from_physics_domain(x: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    """Inverse of :func:`to_physics_domain` for display and metrics: the magnitude for MRI
    (and complex phase-retrieval estimates), unchanged otherwise."""
    if is_complex_mri(physics) or torch.is_complex(x):
        return magnitude(x)
    return x


def physics_device(physics: dinv.physics.Physics) -> torch.device:
    """Device of the physics' buffers and parameters (CPU if it has none)."""
    for tensor in (*physics.buffers(), *physics.parameters()):
        return tensor.device
    return torch.device("cpu")


def physics_in_dtype(physics: dinv.physics.Physics, dtype: torch.dtype) -> dinv.physics.Physics:
    """``physics`` when its floating tensors are all ``dtype``; otherwise a copy cast to it (the
    caller's object is never modified). A mask built from NumPy is float64; a solver computing
    in float32 would end in a raw dtype error at its first product."""
    tensors = [t for t in (*physics.parameters(), *physics.buffers()) if t.is_floating_point()]
    if all(t.dtype == dtype for t in tensors):
        return physics
    return copy.deepcopy(physics).to(dtype)
