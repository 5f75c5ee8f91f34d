r"""What PnP-HVAE's inference knobs can buy, against DPIR with the corpus DnCNN, on a training
subject: the evidence behind "the HVAE, not the solver, bounds PnP-HVAE" (``docs/benchmarks.rst``).

On the evaluation slices of one subject (default ``pyradiomics_brain1``, a training subject of
the corpus, so nothing here is tuned on a reserved one) and one task (default MRI 4x, noise 0.01),
every row is a fixed-parameter solve, scored against the ground truth (this is a study, not a
parameter rule):

* ``dpir corpus``: deepinv-style DPIR, 24 iterations, the corpus DnCNNs, final sigma 0.005 / 0.007;
* ``tau``: PnP-HVAE at temperatures 0.9 / 0.95 / 1 with the HVAE's own decoder std (0.02);
* ``gamma``: the decoder std of the proximal step, 0.01 to 1 (1: the sampled data kept as measured);
* ``anneal``: the temperature (0.5 -> 0.95) or the decoder std (0.1 -> 0.02) ramped over the first
  30 of 100 iterations, a DPIR-style continuation;
* ``iterations``: PSNR of the iterates of one 200-iteration solve (tau 0.95, gamma 0.1);
* ``ml gamma``: the decoder std re-estimated at every iteration by maximum likelihood from the
  data residual of the HVAE reconstruction, :math:`\hat\gamma^2 = (\|A\mu - y\|^2 -
  \mathbb{E}\|n\|^2) / \operatorname{tr}(AA^\top)` (floored at the HVAE's own);
* ``flip ensemble``: the HVAE reconstruction averaged over the 4 flips of the image (4x the cost).

Usage::

    python -m benchmarks pnp_hvae_knobs --out benchmarks/results/pnp_hvae_knobs.json   # about 20 min, 1 thread

Not a test and not run in CI.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import build_physics, from_physics_domain, noise_sigma, to_physics_domain
from deepinv_tunable.priors import DnCNNDenoiser
from deepinv_tunable.priors.pixel_denoiser import CORPUS_DNCNN
from deepinv_tunable.solvers import DPIR, MeasurementBaseline, PnPHVAE
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import METRICS

from . import reserved_data
from .tasks import RESERVED_TASKS

CURVE_AT = (10, 20, 30, 50, 75, 100, 150, 200)


class ScheduledPnPHVAE(PnPHVAE):
    """PnP-HVAE whose temperature and decoder std follow a per-iteration schedule."""

    def __init__(self, hvae, taus, gammas):
        super().__init__(hvae, tau=float(taus[-1]), max_iter=len(taus), tol=0.0)
        self.taus, self.gammas = list(taus), list(gammas)

    def _iterate(self, y, physics, tau, gamma, sigma, generator, x_init, max_iter, return_iterates):
        x = MeasurementBaseline()(y, physics)
        for t, g in zip(self.taus, self.gammas):
            x = self._step(x, y, physics, float(t), float(g), sigma, generator)
        return x, [0.0], None


class MaximumLikelihoodGamma(PnPHVAE):
    """PnP-HVAE with the decoder std re-estimated from the data residual at every iteration."""

    def __init__(self, hvae, tau: float, max_iter: int, trace: float, noise_energy: float):
        super().__init__(hvae, tau=tau, max_iter=max_iter, tol=0.0)
        self.trace, self.noise_energy, self.history = trace, noise_energy, []

    def _step(self, x, y, physics, tau, gamma, sigma, generator):
        mu = self.denoise(x, physics, tau)
        residual = (physics.A(mu) - y).flatten(1).pow(2).sum(1)
        gamma2 = ((residual - self.noise_energy) / self.trace).clamp_min(gamma**2)
        self.history.append(gamma2.sqrt().tolist())
        return physics.prox_l2(mu, y, (gamma2 / sigma**2).view(-1, *[1] * (mu.dim() - 1)))


class FlipEnsemblePnPHVAE(PnPHVAE):
    """PnP-HVAE with the HVAE reconstruction averaged over the image's 4 flips."""

    def denoise(self, x, physics, tau):
        flips = ((), (-1,), (-2,), (-1, -2))
        return sum(super(FlipEnsemblePnPHVAE, self).denoise(x.flip(d), physics, tau).flip(d) for d in flips) / 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default="pyradiomics_brain1")
    parser.add_argument("--task", default="mri4x", choices=list(RESERVED_TASKS))
    parser.add_argument("--n-eval", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--corpus", default=str(reserved_data.ROOT / "corpus"))
    parser.add_argument("--out", default=str(reserved_data.ROOT / "results" / "benchmarks" / "pnp_hvae_knobs.json"))


def run(args: argparse.Namespace) -> int:
    if args.subject in reserved_data.SUBJECTS:
        raise SystemExit(f"{args.subject} is a reserved subject: this study is for training subjects only")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    subject = reserved_data.load_subject(args.subject, 2, args.n_eval, args.corpus)
    x = subject.evaluation
    physics = build_physics(RESERVED_TASKS[args.task], (reserved_data.SIZE, reserved_data.SIZE))
    y = physics(to_physics_domain(x, physics), rng=torch.Generator().manual_seed(0))
    sigma = noise_sigma(physics)

    def psnr(estimate: torch.Tensor) -> float:
        return float(METRICS["psnr"](from_physics_domain(estimate, physics).clamp(0, 1), x).mean())

    record: dict[str, Any] = {"command": sys.argv, "subject": args.subject, "task": args.task, "rows": []}

    def row(group: str, label: str, run) -> Any:
        start = time.perf_counter()
        out = run()
        estimate = out.x if hasattr(out, "x") else out
        record["rows"].append(
            {"group": group, "label": label, "psnr": psnr(estimate), "seconds": time.perf_counter() - start}
        )
        print(f"{group:14s} {label:34s} {record['rows'][-1]['psnr']:6.2f} dB", flush=True)
        write_json_atomic(args.out, record)
        return out

    hvae = pretrained.load("hvae_mri64")
    dncnn = DnCNNDenoiser.from_pretrained(CORPUS_DNCNN)
    for s in (0.005, 0.007):
        row("dpir corpus", f"sigma {s}", lambda: DPIR(sigma=s, denoiser=dncnn, max_iter=24)(y, physics))
    for tau in (0.9, 0.95, 1.0):
        row("tau", f"tau {tau}, gamma 0.02", lambda: PnPHVAE(hvae, tau=tau).reconstruct(y, physics))
    for g in (0.01, 0.04, 0.1, 1.0):
        row("gamma", f"tau 0.95, gamma {g}", lambda: PnPHVAE(hvae, tau=0.95, gamma=g).reconstruct(y, physics))
    ramp = lambda a, b, n: list(np.geomspace(a, b, 30)) + [b] * (n - 30)  # noqa: E731
    row("anneal", "tau 0.5 -> 0.95", lambda: ScheduledPnPHVAE(hvae, ramp(0.5, 0.95, 100), [0.02] * 100)(y, physics))
    row("anneal", "gamma 0.1 -> 0.02", lambda: ScheduledPnPHVAE(hvae, [0.95] * 100, ramp(0.1, 0.02, 100))(y, physics))
    long = row(
        "iterations",
        "tau 0.95, gamma 0.1, 200 iterations",
        lambda: PnPHVAE(hvae, tau=0.95, gamma=0.1, max_iter=200, tol=0.0).reconstruct(y, physics, return_iterates=True),
    )
    record["iteration_curve"] = {k: psnr(long.iterates[k]) for k in CURVE_AT}
    probes = torch.Generator().manual_seed(1)
    shape = (1, 1, *x.shape[-2:])
    trace = float(
        np.mean(
            [
                physics.A(to_physics_domain(torch.randint(0, 2, shape, generator=probes).float() * 2 - 1, physics))
                .abs()
                .pow(2)
                .sum()
                for _ in range(4)
            ]
        )
    )
    zero = torch.zeros_like(to_physics_domain(x[:1], physics))
    noise_energy = float(np.mean([physics(zero, rng=probes).abs().pow(2).sum() for _ in range(4)]))
    ml = MaximumLikelihoodGamma(hvae, 0.95, 100, trace, noise_energy)
    row("ml gamma", "tau 0.95, gamma re-estimated", lambda: ml.reconstruct(y, physics))
    record["ml_gamma_final"] = ml.history[-1]
    row("flip ensemble", "tau 0.95, gamma 0.1", lambda: FlipEnsemblePnPHVAE(hvae, 0.95, 0.1).reconstruct(y, physics))
    record["sigma"] = sigma
    record["complete"] = True
    write_json_atomic(args.out, record)
    return 0
