r"""The temperature at which the corpus HVAE (``hvae_mri64``) denoises best, per noise std: the
measurement behind :data:`deepinv_tunable.priors.hvae_denoiser.CORPUS_HVAE_TAUS`.

Clean evaluation slices of four **training** subjects (no reserved subject), Gaussian noise of
each std added (seed 0), PSNR of :math:`\mathrm{HVAE}(x + n, \tau)` on a temperature grid.
Usage: ``python -m benchmarks hvae_tau_map`` (about 2 minutes on one thread).
"""

import argparse
import warnings

import torch

from deepinv_tunable import pretrained
from deepinv_tunable.utils.metrics import image_metrics

from .reserved_data import ROOT, load_subject

SUBJECTS = ("pyradiomics_brain1", "pyradiomics_lung1", "nibabel_anatomical", "dipy_aniso_vox")
SIGMAS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.12, 0.19)
TAUS = (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    hvae = pretrained.load("hvae_mri64")
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([load_subject(name, 2, 4, str(ROOT / "corpus")).evaluation for name in SUBJECTS])

    def psnr(estimate: torch.Tensor) -> float:
        return round(sum(image_metrics(estimate.clamp(0, 1), x)["psnr"]) / len(x), 2)

    with torch.no_grad():
        for sigma in SIGMAS:
            noisy = x + sigma * torch.randn(x.shape, generator=gen)
            scores = {tau: psnr(hvae.reconstruct(noisy, tau)) for tau in TAUS}
            print(f"sigma {sigma}: noisy {psnr(noisy)}, by tau {scores}, best tau {max(scores, key=scores.get)}")
    return 0
