r"""PnP-HVAE's automatic temperature against the ground-truth curve PSNR(tau), for several
splitting settings (line hold-out fraction x number of disjoint hold-outs), on data that is
**not** reserved: the bundled MNI template or a training-split subject of the corpus. The
splitting defaults of :class:`~deepinv_tunable.solvers.PnPHVAE` (``TUNE_SPLITS``,
``TUNE_LINE_HOLDOUT``) were chosen here; the reserved subjects only measure them afterwards
(``run_autotune.py``).

Usage::

    python -m benchmarks tau_holdout                                   # MNI, 4 axial slices
    python -m benchmarks tau_holdout --subject pyradiomics_brain1      # a training subject
    python -m benchmarks tau_holdout --settings 0.3:1 0.15:3 0.1:4
    python -m benchmarks tau_holdout --subject pyradiomics_brain1 --tasks mri8x --score-iters 20 60
        # the split score and the ground-truth PSNR of candidates of 20 and 60 iterations
    python -m benchmarks tau_holdout --subject pyradiomics_brain1 --settings 0.15:3 --pilots none 0.8:30
        # candidates from the zero-filled image against candidates from a shared pilot (TUNE_PILOT)

Measured: see docs/autotune.rst, "Known limits". Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from deepinv_tunable import pretrained
from deepinv_tunable.data import sample_slices
from deepinv_tunable.physics import build_physics, magnitude, to_physics_domain
from deepinv_tunable.solvers import PnPHVAE
from deepinv_tunable.solvers.pnp_hvae import TUNE_PILOT
from deepinv_tunable.tuning import rules as autotune_rules
from deepinv_tunable.utils.metrics import image_metrics

from .reserved_data import SUBJECTS, load_subject
from .tasks import RESERVED_TASKS as TASKS

ROOT = Path(__file__).resolve().parents[1]
TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def mean_psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    values = image_metrics(magnitude(x_hat).clamp(0, 1), x)["psnr"]
    return sum(values) / len(values)


def pilot(text: str) -> tuple[float, int] | None:
    """``none`` or ``TAU:ITERATIONS`` -> PnPHVAE's ``tune_pilot``."""
    if text == "none":
        return None
    tau, _, iters = text.partition(":")
    return float(tau), int(iters)


def setting(text: str) -> tuple[float, int]:
    """``FRACTION:SPLITS`` -> (fraction, splits)."""
    fraction, _, splits = text.partition(":")
    return float(fraction), int(splits or 1)


@torch.no_grad()
def score_grid(hvae, y, physics, x, iters: int, fraction: float, splits: int) -> str:
    """The split score (summed over ``splits`` disjoint hold-outs of ``fraction`` of the lines)
    and the ground-truth PSNR of a full-data solve, both after ``iters`` iterations, per tau."""
    solver = PnPHVAE(hvae)
    sigma = 0.01

    def solve(tau, y_, physics_, x0):
        return solver._iterate(y_, physics_, tau, hvae.gamma, sigma, None, x0, iters, False)[0]

    scorer = autotune_rules._Scorer("splitting", solve, y, physics, sigma, 1.1, 0.1, 0, False, splits, fraction)
    cells = [f"{tau}: score {scorer(tau):.1f}, PSNR {mean_psnr(solve(tau, y, physics, None), x):.2f}" for tau in TAUS]
    return f"  {iters} iterations, {scorer.n_splits} x {fraction:.2f}: " + " | ".join(cells)


def images(args) -> torch.Tensor:
    if args.subject == "mni152":
        return sample_slices("mni152_t1", "axial", indices=args.slices, spacing=1.8)
    if args.subject in SUBJECTS:
        raise SystemExit(f"{args.subject} is reserved for evaluation: tune on the template or a training subject")
    return load_subject(args.subject, 0, args.n_slices, args.corpus).evaluation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default="mni152", help="mni152 or a training-split corpus subject")
    parser.add_argument("--slices", type=int, nargs="+", default=[80, 95, 110, 125], help="MNI axial slices")
    parser.add_argument("--n-slices", type=int, default=4, help="slices of a corpus subject")
    parser.add_argument("--tasks", nargs="+", default=["mri4x", "mri8x"], choices=["mri4x", "mri8x"])
    parser.add_argument("--settings", type=setting, nargs="+", default=[(0.3, 1), (0.15, 3)])
    parser.add_argument("--pilots", type=pilot, nargs="+", default=[TUNE_PILOT], help="none or TAU:ITERATIONS")
    parser.add_argument("--hvae", default="hvae_mri64")
    parser.add_argument(
        "--score-iters",
        type=int,
        nargs="*",
        default=[],
        help="also the split score per tau after these iteration counts",
    )
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--threads", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    x = images(args)
    hvae = pretrained.load(args.hvae)
    for task in args.tasks:  # the reserved benchmark's physics (tasks.RESERVED_TASKS)
        physics = build_physics(TASKS[task], tuple(x.shape[-2:]))
        y = physics(to_physics_domain(x, physics))
        curve = {tau: mean_psnr(PnPHVAE(hvae, tau=tau).reconstruct(y, physics).x, x) for tau in TAUS}
        best = max(curve, key=curve.get)
        print(
            f"{args.subject} {task}  oracle tau {best} {curve[best]:.2f} dB; curve "
            + ", ".join(f"{t}: {p:.2f}" for t, p in curve.items()),
            flush=True,
        )
        for fraction, splits in args.settings:
            for start in args.pilots:
                out = PnPHVAE(hvae, tune_line_holdout=fraction, tune_splits=splits, tune_pilot=start).reconstruct(
                    y, physics
                )
                psnr = mean_psnr(out.x, x)
                choice = out.choices["tau"]
                print(
                    f"  hold-out {fraction:.2f} x {splits} ({choice.n_splits} used), pilot {start}: "
                    f"tau {out.parameters['tau']:.3f} {psnr:.2f} dB (gap {psnr - curve[best]:+.2f}), "
                    f"{choice.n_solves} solves",
                    flush=True,
                )
            for iters in args.score_iters:
                print(score_grid(hvae, y, physics, x, iters, fraction, splits), flush=True)
    return 0
