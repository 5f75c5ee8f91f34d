import nibabel as nib
import numpy as np
import pytest
import torch

from deepinv_tunable.data import (
    Volume,
    batched,
    percentile_scaling,
    prepare_volume,
    select_slices,
    slices_to_volume,
    volume_to_slices,
)
from deepinv_tunable.data.phantoms import random_ellipses_2d, random_ellipsoids_3d, shepp_logan_2d


def _volume(data, affine):
    return Volume(
        data=torch.as_tensor(data, dtype=torch.float32), affine=np.asarray(affine, float), header=nib.Nifti1Header()
    )


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_slices_round_trip_exactly(plane):
    data = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(5, 6, 7)
    slices = volume_to_slices(data, plane)
    assert slices.ndim == 4 and slices.shape[1] == 1
    assert torch.equal(slices_to_volume(slices, plane), data)


def test_planted_marker_lands_where_anatomy_says_whatever_the_storage_order():
    """A bright voxel right-anterior-superior of centre must appear in the same axial slice,
    upper (anterior) half and right-index side, for RAS and for LPS-stored copies."""
    ras = torch.zeros(9, 11, 13)
    ras[6, 8, 10] = 1.0  # R index 6 (> 4), A index 8 (> 5), S index 10
    affine_ras = np.diag([1.0, 1.0, 1.0, 1.0])
    # Same anatomy stored LPS: flip the first two axes and adjust the affine accordingly.
    lps = ras.flip(0).flip(1)
    affine_lps = np.array([[-1.0, 0, 0, 8], [0, -1.0, 0, 10], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    for vol in (_volume(ras, affine_ras), _volume(lps, affine_lps)):
        canon = prepare_volume(vol, "axial")
        assert "".join(nib.aff2axcodes(canon.affine)) == "RAS"
        s = volume_to_slices(canon.data, "axial")
        k, _, row, col = (int(i) for i in torch.nonzero(s)[0])
        assert (k, row, col) == (10, 11 - 1 - 8, 6)  # rows run anterior -> posterior


def test_prepare_volume_resamples_and_crops_in_plane_only():
    data = torch.rand(40, 50, 7)
    vol = _volume(data, np.diag([1.0, 1.0, 3.0, 1.0]))
    out = prepare_volume(vol, "axial", spacing=2.0, size=(32, 16))
    assert out.spacing == pytest.approx((2.0, 2.0, 3.0))
    assert volume_to_slices(out.data, "axial").shape == (7, 1, 32, 16)
    assert torch.equal(vol.data, data)  # input untouched


def test_prepare_volume_rejects_bad_arguments():
    vol = _volume(torch.rand(4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="unknown plane 'transverse'"):
        prepare_volume(vol, "transverse")
    with pytest.raises(ValueError, match="spacing must be a positive number"):
        prepare_volume(vol, "axial", spacing=-1)
    with pytest.raises(ValueError, match=r"size must be two positive integers \(H, W\), got \(0, 4\)"):
        prepare_volume(vol, "axial", size=(0, 4))


def test_select_slices_and_batches():
    assert select_slices(10) == list(range(10))
    assert select_slices(100, 40, 60, count=5) == [40, 44, 48, 52, 56]
    with pytest.raises(ValueError, match=r"slice range \[5, 50\) is empty or outside \[0, 20\)"):
        select_slices(20, 5, 50)
    with pytest.raises(ValueError, match=r"count must be in \[1, 5\]"):
        select_slices(20, 0, 5, count=6)
    assert list(batched([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


def test_percentile_scaling_inverts_exactly_and_refuses_constant_volumes():
    x = torch.linspace(-3, 500, 1001)
    s = percentile_scaling(x, 1, 99)
    y = s.apply(x)
    assert float(torch.quantile(y, 0.01)) == pytest.approx(0.0, abs=1e-5)
    assert float(torch.quantile(y, 0.99)) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(s.invert(y), x, atol=1e-4)
    with pytest.raises(ValueError, match="volume is constant"):
        percentile_scaling(torch.ones(10))
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        percentile_scaling(x, 50, 10)


def test_phantoms_known_values_and_seeding():
    sl = shepp_logan_2d(129)
    assert sl[64, 64] == pytest.approx(0.2)  # centre: outer ellipse 1.0 minus 0.8
    assert sl[0, 0] == 0 and 0 <= float(sl.min()) and float(sl.max()) <= 1
    a = random_ellipses_2d(64, generator=torch.Generator().manual_seed(3))
    b = random_ellipses_2d(64, generator=torch.Generator().manual_seed(3))
    c = random_ellipses_2d(64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    v = random_ellipsoids_3d((16, 16, 16), generator=torch.Generator().manual_seed(0))
    assert v.shape == (16, 16, 16) and float(v[0, 0, 0]) == 0.0 and float(v[8, 8, 8]) > 0
