r"""Posterior sampling, calibrated uncertainty and hallucination audits on held-out slices.

Prior: the shipped hierarchical VAE (``hvae_mri64``). Per dataset, on 4x MRI (noise 0.01):

1. PnP-HVAE's temperature is picked by a grid on the calibration slices (PSNR), and its MAP
   estimate warm-starts :class:`~deepinv_tunable.solvers.PnPHVAESampler`, which draws ``N``
   posterior samples per slice through :class:`~deepinv_tunable.audit.uncertainty.PosteriorSampler`.
2. Split-conformal calibration (:class:`~deepinv_tunable.audit.uncertainty.ConformalCalibrator`,
   90 %) on the calibration slices; empirical coverage and mean width on the evaluation slices,
   for the uncalibrated Gaussian and empirical-quantile intervals and for the calibrated ones,
   over all pixels and over the head (ground truth > 0.05). The calibration slices are disjoint
   from, and interleaved with, the evaluation slices and, for the template, never seen in
   training (both come from the held-out slab 100-139). Calibration is also carried across
   subjects (template -> other subject) to show what that costs.
3. Audit (:func:`~deepinv_tunable.audit.hallucination.hallucination_audit`): chi2 of the MAP and of the
   samples, null-space share of the reconstruction and of the samples' disagreement; a lesion
   made only of unsampled k-space and one made only of sampled k-space are planted into the
   MAP of two evaluation slices; their support fraction and flag are reported.
4. Cost: seconds for N = 16 samples of one 128x128 slice (and for the MAP warm start), and
   peak memory of the sampler for N = 8 and N = 32 at the same batch size (fresh processes).

Writes ``results/benchmarks/uncertainty.json`` (atomically, after every step), the figure
``docs/figures/uncertainty_audit.png``, and prints Markdown. Not a test; not run in CI.

Usage::

    python -m benchmarks uncertainty            # about 15 minutes on 2 cores
    python -m benchmarks uncertainty --quick    # 2 + 2 slices
    python -m benchmarks uncertainty --memory-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.audit.hallucination import hallucination_audit, null_space_component, operator_norm_sq
from deepinv_tunable.audit.uncertainty import ConformalCalibrator, PosteriorSampler, PosteriorSummary, coverage
from deepinv_tunable.physics import build_physics, magnitude, to_physics_domain
from deepinv_tunable.solvers import PnPHVAE, PnPHVAESampler
from deepinv_tunable.tuning import grid_search
from deepinv_tunable.utils.atomic import atomic_write, write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from .common import DATASETS as BASELINE_DATASETS
from .common import PRIOR_EVAL_DATASETS, DatasetSpec, SliceRange, load_dataset
from .tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "benchmarks" / "uncertainty.json"
FIGURE = ROOT / "docs" / "figures" / "uncertainty_audit.png"
#: conformal calibration / evaluation splits, interleaved so that the two sets are
#: exchangeable (the guarantee of split conformal needs it): slices of the template's held-out
#: slab (100-139, never seen in training), and axial slices of the other subject.
DATASETS: dict[str, DatasetSpec] = {
    "mni152": replace(BASELINE_DATASETS["mni152"], label="mni152 held-out slab", calibration=SliceRange(102, 140, 7)),
    "itk_axial": DatasetSpec(**{**PRIOR_EVAL_DATASETS["itk_axial"].__dict__, "calibration": SliceRange(36, 92, 8)}),
}
TAU_GRID = (0.6, 0.7, 0.8)
HEAD = 0.05  # ground-truth intensity above which a pixel is in the head


def map_estimate(hvae, physics, y: torch.Tensor, tau: float) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # non-convergence is reported by run_pnp_hvae
        return torch.cat([PnPHVAE(hvae, tau=tau).reconstruct(y[i : i + 1], physics).x for i in range(len(y))])


def draw(hvae, physics, y: torch.Tensor, x_map: torch.Tensor, args) -> tuple[torch.Tensor, float]:
    """``N`` samples ``(N, B, 2, H, W)`` per slice, warm-started at the MAP; and seconds."""
    sampler = PosteriorSampler(
        PnPHVAESampler(hvae, tau=args.sampler_tau, max_iter=args.n_iter),
        n_samples=args.n_samples,
        batch_size=args.n_samples,
        seed=0,
        keep_samples=True,
    )
    samples, seconds = [], 0.0
    for i in range(len(y)):  # one slice at a time: memory bounded by N, not by the number of slices
        s = sampler.sample(y[i : i + 1], physics, x_init=x_map[i : i + 1])
        samples.append(s.samples)
        seconds += s.seconds
    return torch.cat(samples, dim=1), seconds / len(y)


def summarise(samples: torch.Tensor) -> PosteriorSummary:
    """Moments of the magnitude images (what is displayed and scored)."""
    return PosteriorSummary.from_samples(torch.stack([magnitude(s) for s in samples]))


def calibrate(summary: PosteriorSummary, x: torch.Tensor) -> dict[str, ConformalCalibrator]:
    """One calibrator per region scored (all pixels, head): calibrate where you evaluate."""
    return {
        region: ConformalCalibrator(alpha=0.1).fit([summary], [x], None if region == "all" else [x > HEAD])
        for region in ("all", "head")
    }


def coverage_rows(cals: dict[str, ConformalCalibrator], summary: PosteriorSummary, x: torch.Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for region, roi in (("all", None), ("head", x > HEAD)):
        for name, (lo, hi) in (
            ("gaussian", summary.interval(0.1)),
            ("empirical", summary.interval(0.1, "empirical")),
            ("calibrated", cals[region].apply(summary)),
        ):
            c = coverage(lo, hi, x, roi=roi)
            out[f"{name}_{region}"] = {
                "coverage": c.coverage,
                "mean_width": c.mean_width,
                "per_image_min": min(c.per_image),
                "per_image_max": max(c.per_image),
            }
    return out


def LESION_CENTRE(h: int, w: int) -> tuple[int, int]:
    return h // 2 - 10, w // 2 + 12


def planted_blob_like(x: torch.Tensor) -> torch.Tensor:
    """A Gaussian blob (std 3 px, peak 0.3) beside the centre of the head, in the real channel."""
    _, _, h, w = x.shape
    cy, cx = LESION_CENTRE(h, w)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    blob = torch.zeros_like(x)
    blob[:, 0] = 0.3 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return blob


def planted_lesions(physics, x_map: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Plant a Gaussian blob (3 px) projected on unsampled / sampled k-space into the MAP,
    60 % of the local intensity, beside the centre of the head; audit with a box around it."""
    _, _, h, w = x_map.shape
    cy, cx = LESION_CENTRE(h, w)
    blob = planted_blob_like(x_map)
    roi = torch.zeros(1, 1, h, w)
    roi[..., cy - 15 : cy + 16, cx - 15 : cx + 16] = 1
    norm_sq = operator_norm_sq(physics, x_map.shape[1:])
    null = null_space_component(blob, physics)
    rows = {}
    for name, lesion in (("unsampled_kspace", null), ("sampled_kspace", blob - null)):
        # the measurements are taken with the lesion present: a real finding would be in y
        y_lesion = y + physics.A(lesion)
        report = hallucination_audit(x_map + lesion, y_lesion, physics, roi=roi, reference=x_map, norm_sq=norm_sq)
        rows[name] = {
            "support": report.finding_support.tolist(),
            "flagged": report.flagged.tolist(),
            "chi2": report.chi2.tolist(),
        }
    return rows


def figure(
    x, x_map_mag, summary, cal, null_energy, lesions: dict[str, torch.Tensor], planted: dict[str, Any], path: Path
) -> None:
    """Ground truth, MAP, error, std, calibrated width, null-space magnitude and the two
    planted lesions (magnitude) with their support fraction, for one slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (x, "ground truth", "gray"),
        (x_map_mag, "PnP-HVAE (MAP)", "gray"),
        ((x_map_mag - x).abs(), "|error|", "magma"),
        (summary.std, "posterior std", "magma"),
        (2 * cal.half_width(summary.std), "90% calibrated width", "magma"),
        (null_energy.sqrt(), "null-space magnitude", "magma"),
    ]
    for name, lesion in lesions.items():
        p = planted[name]
        verdict = "flagged" if p["flagged"][0] else "not flagged"
        panels.append(
            (magnitude(lesion), f"lesion, {name.replace('_', ' ')}\nsupport {p['support'][0]:.2f}: {verdict}", "magma")
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.1))
    for ax, (img, title, cmap) in zip(axes, panels):
        arr = img[0, 0].numpy()
        vmax = 1.0 if cmap == "gray" else float(np.percentile(arr, 99.5)) or 1.0
        im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        if cmap != "gray":
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)


def memory_probe(n_samples: int, batch: int) -> float:
    """Peak increase of resident memory (MB) while a fresh process draws ``n_samples`` for one
    slice with batch ``batch`` (polled every 5 ms; the imports' own peak is excluded)."""
    code = f"""
import torch
from {__package__}.common import PeakRSS
from deepinv_tunable import pretrained
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import PnPHVAESampler
from deepinv_tunable.audit.uncertainty import PosteriorSampler
torch.set_num_threads(2)
physics = build_physics({TASKS["mri4x"]!r}, (128, 128))
y = physics(to_physics_domain(torch.rand(1, 1, 128, 128), physics))
sampler = PosteriorSampler(PnPHVAESampler(pretrained.load('hvae_mri64'), tau=0.9, max_iter=2), n_samples={n_samples},
                           batch_size={batch})
with PeakRSS() as rss:
    sampler.sample(y, physics)
print(rss.increase_mib)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def redraw_figure(record: dict[str, Any], args) -> None:
    """The figure of a full run, for its first template evaluation slice, without the rest."""
    row = record["datasets"]["mni152"]
    hvae, physics = pretrained.load("hvae_mri64"), build_physics(TASKS["mri4x"], (128, 128))
    data = load_dataset(DATASETS["mni152"], quick=True)
    torch.manual_seed(0)
    x = data.evaluation[:1]
    y = physics(to_physics_domain(x, physics))
    x_map = map_estimate(hvae, physics, y, row["tau_map"])
    samples, _ = draw(hvae, physics, y, x_map, args)
    cal = ConformalCalibrator(alpha=0.1)
    cal.q = row["conformal_q"]["head"]
    audit = hallucination_audit(x_map, y, physics)
    blob = planted_blob_like(x_map)
    null = null_space_component(blob, physics)
    figure(
        x,
        magnitude(x_map).clamp(0, 1),
        summarise(samples),
        cal,
        audit.null_energy,
        {"unsampled_kspace": null, "sampled_kspace": blob - null},
        planted_lesions(physics, x_map, y),
        FIGURE,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument(
        "--figure-only",
        action="store_true",
        help="redraw the figure for the first evaluation slice from the recorded tau and q",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--n-samples", type=int, default=16)
    parser.add_argument("--n-iter", type=int, default=5, help="Gibbs steps per sample after the MAP warm start")
    parser.add_argument("--sampler-tau", type=float, default=0.9)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(2)
    record: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    record.update(
        {
            "model": "hvae_mri64",
            "task": TASKS["mri4x"],
            "n_samples": args.n_samples,
            "n_iter": args.n_iter,
            "sampler_tau": args.sampler_tau,
            "complete": False,
        }
    )
    if args.figure_only:
        redraw_figure(record, args)
        return 0
    if not args.memory_only:
        hvae = pretrained.load("hvae_mri64")
        physics = build_physics(TASKS["mri4x"], (128, 128))
        calibrators, summaries = {}, {}
        for name in args.datasets:
            data = load_dataset(DATASETS[name], args.quick)
            torch.manual_seed(0)
            y_cal = physics(to_physics_domain(data.calibration, physics))
            y_ev = physics(to_physics_domain(data.evaluation, physics))
            tau = grid_search(
                lambda t: magnitude(map_estimate(hvae, physics, y_cal, t)).clamp(0, 1),
                data.calibration,
                TAU_GRID,
                param="tau",
            ).best
            map_cal, map_ev = map_estimate(hvae, physics, y_cal, tau), map_estimate(hvae, physics, y_ev, tau)
            samples_cal, _ = draw(hvae, physics, y_cal, map_cal, args)
            samples_ev, sec = draw(hvae, physics, y_ev, map_ev, args)
            s_cal, s_ev = summarise(samples_cal), summarise(samples_ev)
            cals = calibrate(s_cal, data.calibration)
            calibrators[name], summaries[name] = cals, (s_ev, data.evaluation)
            map_mag = magnitude(map_ev).clamp(0, 1)
            audit = hallucination_audit(map_ev, y_ev, physics, samples=samples_ev)
            row = {
                "label": DATASETS[name].label,
                "calibration_slices": data.calibration_idx,
                "evaluation_slices": data.evaluation_idx,
                "tau_map": tau,
                "conformal_q": {region: c.q for region, c in cals.items()},
                "psnr_map": float(np.mean(image_metrics(map_mag, data.evaluation)["psnr"])),
                "psnr_posterior_mean": float(np.mean(image_metrics(s_ev.mean.clamp(0, 1), data.evaluation)["psnr"])),
                "coverage": coverage_rows(cals, s_ev, data.evaluation),
                "audit": {
                    "chi2_map": audit.chi2.mean().item(),
                    "chi2_samples": audit.sample_chi2.mean().item(),
                    "null_fraction_map": audit.null_fraction.mean().item(),
                    "null_disagreement_fraction": audit.null_disagreement_fraction.mean().item(),
                },
                "planted": planted_lesions(physics, map_ev[:2], y_ev[:2]),
                "seconds_per_slice_sampling": sec,
            }
            record.setdefault("datasets", {})[name] = row
            write_json_atomic(OUT, record)
            print(
                f"{name}: tau {tau}, q {row['conformal_q']}, coverage {json.dumps(row['coverage'], indent=None)}",
                flush=True,
            )
            if name == "mni152":
                blob = planted_blob_like(map_ev[:1])
                null = null_space_component(blob, physics)
                figure(
                    data.evaluation[:1],
                    map_mag[:1],
                    PosteriorSummary(s_ev.mean[:1], s_ev.std[:1], 0, 0.0),
                    cals["head"],
                    audit.null_energy[:1],
                    {"unsampled_kspace": null, "sampled_kspace": blob - null},
                    row["planted"],
                    FIGURE,
                )
        if "mni152" in calibrators and "itk_axial" in summaries:
            s_ev, x_ev = summaries["itk_axial"]
            record["cross_subject"] = coverage_rows(calibrators["mni152"], s_ev, x_ev)
            write_json_atomic(OUT, record)
        # cost of N = 16 samples (warm start included separately), one slice
        data = load_dataset(DATASETS["mni152"], True)
        y = physics(to_physics_domain(data.evaluation[:1], physics))
        start = time.perf_counter()
        x_map = map_estimate(hvae, physics, y, 0.7)
        map_seconds = time.perf_counter() - start
        _, sec = draw(hvae, physics, y, x_map, argparse.Namespace(**{**vars(args), "n_samples": 16}))
        record["speed"] = {
            "map_seconds": map_seconds,
            "n16_sampling_seconds": sec,
            "n_iter": args.n_iter,
            "device": "cpu",
            "threads": torch.get_num_threads(),
        }
        write_json_atomic(OUT, record)
    record["sampling_memory_increase_mb"] = {
        f"N={n}, batch={b}": memory_probe(n, b) for n, b in ((8, 8), (32, 8), (32, 16))
    }
    record["complete"] = True
    write_json_atomic(OUT, record)
    print(json.dumps({k: v for k, v in record.items() if k in ("speed", "sampling_memory_increase_mb")}, indent=1))
    return 0
