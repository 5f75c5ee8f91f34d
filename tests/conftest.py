import os

import nibabel as nib
import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


#: the devices core tests run on: the CPU always, CUDA when this machine has it
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def small_nifti(tmp_path):
    """A 16x12x8 uint8 NIfTI with a non-trivial affine (LPS-like storage), values 0..255."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(16, 12, 8)).astype(np.uint8)
    affine = np.array([[-2.0, 0, 0, 30], [0, -1.5, 0, 20], [0, 0, 3.0, -10], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(np.uint8)
    path = tmp_path / "small.nii.gz"
    nib.save(img, str(path))
    return path, data, affine


@pytest.fixture
def interrupt_second_batch(monkeypatch):
    """Make a recipe run raise KeyboardInterrupt in its second batch (after the first batch's
    baseline and solver metrics); ``interrupt_second_batch.undo()`` restores the run."""
    import deepinv_tunable.recipes.runner as runner

    real, calls = runner.image_metrics, []

    def interrupting(est, x):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(est, x)

    monkeypatch.setattr(runner, "image_metrics", interrupting)

    class Handle:
        @staticmethod
        def undo() -> None:
            monkeypatch.setattr(runner, "image_metrics", real)

    return Handle


@pytest.fixture(scope="module")
def hvae():
    """A tiny hierarchical VAE (3 groups, width 8) with prior heads moved off the standard normal
    (``test_hvae``, ``test_pnp_hvae``)."""
    from deepinv_tunable.nets import HVAE

    torch.manual_seed(0)
    model = HVAE(width=8, z_channels=2, groups_per_scale=(1, 1, 1), gamma=0.05).eval()
    with torch.no_grad():  # move the zero-initialised prior heads off the standard normal
        for group in model.groups:
            group.prior.convs[-1].weight.normal_(0, 0.1)
    return model
