"""
A ten-minute tour: a generative prior inside deepinv
====================================================

``deepinv_tunable`` adds priors to `deepinv <https://deepinv.github.io>`_. It does not wrap it.
Physics are deepinv physics, solvers are deepinv ``Reconstructor`` objects, and a prior can be
a deepinv ``Denoiser`` for deepinv's own algorithms. This tour reconstructs two held-out brain
slices from 4x undersampled MRI four ways:

1. zero-filling;
2. deepinv's TV;
3. PnP-HVAE with the shipped hierarchical VAE;
4. deepinv's HQS with the same network as its denoiser.
"""

# %%
# Data: two axial slices of the bundled MNI template, from the slab the shipped models never
# saw in training, on the 1.8 mm, 128x128 grid the models were trained on. Intensities are
# scaled to [0, 1] by robust percentiles.
import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_tunable import TVPGD, HVAEDenoiser, PnPHVAE, pretrained
from deepinv_tunable.data import load_volume, percentile_scaling, prepare_volume, sample_path, volume_to_slices
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.utils.metrics import image_metrics

torch.manual_seed(0)
volume = prepare_volume(load_volume(sample_path("mni152_t1")), "axial", spacing=1.8, size=(128, 128))
scaling = percentile_scaling(volume.data, 0.5, 99.5)
x = scaling.apply(volume_to_slices(volume.data, "axial"))[[110, 125]]  # (2, 1, 128, 128)

# %%
# Physics: the factory returns deepinv's own ``MRI`` operator (a Cartesian mask, 1% noise).
# MRI images follow deepinv's two-channel (real, imaginary) convention, and
# ``to_physics_domain`` / ``from_physics_domain`` convert to and from real slices.
physics = build_physics({"kind": "mri", "acceleration": 4, "noise_sigma": 0.01, "seed": 0}, (128, 128))
print(type(physics))
y = physics(to_physics_domain(x, physics))


def show(estimate):
    return from_physics_domain(estimate, physics).clamp(0, 1)


# %%
# Three reconstructions. TV's weight and PnP-HVAE's temperature ``tau`` would normally be tuned
# on calibration slices (the recipes do this). The values below are the ones tuned for this task
# in ``benchmarks/``.
hvae = pretrained.load("hvae_mri64")  # shipped with the package; nothing is downloaded
estimates = {
    "zero-filled": show(physics.A_adjoint(y)),
    "TV (deepinv)": show(TVPGD(lambda_tv=0.02)(y, physics)),
    "PnP-HVAE": show(PnPHVAE(hvae, tau=0.7)(y, physics)),
}

# %%
# The same network as a deepinv ``Denoiser``, inside deepinv's own half-quadratic splitting.
# ``HVAEDenoiser`` maps deepinv's noise level ``sigma`` to a temperature.
hqs = dinv.optim.HQS(
    data_fidelity=dinv.optim.L2(),
    prior=dinv.optim.PnP(HVAEDenoiser(hvae)),
    stepsize=1.0,
    sigma_denoiser=0.03,
    max_iter=20,
)
estimates["HQS + HVAEDenoiser"] = show(hqs(y, physics))

for name, est in estimates.items():
    print(f"{name:20s} PSNR {sum(image_metrics(est, x)['psnr']) / 2:5.2f} dB")

# %%
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
for ax, (name, img) in zip(axes, [("ground truth", x), *estimates.items()]):
    ax.imshow(img[0, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(name)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# Next: :doc:`plot_2_uncertainty_audit` (how sure is the reconstruction, and what did the prior
# invent?). For whole volumes, use a recipe: ``deepinv-tunable run recipes/pnp_hvae_mri4x.yaml
# --input brain.nii.gz --out results/brain --full-volume``.
