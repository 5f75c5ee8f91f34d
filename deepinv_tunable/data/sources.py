r"""The pinned sources of the training corpus: each source *package* (fetched by pip, pinned
version, never installed) and each file read from it, with its SHA-256, the subject it shows, its
modality, its split and how it is sliced. Adding a subject to the corpus is one entry of
:data:`SOURCES` (and a line of ``DATA_SOURCES.md``); :mod:`deepinv_tunable.data.corpus` builds and
loads the corpus from these pins."""

from __future__ import annotations

from dataclasses import dataclass


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
