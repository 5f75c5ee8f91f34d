"""Checks a solver runs on its inputs before it spends any compute: Gaussian noise, images on
the unit range, measurements of the shape the physics produces."""

from __future__ import annotations

import warnings

import deepinv as dinv
import torch

from .domain import is_complex_mri
from .measurement import operator_norm_sq
from .noise import noise_sigma

#: noise models the package's solvers handle: their data terms are Gaussian log-likelihoods
_GAUSSIAN_NOISE_MODELS = ("GaussianNoise", "ZeroNoise")


#: :func:`check_unit_range` refuses measurements whose back-projection has an RMS above this
#: (an image in [0, 1] gives at most 1; [0, 255] data give about 100)
UNIT_RANGE_RMS_LIMIT = 2.0


def check_gaussian_noise(physics: dinv.physics.Physics, who: str) -> None:
    """Refuse a physics whose noise model is not Gaussian with one level for the batch (Poisson,
    Gamma, uniform, random-level Gaussian...): the solvers' data terms assume it, and would be
    silently wrong.

    >>> from deepinv_tunable.physics import build_physics
    >>> check_gaussian_noise(build_physics({"kind": "blur", "noise_sigma": 0.01}, (8, 8)), "TVPGD")
    """
    noise = getattr(physics, "noise_model", None)
    if noise is not None and type(noise).__name__ not in _GAUSSIAN_NOISE_MODELS:
        raise ValueError(
            f"{who} assumes Gaussian measurement noise (deepinv GaussianNoise or ZeroNoise); the physics has "
            f"{type(noise).__name__}. Give it a Gaussian noise model of the same std, or use a solver made for it"
        )
    noise_sigma(physics, default=0.0)  # refuses per-image levels


def check_unit_range(y: torch.Tensor, physics: dinv.physics.Physics, who: str) -> None:
    r"""Refuse measurements of images far outside [0, 1], the range every shipped network was
    trained on (e.g. [0, 255] data): the RMS of :math:`A^\top y / \|A\|^2` is at most the
    image's RMS (plus a noise term), so above :data:`UNIT_RANGE_RMS_LIMIT` the image cannot lie in
    [0, 1]. Linear physics only (others are not checked); costs 10 power iterations.
    """
    if not isinstance(physics, dinv.physics.LinearPhysics) or not isinstance(y, torch.Tensor):
        return
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rough norm is enough here: no "not converged" noise
        back = physics.A_adjoint(y)
        norm_sq = operator_norm_sq(
            physics, tuple(back.shape), max_iter=10, rel_tol=1e-2, device=back.device, dtype=back.dtype
        )
        rms = float(back.abs().pow(2).flatten(1).mean(1).sqrt().max()) / max(norm_sq, 1e-12)
    if rms > UNIT_RANGE_RMS_LIMIT:
        raise ValueError(
            f"{who} expects images in [0, 1] (deepinv's convention, and the range its prior was trained on); "
            f"these measurements back-project to an RMS of {rms:.3g} (at most 1 in range). "
            "Rescale the data (e.g. divide by 255, or by the volume's robust maximum) and the noise level with it"
        )


def check_measurement_shape(y: torch.Tensor, physics: dinv.physics.Physics, who: str) -> None:
    r"""Refuse measurements the physics cannot have produced: ``y`` must have the shape of
    :math:`A A^\top y`. A 1-channel ``y`` for deepinv's 2-channel MRI broadcasts through
    :math:`A^\top` without an error and gives a wrong image (TV: 23.5 to 15.9 dB); any other
    wrong shape would end in torch's raw shape error inside the solver."""
    if not isinstance(physics, dinv.physics.LinearPhysics):
        return
    try:
        with torch.no_grad():
            expected = tuple(physics.A(physics.A_adjoint(y)).shape)
    except RuntimeError as err:
        raise ValueError(
            f"{who}: measurements y of shape {tuple(y.shape)} do not fit the physics "
            f"{type(physics).__name__} ({str(err).splitlines()[0]})"
        ) from None
    if expected != tuple(y.shape):
        raise ValueError(
            f"{who}: measurements y of shape {tuple(y.shape)} do not fit the physics {type(physics).__name__}, "
            f"whose measurements have shape {expected}"
            + (" (deepinv's MRI takes complex data as 2 channels: real, imaginary)" if is_complex_mri(physics) else "")
        )
