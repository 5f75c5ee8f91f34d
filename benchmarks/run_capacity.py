r"""Capacity evidence for PnP-HVAE against DPIR: how well each shipped HVAE autoencodes (tau = 1)
and denoises (noise 0.03, best tau) the clean evaluation slices of the reserved MR subjects, beside
scico's DnCNN denoising the same noisy slices. Usage: ``python -m benchmarks capacity`` (about 1 minute).
"""

import argparse
import warnings
from pathlib import Path

import torch

from deepinv_tunable import pretrained
from deepinv_tunable.priors import DnCNNDenoiser
from deepinv_tunable.utils.metrics import image_metrics

from .reserved_data import load_subject


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(0)
    den = DnCNNDenoiser.from_pretrained()
    for name in ("itk_t1", "pyradiomics_brain2"):
        x = load_subject(name, 3, 6, str(Path(__file__).resolve().parents[1] / "corpus")).evaluation
        noisy = x + 0.03 * torch.randn(x.shape, generator=g)

        def psnr(z, x=x):
            return round(sum(image_metrics(z.clamp(0, 1), x)["psnr"]) / len(x), 2)

        print(name, "noisy(0.03)", psnr(noisy))
        with torch.no_grad():
            print(name, "dncnn denoise", psnr(den(noisy, 0.03)))
            for m in ("hvae_mri64", "hvae_mni152_mri64"):
                hv = pretrained.load(m)
                print(
                    name,
                    m,
                    "autoencode",
                    psnr(hv.reconstruct(x, 1.0)),
                    "denoise best tau",
                    max((psnr(hv.reconstruct(noisy, t)), t) for t in (0.6, 0.7, 0.8, 0.9, 1.0)),
                    flush=True,
                )
    return 0
