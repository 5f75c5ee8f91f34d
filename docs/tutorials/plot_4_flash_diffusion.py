"""
Severity-adaptive sampling: steps that follow the degradation
==============================================================

Flash-Diffusion estimates, per slice, how degraded the measurement-only estimate is, and starts
the latent diffusion sampler at the matching step: mild inputs get a few steps, severe ones
more. This example runs the shipped models on four held-out slices acquired at four different
MRI accelerations *in one batch* (one mask per slice), compares with a fixed start, and audits
the severity estimate against the true acceleration.
"""

# %%
# Four held-out slices and one deepinv MRI operator whose mask differs per slice.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from deepinv_tunable.data import load_volume, percentile_scaling, prepare_volume, sample_path, volume_to_slices
from deepinv_tunable.diffusion.severity import plot_severity_audit, severity_audit
from deepinv_tunable.physics import batched_mri, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import FlashDiffusion
from deepinv_tunable.utils.metrics import image_metrics

torch.manual_seed(0)
volume = prepare_volume(load_volume(sample_path("mni152_t1")), "axial", spacing=1.8, size=(128, 128))
x = percentile_scaling(volume.data, 0.5, 99.5).apply(volume_to_slices(volume.data, "axial"))[[105, 115, 125, 135]]
accelerations = [2, 4, 8, 12]
physics = batched_mri(
    [{"kind": "mri", "acceleration": a, "noise_sigma": 0.01, "seed": i} for i, a in enumerate(accelerations)],
    (128, 128),
)
y = physics(to_physics_domain(x, physics))

# %%
# The solver comes from the shipped severity encoder, which records its autoencoder and latent
# diffusion model (the default: the f4c12 set). ``reconstruct`` returns the estimated severity,
# the start step and the number of network evaluations (NFE) of every slice.
flash = FlashDiffusion.from_pretrained()
out = flash.reconstruct(y, physics, seed=0)
fixed = flash.reconstruct(y, physics, start=20, seed=0)  # the same code with a fixed start (CCDF-L)


def psnr(estimate):
    return image_metrics(from_physics_domain(estimate, physics).clamp(0, 1), x)["psnr"]


for i, a in enumerate(accelerations):
    print(
        f"{a:>2}x  sigma_hat {float(out.sigma_hat[i]):.3f}  start t={int(out.start_step[i]):>3}  "
        f"NFE {int(out.nfe[i]):>2}  PSNR {psnr(out.x)[i]:.2f} dB   (fixed start: NFE 20, {psnr(fixed.x)[i]:.2f} dB)"
    )
print("flagged as outside the trained severity range:", out.out_of_range.tolist())

# %%
# The severity audit: the encoder's estimate against the acceleration and the blur width,
# with the true latent error for comparison (Spearman correlation in the titles).
audit = severity_audit(
    flash.severity_encoder, x, {"mri": [2, 4, 8, 12], "blur": [0.5, 1.5, 3.0]}, noise_sigma=0.01, reference=flash.vae
)
print("Spearman:", {k: round(v, 3) for k, v in audit.spearman.items()})
figure_path = Path(tempfile.mkdtemp()) / "severity_audit.png"
plot_severity_audit(audit, figure_path)
plt.figure(figsize=(10, 3))
plt.imshow(plt.imread(figure_path))
plt.axis("off")
plt.show()

# %%
# On reserved real scans the shipped set is above a tuned TV at MRI 4x and 8x with 15-20 steps
# per slice, and under DPIR. Its severity encoder ranks CT views but not MRI acceleration or blur
# width (the audit above): the steps spent follow its estimate, not yet the degradation. Measured
# figures: ``docs/flash_results``.
