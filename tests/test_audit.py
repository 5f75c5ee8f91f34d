"""Hallucination audit: measured-entry counts, chi2, null-space split, operator norm, support
fraction and the full audit, on known answers (planted lesions for MRI and deblurring)."""

from __future__ import annotations

import json

import deepinv as dinv
import pytest
import torch

from deepinv_tunable.audit.hallucination import (
    AuditReport,
    chi2,
    hallucination_audit,
    measured_count,
    null_space_component,
    null_space_energy,
    operator_norm_sq,
    support_fraction,
)
from deepinv_tunable.physics import build_physics


# -- helpers -------------------------------------------------------------------------------
def gaussian_blob(size: int, center: tuple[int, int], width: float, channels: int = 1) -> torch.Tensor:
    """A Gaussian bump of std ``width`` px in channel 0 of a (1, channels, size, size) image."""
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    out = torch.zeros(1, channels, size, size)
    out[0, 0] = torch.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * width**2))
    return out


def box(size: int, center: tuple[int, int], half: int) -> torch.Tensor:
    roi = torch.zeros(1, 1, size, size)
    roi[..., center[0] - half : center[0] + half + 1, center[1] - half : center[1] + half + 1] = 1
    return roi


def phantom(size: int, channels: int = 1) -> torch.Tensor:
    """A smooth background with a bright square: the 'healthy' image lesions are planted into."""
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(1, channels, size, size)
    x[0, 0] = 0.2 + 0.05 * torch.rand(size, size, generator=g)
    x[0, 0, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 0.4
    return x


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def mri64() -> dinv.physics.MRI:
    return build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01}, (64, 64))


@pytest.fixture(scope="module")
def blur64() -> dinv.physics.BlurFFT:
    return build_physics({"kind": "blur", "kernel": "gaussian", "blur_sigma": 1.5, "noise_sigma": 0.01}, (64, 64))


# -- measured_count --------------------------------------------------------------------------
def test_mri_counts_real_and_imaginary_parts_of_the_sampled_kspace(mri64):
    y = mri64(randn(2, 2, 64, 64))
    n_sampled = mri64.mask[0, 0].sum()
    assert n_sampled == 64 * 64 / 4
    # deepinv masks MRI noise: unsampled k-space stays exactly 0 in y
    assert int((y != 0).sum()) == 2 * 2 * n_sampled
    torch.testing.assert_close(measured_count(y, mri64), torch.full((2,), 2.0 * n_sampled))


def test_unmasked_noise_counts_every_entry_it_lands_on(mri64):
    x = randn(1, 2, 64, 64)
    y = mri64.A(x) + 0.01 * randn(1, 2, 64, 64, seed=1)  # noise on unsampled k-space too
    assert measured_count(y, mri64).item() == 2 * 64 * 64


def test_counts_for_blur_and_inpainting_and_per_example_masks(blur64):
    assert measured_count(blur64(randn(1, 1, 64, 64)), blur64).item() == 64 * 64
    inpainting = build_physics({"kind": "inpainting", "keep_fraction": 0.3, "noise_sigma": 0.1}, (32, 32))
    y = inpainting(randn(1, 1, 32, 32))
    assert measured_count(y, inpainting).item() == inpainting.mask.sum().item()
    masks = torch.zeros(2, 2, 16, 16)
    masks[0, :, :, :4] = 1
    masks[1, :, :, :8] = 1
    mri = dinv.physics.MRI(mask=masks)
    torch.testing.assert_close(measured_count(mri.A(randn(2, 2, 16, 16)), mri), torch.tensor([128.0, 256.0]))


# -- chi2 ----------------------------------------------------------------------------------
def test_chi2_known_answers_for_mri_128():
    physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.02, "seed": 4}, (128, 128))
    x = phantom(128, channels=2)
    y = physics(x)
    truth = chi2(x, y, physics)
    assert truth.shape == (1,)
    assert 0.95 <= truth.item() <= 1.05  # m = 8192 entries: std of chi2 is sqrt(2/m) = 0.016
    # A A^dagger y = M F F^-1 M y = y on the sampled set (and y is 0 elsewhere): fits the noise exactly
    assert chi2(physics.A_dagger(y), y, physics).item() < 1e-8
    # chi2 scales as 1 / sigma^2: half the true sigma reads ~4
    half = chi2(x, y, physics, sigma=0.01)
    torch.testing.assert_close(half, 4 * truth)
    assert 3.8 <= half.item() <= 4.2
    # an image that is not what was scanned contradicts the data
    assert chi2(x + 0.05, y, physics).item() > 10


def test_chi2_of_the_truth_is_one_for_blur_and_inpainting():
    x = phantom(128)
    blur = build_physics({"kind": "blur", "blur_sigma": 1.5, "noise_sigma": 0.02, "seed": 2}, (128, 128))
    assert 0.95 <= chi2(x, blur(x), blur).item() <= 1.05
    inpainting = build_physics({"kind": "inpainting", "keep_fraction": 0.5, "noise_sigma": 0.02}, (128, 128))
    assert 0.95 <= chi2(x, inpainting(x), inpainting).item() <= 1.05


# -- null space ----------------------------------------------------------------------------
def test_mri_null_space_split_is_exact_and_orthogonal(mri64):
    x = randn(2, 2, 64, 64)
    x_null = null_space_component(x, mri64)
    x_range = x - x_null
    # the measurements do not see x_null at all
    assert mri64.A(x_null).norm() / mri64.A(x).norm() < 1e-5
    # the measured part has no null-space content
    assert null_space_component(x_range, mri64).norm() / x_range.norm() < 1e-5
    # orthogonal split: energies add up
    torch.testing.assert_close(
        x.pow(2).sum((1, 2, 3)), x_range.pow(2).sum((1, 2, 3)) + x_null.pow(2).sum((1, 2, 3)), rtol=1e-5, atol=0
    )
    # for 4x MRI, about 3/4 of white noise's energy is unsampled
    assert 0.7 < (x_null.pow(2).sum() / x.pow(2).sum()).item() < 0.8
    energy = null_space_energy(x, mri64)
    assert energy.shape == (2, 1, 64, 64)
    torch.testing.assert_close(energy, x_null.pow(2).sum(1, keepdim=True))


def test_null_space_needs_a_linear_physics():
    with pytest.raises(TypeError, match="linear"):
        null_space_component(randn(1, 1, 8, 8), dinv.physics.Physics(A=lambda x: x**2))


# -- operator norm -------------------------------------------------------------------------
def test_operator_norm_matches_known_values(mri64, blur64):
    assert operator_norm_sq(mri64, (2, 64, 64)) == pytest.approx(1.0, abs=1e-4)
    assert operator_norm_sq(blur64, (1, 64, 64)) == pytest.approx(1.0, rel=1e-2)  # unit DC gain
    cs = build_physics({"kind": "compressed_sensing", "sampling_ratio": 0.25}, (16, 16))
    exact = torch.linalg.matrix_norm(cs._A, ord=2).item() ** 2
    assert operator_norm_sq(cs, (1, 16, 16)) == pytest.approx(exact, rel=1e-2)
    scaled = dinv.physics.LinearPhysics(A=lambda x: 3 * x, A_adjoint=lambda y: 3 * y)
    assert operator_norm_sq(scaled, (1, 8, 8)) == pytest.approx(9.0, rel=1e-4)


def test_operator_norm_is_deterministic_and_keeps_the_global_random_state(blur64):
    state = torch.get_rng_state()
    first = operator_norm_sq(blur64, (1, 64, 64))
    assert torch.equal(torch.get_rng_state(), state)
    assert operator_norm_sq(blur64, (1, 64, 64)) == first


# -- planted lesions: MRI ------------------------------------------------------------------
# Sizes: 64x64, lesion std 3 px, box of half-width 15 px (5 stds). The hard box cuts the lesion's
# tails and adds frequencies of its own; with a tighter box (3 stds) the sampled lesion's support
# stays > 0.95 but the unsampled one's rises to ~0.25, still far below the flagging threshold.
LESION_CENTER, LESION_WIDTH, BOX_HALF = (37, 25), 3.0, 15


@pytest.fixture(scope="module")
def mri_lesions(mri64):
    blob = gaussian_blob(64, LESION_CENTER, LESION_WIDTH, channels=2)
    sampled = mri64.A_dagger(mri64.A(blob))  # F^-1 M F blob
    unsampled = blob - sampled  # F^-1 (1 - M) F blob
    return sampled, unsampled, box(64, LESION_CENTER, BOX_HALF)


def test_mri_support_fraction_of_planted_lesions(mri64, mri_lesions):
    sampled, unsampled, roi = mri_lesions
    assert support_fraction(unsampled, mri64).item() < 1e-6
    assert support_fraction(sampled, mri64).item() == pytest.approx(1.0, abs=1e-4)
    assert support_fraction(unsampled, mri64, roi=roi).item() < 0.2
    assert support_fraction(sampled, mri64, roi=roi).item() > 0.8
    # a precomputed norm gives the same answer
    torch.testing.assert_close(
        support_fraction(sampled, mri64, roi, norm_sq=1.0), support_fraction(sampled, mri64, roi)
    )


@pytest.mark.parametrize("kind, expect_flag", [("unsampled", True), ("sampled", False)])
def test_mri_audit_flags_only_the_lesion_the_measurements_do_not_see(mri64, mri_lesions, kind, expect_flag):
    sampled, unsampled, roi = mri_lesions
    lesion = unsampled if kind == "unsampled" else sampled
    x = phantom(64, channels=2)
    x_hat = x + 0.5 * lesion
    y = mri64(x_hat)
    report = hallucination_audit(x_hat, y, mri64, roi=roi, reference=x)
    assert isinstance(report, AuditReport)
    # both lesions are consistent with y (it was measured from x_hat): chi2 cannot tell them apart
    assert 0.85 < report.chi2.item() < 1.15
    assert bool(report.flagged[0]) is expect_flag
    if expect_flag:
        assert report.finding_support.item() < 0.2
    else:
        assert report.finding_support.item() > 0.8
    assert report.null_energy.shape == (1, 1, 64, 64)
    assert report.sample_chi2 is None and report.std is None and report.null_disagreement is None


# -- planted lesions: deblurring -----------------------------------------------------------
def test_blur_audit_flags_a_nyquist_lesion_and_not_a_smooth_one(blur64):
    center, size = (35, 28), 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    checkerboard = (-1.0) ** (yy + xx)
    fine = gaussian_blob(size, center, 3.0) * checkerboard  # energy near Nyquist: the blur erases it
    smooth = gaussian_blob(size, center, 6.0)  # energy near DC: the blur keeps it
    roi = box(size, center, 18)
    assert support_fraction(fine, blur64).item() < 1e-6
    assert support_fraction(fine, blur64, roi).item() < 0.2
    assert support_fraction(smooth, blur64).item() > 0.9
    assert support_fraction(smooth, blur64, roi).item() > 0.8
    x = phantom(size)
    for lesion, expect_flag in ((fine, True), (smooth, False)):
        x_hat = x + 0.3 * lesion
        report = hallucination_audit(x_hat, blur64(x_hat), blur64, roi=roi, reference=x)
        assert bool(report.flagged[0]) is expect_flag
        assert 0.85 < report.chi2.item() < 1.15


# -- samples -------------------------------------------------------------------------------
def test_null_disagreement_fraction_is_one_for_null_and_zero_for_range_perturbations(mri64):
    x = phantom(64, channels=2).expand(2, -1, -1, -1)
    y = mri64(x)
    perturbations = randn(5, 2, 2, 64, 64, seed=7)
    null = torch.stack([null_space_component(p, mri64) for p in perturbations])
    visible = perturbations - null
    report = hallucination_audit(x, y, mri64, samples=x + 0.1 * null)
    torch.testing.assert_close(report.null_disagreement_fraction, torch.ones(2), atol=1e-5, rtol=0)
    assert report.sample_chi2.shape == (5, 2)
    # null-space samples all explain the data as well as x does
    torch.testing.assert_close(report.sample_chi2, report.chi2.expand(5, -1), rtol=1e-3, atol=1e-3)
    assert report.std.shape == report.null_disagreement.shape == (2, 1, 64, 64)
    report = hallucination_audit(x, y, mri64, samples=x + 0.1 * visible)
    assert report.null_disagreement_fraction.max().item() < 1e-5
    assert report.null_disagreement.max().item() < 1e-3 * report.std.max().item()


def test_std_and_disagreement_maps_known_values(blur64):
    x = phantom(64)
    y = blur64(x)
    report = hallucination_audit(x, y, blur64, samples=torch.stack([x + 0.2, x - 0.2]))
    # deviations of +-0.2 everywhere: std 0.2; a constant image is fully seen by a unit-DC blur
    torch.testing.assert_close(report.std, torch.full((1, 1, 64, 64), 0.2))
    assert report.null_disagreement_fraction.item() < 1e-6


def test_reference_defaults_to_the_sample_mean(mri64, mri_lesions):
    _, unsampled, roi = mri_lesions
    x = phantom(64, channels=2)
    samples = torch.stack([x + 0.01 * null_space_component(randn(1, 2, 64, 64, seed=s), mri64) for s in range(3)])
    x_hat = x + 0.5 * unsampled
    report = hallucination_audit(x_hat, mri64(x_hat), mri64, samples=samples, roi=roi)
    expected = support_fraction(x_hat - samples.mean(0), mri64, roi)
    torch.testing.assert_close(report.finding_support, expected)
    assert bool(report.flagged[0])
    # without roi nor reference there is no candidate finding
    assert hallucination_audit(x_hat, mri64(x_hat), mri64, samples=samples).flagged is None


def test_summary_is_json_serialisable_and_has_no_maps(mri64, mri_lesions):
    _, unsampled, roi = mri_lesions
    x = phantom(64, channels=2)
    samples = torch.stack([x, x + 0.1 * unsampled, x - 0.1 * unsampled])
    report = hallucination_audit(x + unsampled, mri64(x + unsampled), mri64, samples=samples, roi=roi, reference=x)
    summary = json.loads(json.dumps(report.summary()))
    assert summary["n_examples"] == 1 and summary["threshold"] == 0.5
    assert summary["flagged"] == [True] and summary["n_flagged"] == 1
    assert len(summary["sample_chi2"]) == 1 and len(summary["sample_chi2"][0]) == 3
    assert summary["chi2_mean"] == pytest.approx(report.chi2.item())
    assert summary["null_disagreement_fraction"][0] == pytest.approx(1.0, abs=1e-5)
    assert not {"null_energy", "std", "null_disagreement"} & set(summary)


# -- bad input -----------------------------------------------------------------------------
def test_bad_sigma_is_refused_with_its_value(mri64):
    x = randn(1, 2, 64, 64)
    y = mri64(x)
    for sigma in (0.0, -0.1):
        with pytest.raises(ValueError, match=f"sigma={sigma}"):
            chi2(x, y, mri64, sigma=sigma)
        with pytest.raises(ValueError, match=f"sigma={sigma}"):
            hallucination_audit(x, y, mri64, sigma=sigma)
    noiseless = build_physics({"kind": "mri", "acceleration": 4}, (64, 64))
    with pytest.raises(ValueError, match="pass sigma"):
        chi2(x, y, noiseless)


def test_bad_shapes_are_refused(mri64):
    x = randn(2, 2, 64, 64)
    y = mri64(x)
    with pytest.raises(ValueError, match=r"samples must have shape .* got \(3, 2, 2, 32, 32\)"):
        hallucination_audit(x, y, mri64, samples=randn(3, 2, 2, 32, 32))
    with pytest.raises(ValueError, match="N >= 2 samples to measure disagreement, got N=1"):
        hallucination_audit(x, y, mri64, samples=x[None])
    with pytest.raises(
        ValueError, match=r"reference must have the shape of x_hat \(2, 2, 64, 64\), got \(1, 2, 64, 64\)"
    ):
        hallucination_audit(x, y, mri64, reference=x[:1], roi=torch.ones(64, 64))
    with pytest.raises(ValueError, match=r"roi of shape \(32, 32\) does not broadcast"):
        hallucination_audit(x, y, mri64, roi=torch.ones(32, 32))
    with pytest.raises(ValueError, match="batch size 1 but x_hat has 2"):
        hallucination_audit(x, y[:1], mri64)
    with pytest.raises(ValueError, match=r"A\(x\) has shape \(2, 2, 64, 64\) but y has shape \(2, 2, 32, 32\)"):
        chi2(x, y[..., :32, :32], mri64)
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\), got shape \(2, 64, 64\)"):
        support_fraction(x[0], mri64)
    with pytest.raises(ValueError, match="NaN"):
        chi2(torch.full_like(x, float("nan")), y, mri64)


@pytest.mark.parametrize("low, high", [(-0.5, 1.0), (0.0, 2.0)])
def test_roi_outside_unit_interval_is_refused(mri64, low, high):
    roi = torch.full((1, 1, 64, 64), low)
    roi[..., 0, 0] = high
    with pytest.raises(ValueError, match=rf"roi values must lie in \[0, 1\], got values in \[{low:g}, {high:g}\]"):
        support_fraction(randn(1, 2, 64, 64), mri64, roi=roi)


def test_zero_energy_structure_and_bad_threshold_are_refused(mri64):
    x = randn(2, 2, 64, 64)
    structure = x.clone()
    structure[1] = 0
    with pytest.raises(ValueError, match=r"zero energy for example\(s\) \[1\]"):
        support_fraction(structure, mri64)
    roi = torch.zeros(1, 1, 64, 64)
    roi[..., :4, :4] = 1
    with pytest.raises(ValueError, match=r"zero energy inside the roi for example\(s\) \[0, 1\]"):
        support_fraction(torch.ones_like(x) * (1 - roi), mri64, roi=roi)
    y = mri64(x)
    with pytest.raises(ValueError, match=r"zero energy inside the roi for example\(s\) \[0, 1\]"):
        hallucination_audit(x, y, mri64, roi=roi, reference=x)  # x_hat equals the reference: no finding
    with pytest.raises(ValueError, match="threshold must lie in \\[0, 1\\], got threshold=1.5"):
        hallucination_audit(x, y, mri64, threshold=1.5)
    with pytest.raises(ValueError, match="norm_sq=0"):
        support_fraction(x, mri64, norm_sq=0)


def test_inputs_are_not_modified(mri64, mri_lesions):
    _, unsampled, roi = mri_lesions
    x = phantom(64, channels=2)
    x_hat = x + unsampled
    y = mri64(x_hat)
    samples = torch.stack([x_hat, x_hat + 0.1 * unsampled, x])
    inputs = (x_hat, y, samples, roi, x)
    copies = [t.clone() for t in inputs]
    hallucination_audit(x_hat, y, mri64, samples=samples, roi=roi, reference=x)
    support_fraction(x_hat, mri64, roi)
    chi2(x_hat, y, mri64)
    null_space_energy(x_hat, mri64)
    for original, copy in zip(inputs, copies, strict=True):
        assert torch.equal(original, copy)
