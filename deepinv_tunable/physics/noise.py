"""The measurement noise: the std a physics states, an estimate from the measurements alone, and
the zero-filled error that ranks how degraded an MRI measurement is."""

from __future__ import annotations

import math

import deepinv as dinv
import torch

# ------------------------------------------------------------------------------ noise facts
#: MAD-to-std factor of a Gaussian: :math:`\sigma = \mathrm{median}|n| / 0.6745`.
_MAD_TO_STD = 0.6744897501960817


def noise_sigma(physics: dinv.physics.Physics, default: float | None = None) -> float:
    """Std of the physics' Gaussian noise model (``default`` when it has none or it is 0).

    >>> from deepinv_tunable.physics import build_physics
    >>> round(noise_sigma(build_physics({"kind": "denoising", "noise_sigma": 0.02}, (8, 8))), 6)
    0.02
    """
    sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
    if sigma is not None:
        values = torch.as_tensor(sigma).flatten()
        if values.numel() > 1 and not bool((values == values[0]).all()):
            raise ValueError(
                f"per-image noise levels are not supported: the physics' noise sigma holds {values.numel()} "
                f"different values ({values[:4].tolist()}...); reconstruct each image with its own physics"
            )
    value = float(torch.as_tensor(sigma).flatten()[0]) if sigma is not None else 0.0
    if value > 0:
        return value
    if default is None:
        raise ValueError(
            "the physics states no Gaussian noise level; give it noise_model=deepinv.physics.GaussianNoise(sigma) "
            "with the measurement noise std (sigma > 0)"
        )
    return float(default)


def _mad_std(values: torch.Tensor) -> torch.Tensor:
    """Robust std of zero-mean samples along the last axis: median absolute value / 0.6745."""
    return values.abs().median(dim=-1).values / _MAD_TO_STD


def _mad_std_away_from_edges(band: torch.Tensor, steps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Robust std of ``band`` (B, N) where ``valid``, recomputed once without the positions whose
    neighbouring first differences ``steps`` (B, N) exceed 4 noise stds: edges put signal into
    every finest-scale band, while a pure-noise difference exceeds that bound once in 10^4."""
    out = []
    for i in range(band.shape[0]):
        values = band[i][valid[i]]
        if values.numel() < 16:
            raise ValueError(
                f"cannot estimate the noise of example {i}: fewer than 16 fully observed "
                "neighbourhoods; pass sigma=... (the measurement noise std)"
            )
        first = _mad_std(values)
        flat = valid[i] & (steps[i] <= 4 * math.sqrt(2) * first)
        out.append(_mad_std(band[i][flat]) if int(flat.sum()) >= 16 else first)
    return torch.stack(out).float()


def _hermitian_noise(y: torch.Tensor) -> torch.Tensor:
    r"""Per-example noise std of single-coil k-space ``(B, 2, H, W)`` of a **real** image.

    The k-space of a real image is Hermitian, :math:`Y(k) = \overline{Y(-k)}`, so wherever both
    :math:`k` and :math:`-k` are sampled, :math:`Y(k) - \overline{Y(-k)} = n(k) - \overline{n(-k)}`
    is pure noise of std :math:`\sqrt2\,\sigma` per component: no signal leaks into the estimate.
    """
    yc = torch.complex(y[:, 0].double(), y[:, 1].double())
    h, w = yc.shape[-2:]
    # index of -k on deepinv's centred (fftshift) grid; for even sizes also the uncentred one
    rows = (h - torch.arange(h)) % h if h % 2 == 0 else h - 1 - torch.arange(h)
    cols = (w - torch.arange(w)) % w if w % 2 == 0 else w - 1 - torch.arange(w)
    mirror = yc[:, rows][:, :, cols].conj()
    pairs = (yc != 0) & (mirror != 0)
    # each pair appears twice (k and -k) with the same |difference|: harmless for a median
    out = []
    for b in range(yc.shape[0]):
        d = (yc[b] - mirror[b])[pairs[b]]
        if d.numel() < 16:
            raise ValueError(
                f"cannot estimate the noise of MRI example {b}: only {d.numel()} k-space samples have "
                "a sampled mirror partner; pass sigma=... (the measurement noise std)"
            )
        out.append(_mad_std(torch.cat([d.real, d.imag])) / math.sqrt(2))
    return torch.stack(out).float()


def _difference_noise(y: torch.Tensor, dim: int, order: int) -> torch.Tensor:
    """Per-example noise std from ``order``-th finite differences of ``y`` along ``dim``, normalised
    so that white noise keeps its std (smooth signal cancels, the noise does not), away from kinks."""
    coeffs = [(-1) ** (order - j) * math.comb(order, j) for j in range(order + 1)]
    y = y.double()
    n = y.shape[dim]
    d = sum(c * y.narrow(dim, j, n - order) for j, c in enumerate(coeffs))
    d = d / math.sqrt(sum(c * c for c in coeffs))
    first = (y.narrow(dim, 1, n - 1) - y.narrow(dim, 0, n - 1)).abs()
    # the largest first difference inside each difference stencil
    steps = torch.stack([first.narrow(dim, j, n - order) for j in range(order)]).amax(0)
    return _mad_std_away_from_edges(d.flatten(1), steps.flatten(1), torch.ones_like(d, dtype=torch.bool).flatten(1))


def _image_noise(y: torch.Tensor) -> torch.Tensor:
    r"""Per-example noise std of image-like ``y`` from its separable second differences
    :math:`(\delta^2_h \otimes \delta^2_w)\, y / 6` (kernel ``[1, -2, 1]`` per axis, unit gain on white
    noise), a finest-scale diagonal band that also cancels linear trends, so blurred edges leak
    less into it than into the Haar band of Donoho's rule. 3x3 neighbourhoods holding an exact
    zero (masked pixels) are skipped."""
    y = y.double()  # (B, C, H, W): estimate_noise_sigma only sends 4-D image-like measurements
    kernel = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    kernel = (kernel[:, None] * kernel[None, :] / 6.0)[None, None].repeat(y.shape[1], 1, 1, 1)
    band = torch.nn.functional.conv2d(y, kernel, groups=y.shape[1]).flatten(1)
    observed = torch.nn.functional.conv2d((y != 0).double(), torch.ones_like(kernel), groups=y.shape[1])
    valid = (observed == 9).flatten(1)
    dh, dv = (y[..., :, 1:] - y[..., :, :-1]).abs(), (y[..., 1:, :] - y[..., :-1, :]).abs()
    # the largest first difference inside each 3x3 stencil
    steps = torch.maximum(
        dh.unfold(-1, 2, 1).amax(-1).unfold(-2, 3, 1).amax(-1), dv.unfold(-2, 2, 1).amax(-1).unfold(-1, 3, 1).amax(-1)
    )
    return _mad_std_away_from_edges(band, steps.flatten(1), valid)


def estimate_noise_sigma(y: torch.Tensor, physics: dinv.physics.Physics) -> torch.Tensor:
    r"""Std :math:`\hat\sigma` of additive white Gaussian noise in ``y``, per example ``(B,)``,
    from the measurements alone (for physics that do not state their noise level).

    Robust (median-absolute-deviation) estimates on a transform of :math:`y` where the signal
    nearly vanishes and the noise does not:

    - **single-coil MRI** of a real image: differences of k-space samples with their Hermitian
      mirror, :math:`Y(k) - \overline{Y(-k)}`, which hold no signal at all (an image with a phase
      inflates the estimate: pass ``sigma`` then);
    - **CT**: third differences of the sinogram along the detector, where projections are smooth;
    - **blur, denoising, inpainting** and other image-like measurements: a finest-scale diagonal
      band (separable second differences), the median rule of Donoho and Johnstone (1994); image
      texture finer than a pixel adds to it, so on real photographs below
      :math:`\sigma \approx 0.02` it is an upper bound.

    :param torch.Tensor y: measurements, real ``(B, ...)``.
    :param deepinv.physics.Physics physics: the forward operator that produced ``y``.
    :return: ``(B,)`` tensor of estimated noise stds.

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> physics = build_physics({"kind": "blur", "noise_sigma": 0.05}, (64, 64))
    >>> x = torch.zeros(1, 1, 64, 64); x[..., 16:48, 16:48] = 1
    >>> round(float(estimate_noise_sigma(physics(x), physics)[0]), 2)
    0.05

    Reference: D. L. Donoho and I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
    Biometrika 1994.
    """
    if not isinstance(y, torch.Tensor) or torch.is_complex(y) or y.dim() < 2:
        raise ValueError(f"y must be a real tensor (B, ...), got {type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
    if isinstance(physics, dinv.physics.MultiCoilMRI):
        raise ValueError(
            "cannot estimate the noise of multi-coil MRI (coil images are complex); "
            "pass sigma=... (the measurement noise std)"
        )
    with torch.no_grad():
        if isinstance(physics, dinv.physics.MRI):
            if y.dim() != 4 or y.shape[1] != 2:
                raise ValueError(f"expected single-coil k-space (B, 2, H, W), got shape {tuple(y.shape)}")
            return _hermitian_noise(y)
        if isinstance(physics, dinv.physics.Tomography):
            # sinogram (B, C, detectors, angles): smooth along the detector axis
            return _difference_noise(y, dim=-2, order=3)
        if y.dim() == 4 and min(y.shape[-2:]) >= 4:
            return _image_noise(y)
        raise ValueError(
            f"cannot estimate the noise of {type(physics).__name__} measurements of shape "
            f"{tuple(y.shape)}; pass sigma=... (the measurement noise std)"
        )


def mri_zero_filled_error(y: torch.Tensor, physics: dinv.physics.Physics, sigma: float | None = None) -> torch.Tensor:
    r"""Per-example RMS error of the zero-filled image of single-coil MRI, from the measurements
    alone: the energy of the unsampled k-space, predicted from the radial power spectrum of the
    sampled one, plus the noise of the sampled one,

    .. math::

        \hat e^2 = \frac{1}{2HW}\Big(\sum_{k \notin \Omega} \hat P(|k|) + 2\sigma^2 |\Omega|\Big),
        \qquad \hat P(r) = \operatorname{mean}_{k \in \Omega,\, |k| \approx r} |Y(k)|^2 - 2\sigma^2,

    :math:`\Omega` the sampled set; radii with no sample take a power law :math:`\log \hat P = a +
    b \log r` fitted to the others. Images' spectra are close to isotropic, which is what makes a
    Cartesian mask's sampled lines speak for the missing ones at the same radius. deepinv's
    orthonormal, centred FFT makes k-space energy equal image energy; the RMS is over the
    2-channel image, as the measurement-only estimate is compared in the physics' domain.

    :param torch.Tensor y: k-space ``(B, 2, H, W)``.
    :param deepinv.physics.Physics physics: single-coil :class:`~deepinv.physics.MRI`.
    :param float sigma: noise std. Default ``None``: the physics' (else estimated from ``y``).
    :return: float tensor ``(B,)``.
    """
    if not isinstance(physics, dinv.physics.MRI) or isinstance(physics, dinv.physics.MultiCoilMRI):
        raise ValueError(f"mri_zero_filled_error needs a single-coil deepinv MRI physics, got {type(physics).__name__}")
    if sigma is None:
        sigma_b = torch.as_tensor(noise_sigma(physics, default=0.0)).expand(y.shape[0])
        if float(sigma_b[0]) == 0:
            sigma_b = estimate_noise_sigma(y, physics)
    else:
        sigma_b = torch.full((y.shape[0],), float(sigma))
    h, w = y.shape[-2:]
    # deepinv keeps a mask per example as (B, 2, H, W), one for the batch as (1, 2, H, W)
    masks = physics.mask.reshape(physics.mask.shape[0], -1, h, w)[:, 0] != 0
    if masks.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"the MRI physics holds {masks.shape[0]} masks for a batch of {y.shape[0]} measurements")
    ky = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    kx = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    radius = (ky[:, None] ** 2 + kx[None, :] ** 2).sqrt() * max(h, w)
    bins = radius.round().long()
    n_bins = int(bins.max()) + 1
    out = []
    for b in range(y.shape[0]):
        mask = masks[b if masks.shape[0] > 1 else 0]
        power = (y[b, 0].double() ** 2 + y[b, 1].double() ** 2) - 2 * float(sigma_b[b]) ** 2
        total = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins[mask], power[mask])
        count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins[mask], torch.ones_like(power[mask]))
        seen = count > 0
        spectrum = torch.where(seen, total / count.clamp_min(1), torch.zeros_like(total)).clamp_min(1e-12)
        fit = seen & (torch.arange(n_bins) > 0)
        if int(fit.sum()) >= 2 and not bool(seen.all()):
            log_r, log_p = torch.arange(n_bins, dtype=torch.float64)[fit].log(), spectrum[fit].log()
            slope = ((log_r - log_r.mean()) * (log_p - log_p.mean())).sum() / (log_r - log_r.mean()).pow(2).sum()
            intercept = log_p.mean() - slope * log_r.mean()
            r = torch.arange(n_bins, dtype=torch.float64).clamp_min(1)
            spectrum = torch.where(seen, spectrum, (intercept + slope * r.log()).exp())
        missing = spectrum[bins[~mask]].sum()
        noise = 2 * float(sigma_b[b]) ** 2 * int(mask.sum())
        out.append(((missing + noise) / (2 * h * w)).sqrt())
    return torch.stack(out).float()


#: the smallest noise std a solver plans for: data stated or estimated to be noiseless are solved
#: as if this noisy. A denoiser schedule that ends at the estimated std of noiseless data (about
#: 5e-8) leaves every trained range: DPIR with scico's DnCNN on noiseless 4x MRI of a training
#: subject (2 slices) scored 26.94 dB there against 28.95 / 29.24 / 29.24 dB ending at 1e-3 /
#: 3e-3 / 5e-3 (on noiseless deblurring all four within 0.06 dB).
NOISE_FLOOR = 1e-3


def resolve_sigma(
    y: torch.Tensor,
    physics: dinv.physics.Physics,
    sigma: float | None = None,
    floor: float = 0.0,
    estimate: bool = True,
) -> tuple[float, bool]:
    """The noise std a computation uses, and whether it was estimated: ``(sigma, estimated)``.

    In order: ``sigma`` when given (positive and finite), else the physics' stated std, else
    (``estimate=True``) the batch mean of :func:`estimate_noise_sigma` on ``y``. A stated or
    estimated std is raised to ``floor`` (e.g. :data:`NOISE_FLOOR`; default 0: as it is). With
    ``estimate=False`` (a statistic such as chi2 whose meaning needs the true level) a physics
    without a stated std is an error.

    >>> from deepinv_tunable.physics import build_physics
    >>> import torch
    >>> physics = build_physics({"kind": "denoising", "noise_sigma": 0.02}, (8, 8))
    >>> sigma, estimated = resolve_sigma(torch.zeros(1, 1, 8, 8), physics)
    >>> round(sigma, 6), estimated
    (0.02, False)
    >>> resolve_sigma(torch.zeros(1, 1, 8, 8), physics, sigma=0.05)
    (0.05, False)
    """
    if sigma is not None:
        value = float(sigma)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"sigma must be a positive, finite noise std, got sigma={sigma}")
        return value, False
    if not estimate:
        try:
            return max(noise_sigma(physics), floor), False
        except ValueError as err:  # the caller takes the level as an argument too
            raise ValueError(f"{err}, or pass sigma=... (the measurement noise std)") from None
    stated = noise_sigma(physics, default=0.0)
    if stated > 0:
        return max(stated, floor), False
    return max(float(estimate_noise_sigma(y, physics).mean()), floor), True
