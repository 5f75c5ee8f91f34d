r"""How the pretrained networks run at inference: the precision they compute in (one option,
one mechanism), and the size of one pass (:func:`in_chunks`, so that a volume's batch of large
slices does not hold every slice's activations at once).

``precision="bf16"`` runs a network's convolutions and matrix products under
:func:`torch.autocast` with bfloat16 (weights and inputs stay float32; the output is returned in the
input's dtype), ``"fp32"`` in float32, and ``"auto"`` picks bf16 where the hardware computes it
natively: a CPU with AVX-512 BF16 or AMX, a CUDA device that supports bf16. Only the network call
is autocast, never the physics: a bf16 forward operator would put its rounding error (about
:math:`4\cdot 10^{-3}` relative) into the data term, far above a 1 % noise level.

Measured on one Zen 5 thread (AVX-512 BF16) beside other jobs (read the ratios), 4 slices of the
reserved subject ``itk_t1`` (``python -m benchmarks inference_precision --slices 4``): denoising
at :math:`\sigma = 0.05` (the network alone), then each learned solver at its defaults on MRI 4x
(noise 0.01), the same measurements at both precisions:

==================================  =========  =========  ========  =================
row                                 fp32 s/sl  bf16 s/sl  speed-up  PSNR bf16 - fp32
==================================  =========  =========  ========  =================
denoise, drunet_edm_corpus          0.161      0.078      2.1x      -0.002 dB
denoise, corpus DnCNN family        0.455      0.159      2.9x      +0.000 dB
denoise, hvae_mri64                 0.216      0.188      1.15x     +0.025 dB
DPIR, corpus DnCNN family           45.5       20.5       2.2x      +0.000 dB
DPIR, drunet_edm_corpus             15.7       8.4        1.9x      +0.020 dB
PnP-HVAE, hvae_mri64                120.7      51.9       2.3x      +0.080 dB
PixelFlash, drunet_edm_corpus       3.73       1.52       2.5x      -0.001 dB
==================================  =========  =========  ========  =================

SSIM moved by at most 0.0005. Channels-last did not help at inference (0.43 / 1.36 / 1.21 s
against 0.40 / 1.40 / 0.90 s per batch of 8 in bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import deepinv as dinv
import torch

#: the values of every ``precision=`` option
PRECISIONS = ("auto", "fp32", "bf16")

#: pixels one network pass holds at most by default: 16 slices of 128x128, or 4 of 256x256 (the
#: shipped HVAE needs about 2.7 GB of activations for 16 slices of 256x256, 0.6 GB for 4)
PASS_PIXELS = 16 * 128 * 128


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 products natively (AVX-512 BF16 or AMX on a CPU, bf16
    support on CUDA). Emulated bf16 (AVX2) is slower than float32, so ``"auto"`` avoids it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` checked, ``"auto"`` resolved for ``device``.

    >>> resolve_precision("fp32", "cpu")
    'fp32'
    >>> resolve_precision("float16", "cpu")
    Traceback (most recent call last):
        ...
    ValueError: precision must be one of ('auto', 'fp32', 'bf16'), got 'float16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


@contextlib.contextmanager
def network_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Context in which a network call computes at ``precision`` (:func:`resolve_precision`)."""
    device = torch.device(device)
    enabled = resolve_precision(precision, device) == "bf16"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


class AtPrecision(dinv.models.Denoiser):
    """A denoiser (any ``denoiser(x, sigma)``) computing at ``precision``; the wrapped module is
    not modified, and the output comes back in ``x``'s dtype. This is how a solver's
    ``precision=`` reaches the denoiser inside a deepinv loop.

    :param torch.nn.Module denoiser: the denoiser.
    :param str precision: one of :data:`PRECISIONS`.

    >>> import torch
    >>> identity = lambda x, sigma: torch.nn.functional.conv2d(x, torch.ones(1, 1, 1, 1))
    >>> out = AtPrecision(identity, "bf16")(torch.full((1, 1, 2, 2), 0.1), 0.1)
    >>> out.dtype, round(float(out[0, 0, 0, 0]), 4)  # computed in bf16, returned in float32
    (torch.float32, 0.1001)
    """

    def __init__(self, denoiser, precision: str):
        super().__init__()
        resolve_precision(precision, "cpu")  # validates the name before any solve
        self.denoiser = denoiser
        self.precision = precision

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        with network_precision(self.precision, x.device):
            out = self.denoiser(x, sigma, *args, **kwargs)
        return out.to(x.dtype)


def at_precision(denoiser, precision: str):
    """``denoiser`` itself at ``"fp32"`` (no wrapper in the way), else :class:`AtPrecision`."""
    return denoiser if precision == "fp32" else AtPrecision(denoiser, precision)


def in_chunks(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, max_pixels: int | None) -> torch.Tensor:
    """``network(x)`` computed on consecutive groups of examples of at most ``max_pixels`` pixels
    each (at least one example per group; ``None``: all at once). For a network that treats each
    example on its own, the result is the batched one; only the peak memory of a pass changes.

    >>> x = torch.arange(6.0).reshape(6, 1, 1, 1)
    >>> calls = []
    >>> out = in_chunks(lambda t: calls.append(len(t)) or 2 * t, x, max_pixels=4)
    >>> calls, torch.equal(out, 2 * x)
    ([4, 2], True)
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    per_example = x[0].numel() if len(x) else 1
    size = len(x) if max_pixels is None else max(max_pixels // per_example, 1)
    if size >= len(x):
        return network(x)
    return torch.cat([network(part) for part in x.split(size)])
