import gzip
import hashlib

import nibabel as nib
import numpy as np
import pytest
import torch

from deepinv_tunable.data import available_samples, load_volume, sample_path, save_volume
from deepinv_tunable.utils.atomic import atomic_write, write_json_atomic


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_affine_shape_and_values(small_nifti, tmp_path, suffix):
    path, data, affine = small_nifti
    before = _sha(path)
    vol = load_volume(path)
    assert vol.shape == data.shape
    assert vol.data.dtype == torch.float32
    np.testing.assert_array_equal(vol.data.numpy(), data.astype(np.float32))
    out = save_volume(vol.data, tmp_path / f"out{suffix}", like=vol, dtype=vol.header.get_data_dtype())
    back = nib.load(str(out))
    np.testing.assert_array_equal(back.affine, affine)
    assert back.shape == data.shape
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)  # uint8: exact
    assert _sha(path) == before  # the input file is never modified


def test_float_round_trip_within_float32_precision(small_nifti, tmp_path):
    path, data, _ = small_nifti
    vol = load_volume(path)
    values = vol.data / 7.0
    out = save_volume(values, tmp_path / "f.nii.gz", like=vol)
    back = load_volume(out)
    assert torch.allclose(back.data, values, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(back.affine, vol.affine)


def test_bundled_samples_load():
    assert available_samples() == ["itk_t1", "mni152_t1"]
    mni = load_volume(sample_path("mni152_t1"))
    assert mni.shape == (197, 233, 189) and mni.orientation == "RAS" and mni.spacing == (1.0, 1.0, 1.0)
    itk = load_volume(sample_path("itk_t1"))
    assert itk.shape == (128, 128, 62) and itk.orientation == "LSA"
    assert itk.spacing == pytest.approx((2.0, 2.0, 3.0))
    assert float(mni.data.max()) == 255.0


def test_4d_with_singleton_last_axis_is_accepted(tmp_path):
    path = tmp_path / "v4.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), str(path))
    assert load_volume(path).shape == (4, 5, 6)


def test_nan_volume_is_refused(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"contains 1 NaN and 0 infinite values"):
        load_volume(path)


def test_2d_file_is_refused(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match=r"holds a 2D image of shape \(8, 8\); expected a 3D volume"):
        load_volume(path)


def test_corrupt_gzip_is_refused(small_nifti, tmp_path):
    path, _, _ = small_nifti
    broken = tmp_path / "broken.nii.gz"
    raw = path.read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"could not read NIfTI file .*broken\.nii\.gz"):
        load_volume(broken)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(ValueError, match=r"could not read NIfTI file"):
        load_volume(garbage)


def test_wrong_extension_and_missing_file(tmp_path):
    other = tmp_path / "brain.mha"
    other.write_bytes(b"x")
    with pytest.raises(
        ValueError, match=r"unsupported volume file 'brain.mha': expected a NIfTI file ending in .nii or .nii.gz"
    ):
        load_volume(other)
    with pytest.raises(FileNotFoundError, match=r"volume file not found: .*missing.nii.gz"):
        load_volume(tmp_path / "missing.nii.gz")


def test_save_refuses_bad_output(small_nifti, tmp_path):
    vol = load_volume(small_nifti[0])
    with pytest.raises(ValueError, match=r"must end in .nii or .nii.gz"):
        save_volume(vol.data, tmp_path / "out.png", like=vol)
    with pytest.raises(ValueError, match=r"must be 3D"):
        save_volume(vol.data[0], tmp_path / "out.nii", like=vol)
    assert list(tmp_path.glob("out*")) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"a": 1})

    def failing(path):
        path.write_text("partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == '{\n  "a": 1\n}\n'  # previous content intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temp file left


def _write_dicom_series(folder, positions_mm, order=None, prefix="s", description="T1", offset=0):
    """One single-frame series, slice k filled with 10 (k + 1) + offset, at z = positions_mm[k];
    returns its SeriesInstanceUID."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series_uid = generate_uid()
    frames = [np.full((6, 5), 10 * (k + 1) + offset, dtype=np.uint16) for k in range(len(positions_mm))]
    for k in order or range(len(positions_mm)):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(folder / f"{prefix}{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription, ds.Modality = description, "MR"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, positions_mm[k]]
        ds.PixelSpacing = [0.5, 0.75]
        ds.Rows, ds.Columns = 6, 5
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1
        ds.PixelData = frames[k].tobytes()
        ds.save_as(str(folder / f"{prefix}{k}.dcm"), enforce_file_format=True)
    return series_uid


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    pytest.importorskip("pydicom")
    _write_dicom_series(tmp_path, [0.0, 2.5, 7.5, 10.0])  # the slice at 5.0 mm is missing
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"not evenly spaced: slices 1 and 2 .* 5.000 mm apart.* 2.500 mm"):
        load_volume(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside the input


def test_dicom_series_matches_known_geometry(tmp_path):
    pytest.importorskip("pydicom")
    _write_dicom_series(tmp_path, [0.0, 2.5, 5.0], order=(2, 0, 1))  # files written out of order on purpose
    vol = load_volume(tmp_path)
    assert vol.shape == (5, 6, 3)
    assert [float(vol.data[0, 0, k]) for k in range(3)] == [19.0, 39.0, 59.0]
    # LPS -> RAS flips x and y; columns step 0.75 mm, rows 0.5 mm, slices 2.5 mm.
    np.testing.assert_allclose(np.diag(vol.affine), [-0.75, -0.5, 2.5, 1.0])


def test_dicom_folder_with_two_series_lists_them_and_reads_the_chosen_one(tmp_path, capsys):
    pytest.importorskip("pydicom")
    from deepinv_tunable.cli import main
    from deepinv_tunable.data.dicom import list_dicom_series

    t1 = _write_dicom_series(tmp_path, [0.0, 2.5, 5.0], prefix="a", description="T1")
    t2 = _write_dicom_series(tmp_path, [0.0, 2.5, 5.0, 7.5], prefix="b", description="T2", offset=1)
    (tmp_path / "notes.txt").write_text("not DICOM")
    listed = {s.uid: s for s in list_dicom_series(tmp_path)}
    assert set(listed) == {t1, t2} and listed[t2].n_files == 4 and listed[t2].description == "T2"
    with pytest.raises(ValueError, match=r"holds 2 DICOM series: .*T1.*T2|holds 2 DICOM series: .*T2.*T1"):
        load_volume(tmp_path)
    vol = load_volume(tmp_path, series=t2)
    assert vol.shape == (5, 6, 4) and float(vol.data[0, 0, 0]) == 2 * 11 - 1
    with pytest.raises(ValueError, match=r"series '1\.2\.3' is not in"):
        load_volume(tmp_path, series="1.2.3")
    assert main(["series", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert t1 in printed and "(4 files, MR: T2)" in printed


def test_4d_nifti_needs_and_honours_a_volume_index(tmp_path):
    data = np.stack([np.full((4, 5, 3), v, dtype=np.float32) for v in (1.0, 2.0, 3.0)], axis=-1)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    path = tmp_path / "series4d.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    with pytest.raises(ValueError, match=r"4D with 3 volumes .* --volume-index 0\.\.2"):
        load_volume(path)
    with pytest.raises(ValueError, match=r"volume_index 3 is out of range .* 0\.\.2"):
        load_volume(path, volume_index=3)
    vol = load_volume(path, volume_index=1)
    assert vol.shape == (4, 5, 3) and float(vol.data.unique()) == 2.0
    np.testing.assert_array_equal(vol.affine, affine)  # the affine is kept
    with pytest.raises(ValueError, match=r"is 3D, not 4D"):
        load_volume(sample_path("itk_t1"), volume_index=0)
