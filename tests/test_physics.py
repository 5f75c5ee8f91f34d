import deepinv as dinv
import pytest
import torch
from pydantic import ValidationError

from deepinv_tunable.physics import (
    build_physics,
    from_physics_domain,
    magnitude,
    mri_mask,
    parse_physics_config,
    smooth_coil_maps,
    to_physics_domain,
)

SIZE = (32, 32)
LINEAR = [
    {"kind": "mri", "acceleration": 4},
    {"kind": "mri", "acceleration": 8, "mask": "random"},
    {"kind": "mri", "acceleration": 4, "mask": "equispaced"},
    {"kind": "multicoil_mri", "acceleration": 4, "n_coils": 4},
    {"kind": "ct", "n_views": 20},
    {"kind": "blur", "kernel": "gaussian", "blur_sigma": 2.0},
    {"kind": "blur", "kernel": "motion", "kernel_size": 9},
    {"kind": "inpainting", "keep_fraction": 0.3},
    {"kind": "compressed_sensing", "sampling_ratio": 0.2},
    {"kind": "denoising"},
]


def _ids(cfgs):
    return [f"{c['kind']}-{i}" for i, c in enumerate(cfgs)]


@pytest.mark.parametrize("cfg", LINEAR, ids=_ids(LINEAR))
def test_adjointness(cfg):
    physics = build_physics(cfg, SIZE)
    g = torch.Generator().manual_seed(0)
    x = to_physics_domain(torch.randn(2, 1, *SIZE, generator=g), physics)
    if x.shape[1] == 2:  # complex MRI: use a genuinely complex test image
        x = torch.randn(x.shape, generator=g)
    y = physics.A(x)
    v = torch.randn(y.shape, generator=g)
    lhs = (y * v).sum()
    rhs = (x * physics.A_adjoint(v)).sum()
    assert abs(float(lhs - rhs)) <= 1e-4 * abs(float(lhs))


EXPECTED_SHAPES = {
    "mri": (2, 2, 32, 32),
    "multicoil_mri": (2, 2, 4, 32, 32),
    "ct": (2, 1, 46, 20),  # detector: ceil(sqrt(2) * 32) + 1 bins for the diagonal
    "blur": (2, 1, 32, 32),
    "inpainting": (2, 1, 32, 32),
    "compressed_sensing": (2, round(0.2 * 32 * 32)),
    "denoising": (2, 1, 32, 32),
}


@pytest.mark.parametrize("cfg", LINEAR, ids=_ids(LINEAR))
def test_measurement_shapes(cfg):
    physics = build_physics(cfg, SIZE)
    y = physics(to_physics_domain(torch.rand(2, 1, *SIZE), physics))
    assert tuple(y.shape) == EXPECTED_SHAPES[cfg["kind"]]


def test_mri_masks_reproduce_from_seed_and_have_the_requested_acceleration():
    cfg = parse_physics_config({"kind": "mri", "acceleration": 4, "center_fraction": 0.08, "seed": 7})
    m1, m2 = mri_mask(cfg, (64, 128)), mri_mask(cfg, (64, 128))
    other = mri_mask(parse_physics_config({"kind": "mri", "acceleration": 4, "seed": 8}), (64, 128))
    assert torch.equal(m1, m2) and not torch.equal(m1, other)
    columns = m1[0]
    assert torch.equal(m1, columns.expand_as(m1))  # Cartesian: whole columns
    assert int(columns.sum()) == 128 // 4
    centre = columns[64 - 5 : 64 + 5]
    assert bool(centre.all())  # the 8% centre band (10 of 128 columns) is fully sampled


@pytest.mark.parametrize("kind", ["inpainting", "compressed_sensing", "blur"])
def test_random_operators_reproduce_from_seed(kind):
    cfg = {"kind": kind, "seed": 3, "kernel": "motion"} if kind == "blur" else {"kind": kind, "seed": 3}
    x = torch.rand(1, 1, *SIZE)
    y1, y2 = build_physics(cfg, SIZE).A(x), build_physics(cfg, SIZE).A(x)
    y3 = build_physics({**cfg, "seed": 4}, SIZE).A(x)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_noise_level_and_reproducibility():
    physics = build_physics({"kind": "denoising", "noise_sigma": 0.05, "seed": 1}, (64, 64))
    x = torch.rand(4, 1, 64, 64)
    n = physics(x) - x
    assert float(n.std()) == pytest.approx(0.05, rel=0.05)
    again = build_physics({"kind": "denoising", "noise_sigma": 0.05, "seed": 1}, (64, 64))(x) - x
    assert torch.equal(n, again)


def test_coil_maps_are_normalised_and_full_multicoil_mri_is_an_isometry():
    maps = smooth_coil_maps(6, (24, 20))
    assert maps.shape == (6, 24, 20) and maps.is_complex()
    assert torch.allclose(maps.abs().pow(2).sum(0), torch.ones(24, 20), atol=1e-5)
    physics = build_physics({"kind": "multicoil_mri", "acceleration": 1, "n_coils": 6}, (24, 20))
    x = torch.randn(1, 2, 24, 20)
    assert torch.allclose(physics.A_adjoint(physics.A(x)), x, atol=1e-5)


def test_mri_pseudo_inverse_of_full_sampling_is_exact_and_magnitude_returns_the_image():
    physics = build_physics({"kind": "mri", "acceleration": 1}, SIZE)
    x = torch.rand(2, 1, *SIZE)
    x_hat = from_physics_domain(physics.A_dagger(physics(to_physics_domain(x, physics))), physics)
    assert torch.allclose(x_hat, x, atol=1e-5)
    assert torch.allclose(magnitude(torch.tensor([[[[3.0]], [[4.0]]]])), torch.tensor([[[[5.0]]]]))
    with pytest.raises(ValueError, match=r"expected a complex image with 2 channels"):
        magnitude(torch.rand(1, 3, 4, 4))


def test_phase_retrieval_gives_squared_moduli():
    physics = build_physics({"kind": "phase_retrieval", "oversampling": 2.0}, (8, 8))
    x = to_physics_domain(torch.rand(1, 1, 8, 8), physics)
    assert x.is_complex()
    y = physics(x)
    assert y.shape == (1, 128) and bool((y >= 0).all())
    assert torch.allclose(y, physics.B(x).abs() ** 2, rtol=1e-5)


def test_bad_configs_give_clear_errors():
    with pytest.raises(ValidationError, match=r"does not match any of the expected tags"):
        build_physics({"kind": "ultrasound"}, SIZE)
    with pytest.raises(ValidationError, match=r"mri\.accel[\s\S]*Extra inputs are not permitted"):
        build_physics({"kind": "mri", "accel": 4}, SIZE)
    with pytest.raises(ValidationError, match=r"noise_sigma[\s\S]*greater than or equal to 0"):
        build_physics({"kind": "blur", "noise_sigma": -1}, SIZE)
    with pytest.raises(ValueError, match=r"CT \(deepinv Tomography\) needs square images, got 32x24"):
        build_physics({"kind": "ct"}, (32, 24))


def test_factory_returns_deepinv_objects_untouched():
    physics = build_physics({"kind": "blur"}, SIZE)
    assert type(physics) is dinv.physics.BlurFFT
    composed = physics * build_physics({"kind": "inpainting"}, SIZE)  # deepinv composition still works
    assert composed(torch.rand(1, 1, *SIZE)).shape == (1, 1, *SIZE)


def test_zero_filled_error_is_predicted_from_the_sampled_spectrum():
    """A planted isotropic power-law image: the unsampled k-space energy predicted from the
    sampled lines matches the zero-filled image's true error, and grows with the acceleration."""
    from deepinv_tunable.physics import mri_zero_filled_error

    gen = torch.Generator().manual_seed(0)
    n = 64
    k = torch.fft.fftfreq(n)
    radius = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().clamp_min(1.0 / n)
    spectrum = torch.complex(torch.randn(4, n, n, generator=gen), torch.randn(4, n, n, generator=gen)) / radius**1.5
    images = torch.fft.ifft2(spectrum).real
    images = (images - images.amin((1, 2), keepdim=True)) / (
        images.amax((1, 2), keepdim=True) - images.amin((1, 2), keepdim=True)
    )
    x = torch.zeros(4, 2, n, n)
    x[:, 0] = images
    estimates = []
    for acceleration in (2, 4, 8):
        physics = build_physics({"kind": "mri", "acceleration": acceleration, "noise_sigma": 0.005}, (n, n))
        y = physics(x)
        true = (physics.A_adjoint(y) - x).pow(2).flatten(1).mean(1).sqrt()
        estimate = mri_zero_filled_error(y, physics)
        assert torch.allclose(estimate, true, rtol=0.35), (acceleration, estimate, true)
        estimates.append(float(estimate.mean()))
    assert estimates == sorted(estimates)
    with pytest.raises(ValueError, match="single-coil"):
        mri_zero_filled_error(y, build_physics({"kind": "blur", "noise_sigma": 0.01}, (n, n)))


def test_ct_measurement_energy_weighs_fine_detail_as_the_image_does():
    """Fourier slice theorem: the ramp-weighted sinogram energy is a fixed multiple of the image
    energy whatever the spatial frequency; the plain norm under-weighs fine detail by 15x here."""
    from deepinv_tunable.physics import measurement_energy

    physics = build_physics({"kind": "ct", "n_views": 180}, (64, 64))
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 20**2).float()
    blob = torch.exp(-((yy - 32) ** 2 + (xx - 30) ** 2) / (2 * 8**2))[None, None]
    fine = (torch.cos(2 * torch.pi * 0.15 * xx) * disk)[None, None]

    def ratios(e):
        r = physics.A(e)
        return float(r.pow(2).sum() / e.pow(2).sum()), float(measurement_energy(r, physics) / e.pow(2).sum())

    (plain_blob, ramp_blob), (plain_fine, ramp_fine) = ratios(blob), ratios(fine)
    assert plain_blob / plain_fine > 10
    assert abs(ramp_blob / ramp_fine - 1) < 0.2
    white = torch.randn(1, 1, 91, 180, generator=torch.Generator().manual_seed(0))
    assert float(measurement_energy(white, physics) / white.pow(2).sum()) == pytest.approx(1.0, abs=0.03)
    mri = build_physics({"kind": "mri"}, (8, 8))
    assert torch.equal(measurement_energy(white, mri), white.pow(2).flatten(1).sum(1))
