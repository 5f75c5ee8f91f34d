"""The audit stage of a recipe run (``deepinv-tunable audit``): posterior samples around each
reconstruction, split-conformal intervals, and the hallucination audit, written as volumes,
figures and JSON beside the reconstruction.

Per evaluated slice: ``N`` samples (:class:`~deepinv_tunable.audit.uncertainty.PosteriorSampler`),
their pixelwise std, the interval width (calibrated when a calibration is available), the
magnitude of the reconstruction's null-space component and the numbers of
:func:`~deepinv_tunable.audit.hallucination.hallucination_audit` (chi2 of the reconstruction and of the
samples, null-space share of the image and of the samples' disagreement). With ground truth (a
simulated run) the coverage of the intervals is measured too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..audit.hallucination import hallucination_audit
from ..audit.uncertainty import ConformalCalibrator, PosteriorSampler, PosteriorSummary, central_z, coverage
from ..data import save_volume, slices_to_volume
from ..physics import from_physics_domain
from ..utils.atomic import atomic_write, write_json_atomic
from .report import shown_slices
from .schema import AuditConfig, RecipeError

if TYPE_CHECKING:
    from .prepared import PreparedRun


def _image(x: torch.Tensor, physics) -> torch.Tensor:
    """The displayed image of a physics-domain tensor (MRI: magnitude)."""
    return from_physics_domain(x, physics).real


class RecipeAudit:
    """Posterior sampling, calibration and audit maps for the slices of one recipe run.

    :param ~deepinv_tunable.recipes.schema.AuditConfig config: the recipe's ``audit`` section.
    :param solver: the recipe's reconstructor (sampled from when ``config.sampler == "solver"``).
    :param physics: the run's physics (one operator shared by all slices).
    :param int n_slices: slices in the prepared volume (maps are kept for all of them, 0 where
        not processed).
    """

    def __init__(self, config: AuditConfig, solver, physics, n_slices: int, image_shape: tuple[int, int]):
        self.config, self.physics = config, physics
        if config.sampler == "solver":
            if not getattr(solver, "stochastic", False):
                raise RecipeError(
                    f"audit.sampler 'solver': {type(solver).__name__} is deterministic; use "
                    "audit.sampler: pnp_hvae_sampler or pixel_dps"
                )
            reconstructor, self.warm_start = solver, False
        elif config.sampler == "pixel_dps":
            from ..priors import load_pixel_denoiser
            from ..solvers import PixelDPS

            p = config.sampler_params
            denoiser = load_pixel_denoiser(p.denoiser)
            reconstructor, self.warm_start = PixelDPS(denoiser, num_steps=p.num_steps, weight=p.weight), False
        else:
            from ..pretrained import load
            from ..solvers import PnPHVAESampler

            p = config.sampler_params
            reconstructor, self.warm_start = PnPHVAESampler(load(p.model), tau=p.tau, max_iter=p.max_iter), True
        self.sampler = PosteriorSampler(
            reconstructor,
            n_samples=config.samples,
            batch_size=config.batch_size,
            seed=config.seed,
            keep_samples=True,
            progress=False,
        )
        self.calibrator: ConformalCalibrator | None = None
        if config.calibration_file is not None:
            try:
                self.calibrator = ConformalCalibrator.load(config.calibration_file)
            except (OSError, ValueError) as err:
                raise RecipeError(f"audit.calibration_file: {err}") from None
        shape = (n_slices, 1, *image_shape)
        self.maps = {name: torch.zeros(shape) for name in ("std", "interval_width", "null_space")}
        self.per_slice: dict[str, list] = {}
        self._inside = {"calibrated": 0, "uncalibrated": 0}
        self._scored = 0
        self.calibration_record: dict[str, Any] | None = None

    # -- sampling ---------------------------------------------------------------------------
    def _samples(self, y: torch.Tensor, x_phys: torch.Tensor) -> torch.Tensor:
        """Samples ``(N, 1, C, H, W)`` of one slice, in the physics' image domain."""
        kwargs = {"x_init": x_phys} if self.warm_start else {}
        return self.sampler.sample(y, self.physics, **kwargs).samples.to(x_phys.device)

    def _summary(self, samples: torch.Tensor) -> PosteriorSummary:
        return PosteriorSummary.from_samples(torch.stack([_image(s, self.physics) for s in samples]).cpu())

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return x > self.config.head_threshold

    def calibrate(self, indices: list[int], x_true: torch.Tensor, y: torch.Tensor, x_phys: torch.Tensor) -> None:
        """Fit the split-conformal calibration on slices with ground truth (head pixels)."""
        summaries = [self._summary(self._samples(y[i : i + 1], x_phys[i : i + 1])) for i in range(len(indices))]
        truths = [x_true[i : i + 1].cpu() for i in range(len(indices))]
        self.calibrator = ConformalCalibrator(alpha=self.config.alpha).fit(
            summaries, truths, [self._head(t) for t in truths]
        )
        self.calibration_record = {**self.calibrator.to_dict(), "calibration_slices": indices}

    # -- evaluation -------------------------------------------------------------------------
    def process(self, indices: list[int], x_true: torch.Tensor | None, y: torch.Tensor, x_phys: torch.Tensor) -> None:
        """Sample and audit a batch of evaluated slices (``x_true`` for coverage, may be None)."""
        z = central_z(self.config.alpha)
        for i, k in enumerate(indices):
            samples = self._samples(y[i : i + 1], x_phys[i : i + 1])
            summary = self._summary(samples)
            report = hallucination_audit(x_phys[i : i + 1], y[i : i + 1], self.physics, samples=samples)
            half = self.calibrator.half_width(summary.std) if self.calibrator else z * summary.std
            self.maps["std"][k] = summary.std[0].cpu()
            self.maps["interval_width"][k] = 2 * half[0].cpu()
            self.maps["null_space"][k] = report.null_energy[0].sqrt().cpu()  # |x_null|, summed over channels
            row = {
                "chi2": float(report.chi2[0]),
                "sample_chi2_mean": float(report.sample_chi2.mean()),
                "null_fraction": float(report.null_fraction[0]),
                "null_disagreement_fraction": float(report.null_disagreement_fraction[0]),
                "mean_std": float(summary.std.mean()),
            }
            if x_true is not None:
                self._score(row, summary, x_true[i : i + 1].cpu())
            for key, value in row.items():
                self.per_slice.setdefault(key, []).append(value)
            self.per_slice.setdefault("slices", []).append(int(k))

    def _score(self, row: dict[str, Any], summary: PosteriorSummary, truth: torch.Tensor) -> None:
        """Coverage of the uncalibrated (and calibrated) intervals over the slice's head pixels."""
        head = self._head(truth)
        intervals = {"uncalibrated": summary.interval(self.config.alpha)}
        if self.calibrator is not None:
            intervals["calibrated"] = self.calibrator.apply(summary)
        for name, (lower, upper) in intervals.items():
            fraction = coverage(lower, upper, truth, roi=head).coverage if head.any() else 0.0
            self._inside[name] += round(fraction * int(head.sum()))
            row[f"coverage_{name}"] = fraction
        self._scored += int(head.sum())

    def record(self) -> dict[str, Any]:
        """JSON summary: per-slice numbers, means, coverage and the calibration used."""
        out: dict[str, Any] = {
            "samples": self.config.samples,
            "sampler": self.config.sampler,
            "sampler_params": self.config.sampler_params.model_dump() if self.config.sampler != "solver" else None,
            "alpha": self.config.alpha,
            "per_slice": self.per_slice,
            "mean": {k: float(np.mean(v)) for k, v in self.per_slice.items() if k != "slices"},
            "calibration": self.calibration_record or (self.calibrator.to_dict() if self.calibrator else None),
            "intervals": "calibrated (split conformal)" if self.calibrator else "uncalibrated Gaussian (mean +- z std)",
        }
        if self._scored:
            out["coverage_head"] = {
                "nominal": 1 - self.config.alpha,
                "uncalibrated": self._inside["uncalibrated"] / self._scored,
                "calibrated": (self._inside["calibrated"] / self._scored if self.calibrator is not None else None),
            }
        return out

    def write(
        self,
        out_dir: Path,
        scale: float,
        save_map,
        figure_slices: list[int],
        reference: torch.Tensor,
        reconstruction: torch.Tensor,
    ) -> tuple[dict[str, Any], list[Path]]:
        """Write ``std``, ``interval_width`` and ``null_space`` volumes (input units, via
        ``save_map(name, stack)``), ``audit.json``, ``calibration.json`` and audit figures."""
        for name, stack in self.maps.items():
            save_map(name, stack * scale)
        record = self.record()
        write_json_atomic(out_dir / "audit.json", record)
        if self.calibration_record is not None:
            self.calibrator.save(out_dir / "calibration.json")
        figures = [
            self._figure(out_dir / "figures" / f"audit_slice_{k:04d}.png", k, reference, reconstruction)
            for k in figure_slices
        ]
        return record, figures

    def _figure(self, path: Path, k: int, reference: torch.Tensor, reconstruction: torch.Tensor) -> Path:
        import matplotlib.pyplot as plt

        panels = [
            (reference[k, 0], "reference", "gray"),
            (reconstruction[k, 0], "reconstruction", "gray"),
            (self.maps["std"][k, 0], "posterior std", "magma"),
            (
                self.maps["interval_width"][k, 0],
                f"{100 * (1 - self.config.alpha):.0f}% interval width" + (" (calibrated)" if self.calibrator else ""),
                "magma",
            ),
            (self.maps["null_space"][k, 0], "null-space content |x_null|", "magma"),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
        for ax, (img, title, cmap) in zip(axes, panels):
            arr = img.numpy()
            vmax = 1.0 if cmap == "gray" else max(float(np.percentile(arr, 99.5)), 1e-6)
            im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            if cmap != "gray":
                fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(f"audit, slice {k}", fontsize=10)
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
        plt.close(fig)
        return path


def calibrated_auditor(run: PreparedRun, audit_cfg: AuditConfig, solver) -> RecipeAudit:
    """The run's auditor, calibrated on the recipe's calibration slices when it names any."""
    auditor = RecipeAudit(audit_cfg, solver, run.physics, len(run.slices), tuple(run.slices.shape[-2:]))
    cal_idx = run.audit_calibration_idx
    if cal_idx:
        x_cal = run.slices[cal_idx]
        y_cal = run.measure(x_cal, cal_idx)
        auditor.calibrate(cal_idx, x_cal, y_cal, run.estimate_both(solver, y_cal, cal_idx)[0])
    return auditor


def write_audit(run: PreparedRun, auditor: RecipeAudit, out_dir: Path, recon: torch.Tensor):
    """The audit's maps (on the input's grid), record and figures: ``(record, figure paths)``."""
    plane = run.recipe.data.plane

    def save_map(name: str, stack: torch.Tensor) -> None:
        save_volume(slices_to_volume(stack, plane), out_dir / f"{name}.nii.gz", like=run.prepared)

    shown = shown_slices(run.eval_idx, run.recipe.output.figures)
    return auditor.write(out_dir, run.scaling.high - run.scaling.low, save_map, shown, run.slices, recon)


#: the recipe runner's helpers (calibrated_auditor, write_audit) stay out of the API pages
__all__ = ["RecipeAudit"]
