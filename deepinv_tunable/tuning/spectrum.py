"""The linear-Gaussian picture of a tunable prior: its generator's singular spectrum, the
closed-form denoising risk of a k-dimensional latent, and the k that minimises it."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from pathlib import Path

import deepinv as dinv
import numpy as np
import torch

from ..utils.progress import progress_bar


def _nonnegative(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _singular_values(singular_values: torch.Tensor | Sequence[float], require_sorted: bool = True) -> torch.Tensor:
    if not isinstance(singular_values, torch.Tensor):
        # any array-like, NumPy views with negative strides (a reversed spectrum) included
        singular_values = np.array(singular_values, dtype=object if isinstance(singular_values, str) else None)
        if singular_values.dtype.kind not in "biuf":
            raise ValueError(f"singular_values must be real numbers, got dtype {singular_values.dtype}")
    s = torch.as_tensor(singular_values)
    if s.is_complex() or s.dtype == torch.bool:
        raise ValueError(f"singular_values must be real, got dtype {s.dtype}")
    s = s.to(torch.float64)
    if s.dim() != 1:
        raise ValueError(f"singular_values must be 1-D, got shape {tuple(s.shape)}")
    if s.numel() == 0:
        raise ValueError("singular_values must hold at least one value, got an empty sequence")
    if not torch.isfinite(s).all():
        i = int((~torch.isfinite(s)).nonzero()[0])
        raise ValueError(f"singular_values must be finite, got s[{i}] = {s[i].item()}")
    if (s < 0).any():
        i = int((s < 0).nonzero()[0])
        raise ValueError(f"singular_values must be >= 0, got s[{i}] = {s[i].item()}")
    rises = s[1:] > s[:-1]
    if require_sorted and rises.any():
        i = int(rises.nonzero()[0])
        raise ValueError(
            "singular_values must be sorted in non-increasing order, "
            f"got s[{i}] = {s[i].item()} < s[{i + 1}] = {s[i + 1].item()}"
        )
    return s


def linear_denoising_mse(
    singular_values: torch.Tensor | Sequence[float],
    sigma: float,
    lam: float,
    k: int | torch.Tensor,
    truncation_order: bool = False,
) -> float | torch.Tensor:
    r"""Expected squared error of the :math:`k`-truncated latent MAP denoiser for a linear generator.

    Model: :math:`x = G z` with :math:`z \sim \mathcal N(0, I_n)`,
    :math:`G = U \operatorname{diag}(s) V^\top`, and :math:`y = x + \varepsilon` with
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)`. The estimator
    :math:`\hat x = G_k \hat z`, :math:`\hat z = \arg\min_z \|y - G_k z\|^2 + \lambda \|z\|^2`, with
    :math:`G_k` the generator restricted to its first :math:`k` right-singular directions, acts in the
    left-singular basis as :math:`\hat x_i = \frac{s_i^2}{s_i^2 + \lambda} y_i` for :math:`i \le k`
    and :math:`\hat x_i = 0` otherwise, so

    .. math::

        \mathrm{MSE}(k) = \mathbb E \|\hat x - x\|^2
        = \sum_{i \le k} \frac{\lambda^2 s_i^2 + s_i^4 \sigma^2}{(s_i^2 + \lambda)^2}
          + \sum_{i > k} s_i^2 .

    The first sum is shrinkage bias plus propagated noise, the second the signal the truncation
    throws away. It is the total over the :math:`n` coordinates, not the mean. A zero singular
    value contributes nothing whether kept or not (its shrinkage factor is taken as 0, also at
    :math:`\lambda = 0`).

    :param torch.Tensor singular_values: :math:`s_1 \ge \dots \ge s_n \ge 0`, 1-D tensor or sequence.
    :param float sigma: noise standard deviation :math:`\sigma \ge 0`.
    :param float lam: latent weight :math:`\lambda \ge 0` (0: maximum likelihood; :math:`\sigma^2`:
        the true MAP).
    :param int k: latent size in :math:`[0, n]`, or a 1-D integer tensor of sizes.
    :param bool truncation_order: ``singular_values`` are given in the order the truncation keeps
        them (e.g. :func:`generator_spectrum` of a trained model), not necessarily sorted: the
        sum is coordinate by coordinate, so the closed form holds in any order. Default False
        (a non-increasing spectrum is required, and an unsorted one is refused as a likely mistake).
    :return: a float for an integer ``k``; a float64 tensor of the same shape for a tensor ``k``.

    >>> round(linear_denoising_mse([2.0, 1.0], sigma=1.0, lam=1.0, k=1), 6)
    1.8
    >>> linear_denoising_mse([2.0, 1.0], 1.0, 1.0, torch.arange(3))
    tensor([5.0000, 1.8000, 1.3000], dtype=torch.float64)
    """
    s = _singular_values(singular_values, require_sorted=not truncation_order)
    sigma = _nonnegative(sigma, "sigma")
    lam = _nonnegative(lam, "lam")
    n = s.numel()

    s2 = s * s
    # Written as (1-c)^2 s^2 + c^2 sigma^2, which equals the closed form above but stays
    # defined at s_i = lam = 0, where the quotient form is 0/0.
    shrink = s2 / torch.where(s2 > 0, s2 + lam, 1.0)
    kept = (1 - shrink) ** 2 * s2 + shrink**2 * sigma**2
    zero = s.new_zeros(1)
    kept_upto = torch.cat([zero, torch.cumsum(kept, 0)])  # kept_upto[k] = sum_{i <= k}
    # Summing the tail from the small end avoids cancellation in total - cumsum when the
    # spectrum decays fast.
    dropped_from = torch.cat([torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0]), zero])
    table = kept_upto + dropped_from  # table[k] = MSE(k) for k = 0..n

    if isinstance(k, torch.Tensor):
        if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise ValueError(f"k must hold integers, got a tensor of dtype {k.dtype}")
        if k.dim() > 1:
            raise ValueError(f"k must be an integer or a 1-D tensor of integers, got shape {tuple(k.shape)}")
        bad = (k < 0) | (k > n)
        if bad.any():
            raise ValueError(f"k must lie in [0, n] = [0, {n}], got k = {k[bad].flatten()[0].item()}")
        return table[k.to(device=table.device, dtype=torch.long)]
    k = _int_k(k)
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got k = {k}")
    return float(table[k])


def optimal_k_linear(
    singular_values: torch.Tensor | Sequence[float], sigma: float, lam: float, truncation_order: bool = False
) -> int:
    r"""Latent size minimising :func:`linear_denoising_mse`:

    .. math::

        k^\star = \#\{\, i : s_i > 0,\ s_i^2 + 2\lambda > \sigma^2 \,\}.

    Keeping coordinate :math:`i` changes the error by
    :math:`-\,s_i^4 (s_i^2 + 2\lambda - \sigma^2) / (s_i^2 + \lambda)^2`, which is negative exactly
    when :math:`s_i^2 + 2\lambda > \sigma^2`; as the :math:`s_i` are sorted the helpful coordinates
    form a prefix, so :math:`k^\star` minimises the closed form. Where keeping a coordinate changes
    nothing (:math:`s_i = 0`, or :math:`s_i^2 + 2\lambda = \sigma^2`) it is left out, so ties go to the
    smallest minimiser. :math:`k^\star` is non-increasing in :math:`\sigma` for a fixed
    :math:`\lambda`; at the true MAP :math:`\lambda = \sigma^2` every non-zero direction helps.

    :param torch.Tensor singular_values: :math:`s_1 \ge \dots \ge s_n \ge 0`, 1-D tensor or sequence.
    :param float sigma: noise standard deviation :math:`\sigma \ge 0`.
    :param float lam: latent weight :math:`\lambda \ge 0`.
    :param bool truncation_order: ``singular_values`` in the truncation's order, not necessarily
        sorted (see :func:`linear_denoising_mse`): the helpful coordinates need not form a prefix
        then, and :math:`k^\star` is the smallest minimiser of the closed form over prefixes.
        Default False.

    >>> optimal_k_linear([2.0, 1.0, 0.5, 0.1], sigma=0.8, lam=0.0)
    2
    >>> optimal_k_linear([2.0, 1.0, 0.5, 0.1], sigma=0.8, lam=0.8**2)
    4
    """
    if truncation_order:
        s = _singular_values(singular_values, require_sorted=False)
        table = linear_denoising_mse(s, sigma, lam, torch.arange(s.numel() + 1), truncation_order=True)
        return int(torch.nonzero(table == table.min())[0])  # ties: the smallest k
    s = _singular_values(singular_values)
    sigma = _nonnegative(sigma, "sigma")
    lam = _nonnegative(lam, "lam")
    return int(((s > 0) & (s * s + 2 * lam > sigma**2)).sum())


def generator_spectrum(
    model,
    latents: torch.Tensor,
    step: float = 1e-2,
    batch_size: int = 64,
    stride: int = 1,
    progress: bool | None = None,
) -> torch.Tensor:
    r"""The linear theory's spectrum fitted to a trained tunable generator, in its truncation order.

    Linearised at the mean latent :math:`\bar z` of ``latents`` (encoded images of the data the
    model describes), the generator is :math:`D(z) \approx D(\bar z) + J (z - \bar z)`, and with
    latent coordinates of standard deviation :math:`\varsigma_i` (over ``latents``) coordinate
    :math:`i` carries image energy

    .. math::

        s_i = \varsigma_i \, \|J e_i\|_2 ,

    the :math:`s_i` of :func:`linear_denoising_mse` (whose model whitens the latent, and treats the
    columns of :math:`J` as orthogonal, which a trained decoder only approximates). Columns of
    :math:`J` come from forward differences of size ``step`` times :math:`\varsigma_i`, in
    batches: :math:`K / \text{stride}` decodes in all.

    :param model: a generator with ``decode(z, k)``, ``latent_shape`` and ``latent_dim``
        (:class:`~deepinv_tunable.nets.TunableVAE`, :class:`~deepinv_tunable.nets.OrderedFlow`).
    :param torch.Tensor latents: ``(B, *latent_shape)``, ``B >= 2``.
    :param float step: finite-difference step, relative to each coordinate's spread. Default 0.01.
    :param int batch_size: perturbed latents decoded at once. Default 64.
    :param int stride: measure every ``stride``-th coordinate only and give its value to the
        ``stride - 1`` that follow it (a flow's :math:`K` is the pixel count). Default 1 (all).
    :param bool progress: a tqdm bar over the batches. Default ``None``: only on a terminal.
    :return: 1-D float64 tensor of the :math:`K` values :math:`s_i` in truncation order (pass
        ``truncation_order=True`` to the closed forms: a trained model's spectrum need not be sorted).

    >>> class Linear:  # a planted linear generator: column i of norm i + 1
    ...     latent_shape, latent_dim = (1, 1, 3), 3
    ...     def decode(self, z, k=None):
    ...         return z.flatten(1) * torch.tensor([1.0, 2.0, 3.0])
    >>> latents = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 0.0, -2.0]]).reshape(2, 1, 1, 3)
    >>> generator_spectrum(Linear(), latents).round(decimals=4)  # std (1.41, 0, 2.83) x norm (1, 2, 3)
    tensor([1.4142, 0.0000, 8.4853], dtype=torch.float64)
    """
    shape = tuple(model.latent_shape)
    if latents.dim() != len(shape) + 1 or tuple(latents.shape[1:]) != shape or latents.shape[0] < 2:
        raise ValueError(f"latents must be (B >= 2, {', '.join(map(str, shape))}), got shape {tuple(latents.shape)}")
    if not step > 0 or batch_size < 1 or stride < 1:
        raise ValueError(f"step must be > 0, batch_size and stride >= 1, got {step}, {batch_size} and {stride}")
    K = int(model.latent_dim)
    with torch.no_grad():
        flat = latents.detach().flatten(1).to(torch.float64)
        spread = flat.std(0)
        centre = flat.mean(0).to(latents.dtype)
        base = model.decode(centre.reshape(1, *shape), K).flatten(1).to(torch.float64)
        measured = torch.arange(0, K, stride)
        s = torch.zeros(len(measured), dtype=torch.float64)
        starts = range(0, len(measured), batch_size)
        with progress_bar(total=len(starts), progress=progress, desc="generator spectrum", leave=False) as bar:
            for first in starts:
                index = measured[first : first + batch_size]
                delta = (step * spread[index]).clamp_min(1e-12)
                z = centre.repeat(len(index), 1)
                z[torch.arange(len(index)), index] += delta.to(z.dtype)
                out = model.decode(z.reshape(-1, *shape), K).flatten(1).to(torch.float64)
                column_norm = (out - base).norm(dim=1) / delta
                s[first : first + len(index)] = torch.where(spread[index] > 0, spread[index] * column_norm, 0.0)
                bar.update(1)
    return s.repeat_interleave(stride)[:K]


# ------------------------------------------------------------- the closed form as a k proposal
#: File, next to a shipped generator's weights, holding its :func:`generator_spectrum`.
SPECTRUM_FILE = "spectrum.safetensors"


def save_spectrum(folder, spectrum: torch.Tensor, **facts: str | int | float) -> Path:
    """Write ``spectrum`` (:func:`generator_spectrum`) to ``folder/``:data:`SPECTRUM_FILE`
    atomically, with ``facts`` (the subject and slices it was fitted on, ...) as metadata."""
    from safetensors.torch import save

    from ..utils.atomic import atomic_write

    tensor = torch.as_tensor(spectrum, dtype=torch.float32).flatten().contiguous()
    blob = save({"spectrum": tensor}, {key: str(value) for key, value in facts.items()})
    return atomic_write(Path(folder) / SPECTRUM_FILE, lambda p: p.write_bytes(blob))


def load_spectrum(folder) -> torch.Tensor:
    """The spectrum saved by :func:`save_spectrum` in ``folder`` (a model's checkpoint folder,
    e.g. :func:`deepinv_tunable.pretrained.path` ``("ordered_flow_mri128")``), float64."""
    from safetensors.torch import load_file

    file = Path(folder) / SPECTRUM_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"no generator spectrum at '{file}': fit one with "
            "`python -m benchmarks k_study --models NAME --save-spectrum` (needs the corpus)"
        )
    return load_file(str(file))["spectrum"].to(torch.float64)


def effective_noise_sigma(physics, sigma: float) -> float:
    r"""The noise level at which the linear closed form sees an inverse problem as denoising.

    Denoising: :math:`\sigma`. Cartesian MRI with a fraction :math:`1/R` of k-space sampled:
    :math:`\sigma\sqrt{R}` (a latent direction's energy is seen in :math:`1/R` of k-space on
    average, an approximation). No other physics has a closed form here.

    >>> from deepinv_tunable.physics import build_physics
    >>> effective_noise_sigma(build_physics({"kind": "mri", "acceleration": 4, "center_fraction": 0.0}, (32, 32)), 0.01)
    0.02
    """
    sigma = _nonnegative(sigma, "sigma")
    if isinstance(physics, dinv.physics.Denoising):
        return sigma
    if isinstance(physics, dinv.physics.MRI) and not isinstance(physics, dinv.physics.MultiCoilMRI):
        sampled = float(physics.mask.float().mean())
        if not sampled > 0:
            raise ValueError("the MRI mask samples nothing: no closed form")
        return sigma / math.sqrt(sampled)
    raise ValueError(
        f"the closed form covers denoising and single-coil Cartesian MRI, got {type(physics).__name__}; "
        "choose k with rule='discrepancy' or 'splitting'"
    )


def closed_form_k(spectrum: torch.Tensor, physics, sigma: float, ks: Sequence[int] | None = None) -> int:
    r"""``k`` proposed before any solve: :func:`optimal_k_linear` on a generator's spectrum
    (in truncation order) at :func:`effective_noise_sigma`, snapped to the nearest ``k`` of
    ``ks`` in :math:`\log k` (ties to the smaller) when given.

    The latent weight is taken as :math:`\lambda = 0`: with the latent MAP of
    :class:`~deepinv_tunable.solvers.LatentMAP` (100 Adam steps from :math:`f^{-1}(y)`) the prior
    weight barely shrinks the estimate, and with :math:`\lambda = \gamma\sigma^2` the closed form
    predicted :math:`k = K` where a quarter of the flow's latent was 3.5-6.7 dB better. On the
    reserved subject (``benchmarks/run_k_study.py``, flow, :math:`\gamma = 0`) the proposal came
    within 0.16 dB of the oracle ``k`` on every denoising and MRI case, with no sweep.

    >>> from deepinv_tunable.physics import build_physics
    >>> spectrum = torch.tensor([1.0, 0.5, 0.2, 0.05], dtype=torch.float64)
    >>> closed_form_k(spectrum, build_physics({"kind": "denoising"}, (2, 2)), sigma=0.3)
    2
    """
    k = optimal_k_linear(spectrum, effective_noise_sigma(physics, sigma), 0.0, truncation_order=True)
    return k if ks is None else nearest_k(k, ks)


def _int_k(k, name: str = "k") -> int:
    # operator.index accepts Python and NumPy integers but refuses floats such as 3.0, which
    # usually mean the caller computed k with a division and should round it on purpose.
    if isinstance(k, bool):
        raise ValueError(f"{name} must be an integer, got {k!r}")
    try:
        return operator.index(k)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {k!r}") from None


def _ks(ks: Sequence[int]) -> list[int]:
    ks = [_int_k(k, "every k in ks") for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one k, got an empty sequence")
    seen = set()
    for k in ks:
        if k in seen:
            raise ValueError(f"ks must not repeat a value, got k={k} twice")
        seen.add(k)
    return ks


def nearest_k(k: int, ks: Sequence[int]) -> int:
    r"""The ``k`` of the grid ``ks`` nearest to ``k`` in :math:`\log k` (ties to the smaller).

    >>> nearest_k(2784, [1024, 2048, 4096])
    2048
    """
    return min(_ks(ks), key=lambda g: (abs(math.log(g) - math.log(max(k, 1))), g))
