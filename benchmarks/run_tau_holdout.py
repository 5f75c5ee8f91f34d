#!/usr/bin/env python
r"""Is PnP-HVAE's automatic temperature low because the splitting rule holds out 30 % of the
sampled MRI lines? Compares the ground-truth curve PSNR(tau) with the rule's choice at two
line hold-out fractions, on the bundled MNI template (not a reserved subject: safe to look at).

Usage::

    python benchmarks/run_tau_holdout.py                     # MRI 4x and 8x, 4 axial slices
    python benchmarks/run_tau_holdout.py --fractions 0.3 0.15 0.1
    python benchmarks/run_tau_holdout.py --splits 3          # + the tau-grid score summed over 3 splits

Measured on 2026-12-01 (hvae_mri64, 1 % noise): see docs/autotune.rst, "Known limits".
Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import functools
import warnings

import torch

import deepinv_tunable.autotune as autotune
from deepinv_tunable import pretrained
from deepinv_tunable.data import sample_slices
from deepinv_tunable.metrics import image_metrics
from deepinv_tunable.physics import build_physics, magnitude, noise_sigma, to_physics_domain
from deepinv_tunable.solvers import PnPHVAE

TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def mean_psnr(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    values = image_metrics(magnitude(x_hat).clamp(0, 1), x)["psnr"]
    return sum(values) / len(values)


@torch.no_grad()
def summed_split_choice(hvae, y, physics, fraction: float, n_splits: int) -> float:
    """The tau of :data:`TAUS` whose held-out residual, summed over ``n_splits`` random line
    hold-outs of ``fraction`` (seeds 0..n-1), is smallest; each candidate runs PnP-HVAE's 20
    tuning iterations, as in :meth:`~deepinv_tunable.solvers.PnPHVAE.reconstruct`."""
    solver = PnPHVAE(hvae)
    sigma = noise_sigma(physics)

    def solve(tau, y_, physics_, x0):
        return solver._iterate(y_, physics_, tau, hvae.gamma, sigma, None, x0, solver.tune_iter, False)[0]

    line_holdout = autotune.line_holdout_mask
    autotune.line_holdout_mask = functools.partial(line_holdout, holdout_fraction=fraction)
    try:
        totals = dict.fromkeys(TAUS, 0.0)
        for seed in range(n_splits):
            score = autotune._Scorer("splitting", solve, y, physics, sigma, 1.1, 0.1, seed, False)
            for tau in TAUS:
                totals[tau] += score(tau)
    finally:
        autotune.line_holdout_mask = line_holdout
    return min(totals, key=totals.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[80, 95, 110, 125])
    parser.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.3, 0.15])
    parser.add_argument(
        "--splits", type=int, default=0, help="also score the tau grid over this many random splits (seeds 0..N-1)"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    x = sample_slices("mni152_t1", "axial", indices=args.slices, spacing=1.8)
    hvae = pretrained.load("hvae_mri64")
    line_holdout = autotune.line_holdout_mask
    for acc in args.accelerations:
        spec = {"kind": "mri", "acceleration": acc, "center_fraction": 0.08, "mask": "gaussian", "noise_sigma": 0.01}
        physics = build_physics(spec, tuple(x.shape[-2:]))
        y = physics(to_physics_domain(x, physics))
        curve = {tau: mean_psnr(PnPHVAE(hvae, tau=tau).reconstruct(y, physics).x, x) for tau in TAUS}
        best = max(curve, key=curve.get)
        print(
            f"MRI {acc}x  oracle tau {best} {curve[best]:.2f} dB; curve "
            + ", ".join(f"{t}: {p:.2f}" for t, p in curve.items())
        )
        for fraction in args.fractions:
            autotune.line_holdout_mask = functools.partial(line_holdout, holdout_fraction=fraction)
            try:
                out = PnPHVAE(hvae).reconstruct(y, physics)
            finally:
                autotune.line_holdout_mask = line_holdout
            psnr = mean_psnr(out.x, x)
            print(
                f"  hold-out {fraction:.2f}: tau {out.parameters['tau']:.3f} {psnr:.2f} dB (gap {psnr - curve[best]:+.2f})"
            )
            if args.splits:
                tau = summed_split_choice(hvae, y, physics, fraction, args.splits)
                gap = curve[tau] - curve[best]
                print(f"    {args.splits} splits, tau grid: tau {tau} {curve[tau]:.2f} dB (gap {gap:+.2f})")


if __name__ == "__main__":
    main()
