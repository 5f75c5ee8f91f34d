r"""Ground-truth-free parameter choice against the ground-truth oracle, on the corpus' reserved subjects.

For every (subject, task) of ``run_reserved.py`` and every solver asked for:

* **oracle**: the parameter of a grid with the best mean PSNR on the evaluation slices' ground
  truth (an oracle, labelled so: a bound on what any rule can reach with one value per volume);
* **auto (per volume)**: the parameter chosen by :func:`deepinv_tunable.tuning.select.select_parameter`
  from the *measurements* of the reference slices alone (no ground truth anywhere), then applied to
  the evaluation slices; one row per rule (``--rules``; ``auto`` is the solver's default).

Solvers: ``tv`` (:class:`~deepinv_tunable.solvers.TVPGD`), ``pnp_hvae``
(:class:`~deepinv_tunable.solvers.PnPHVAE`), ``latent_map_tv``
(:class:`~deepinv_tunable.solvers.LatentMAPTV` with ``tunable_vae_f4_mri128`` at full k: two
parameters, ``(lambda_tv, beta)``, its oracle over ``DEFAULT_TUNING_GRID``; the latent MAP runs
once per set of slices, as in :meth:`~deepinv_tunable.solvers.LatentMAPTV.tune`).

Reports PSNR of both, the gap (auto - oracle), the chosen values, whether the choice sat at a search
bound, and the tuning cost in solves and in seconds relative to one solve of the same slices
(measured on the evaluation slices and scaled to the reference slices' count; run it alone for
clean figures, or see ``run_tune_cost.py`` for the per-slice figure).
Writes ``results/benchmarks/autotune.json`` after every row; the docs' table
(``docs/autotune_table.rst``) is generated from ``benchmarks/results/autotune_results.json`` by
``python -m benchmarks tables``.
A training subject of the corpus (``pyradiomics_brain1``, ``pyradiomics_lung1``, ...) may be given
to ``--subjects`` to develop a rule without touching the reserved ones.

Usage::

    python -m benchmarks autotune --solvers tv --subjects itk_t1 pyradiomics_brain2
    python -m benchmarks autotune --solvers pnp_hvae --tasks mri4x --n-eval 3
    python -m benchmarks autotune --solvers latent_map_tv --n-eval 3
    python -m benchmarks autotune --combine a.json b.json --out benchmarks/results/autotune_results.json
    python -m benchmarks tables --only autotune_table.rst
"""

from __future__ import annotations

import argparse
import ast
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.physics import build_physics, from_physics_domain, to_physics_domain
from deepinv_tunable.solvers import TVPGD, LatentMAP, LatentMAPTV, PnPHVAE
from deepinv_tunable.solvers.latent_tv import DEFAULT_TUNING_GRID
from deepinv_tunable.utils.atomic import write_json_atomic
from deepinv_tunable.utils.metrics import image_metrics

from . import common
from .reserved_data import SUBJECTS, load_subject
from .tasks import RESERVED_TASKS as TASKS
from .tasks import RESERVED_TASKS_OF as TASKS_OF

ROOT = Path(__file__).resolve().parents[1]
TV_GRID = (0.001, 0.002, 0.004, 0.007, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08)
TAU_GRID = (0.7, 0.8, 0.9, 0.95, 1.0)
#: LatentMAPTV's generator (run_reserved.py's latent_map_tv row: full k, 100 Adam steps)
LATENT_VAE = "tunable_vae_f4_mri128"
SOLVERS = ("tv", "pnp_hvae", "latent_map_tv")


class _OnceLatentMAP(LatentMAP):
    """A LatentMAP that solves each measurement tensor once: LatentMAPTV's grid and its automatic
    choice re-solve only the TV deviation, as :meth:`LatentMAPTV.tune` does (benchmark-local)."""

    def reconstruct(self, y, physics, **kwargs):
        key = (y.data_ptr(), tuple(y.shape), id(physics))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = super().reconstruct(y, physics, **kwargs)
        return cache[key]


def _solvers(hvae, latent_map):
    """name -> (build(value) for a fixed value, build_auto(rule), parameter names, oracle grid);
    a value is a number, or a tuple with one number per parameter."""
    return {
        "tv": (
            lambda v: TVPGD(lambda_tv=v),
            lambda rule: TVPGD(lambda_tv="auto", tune_rule=rule),
            ("lambda_tv",),
            TV_GRID,
        ),
        "pnp_hvae": (
            lambda v: PnPHVAE(hvae, tau=v),
            lambda rule: PnPHVAE(hvae, tau="auto", tune_rule=rule),
            ("tau",),
            TAU_GRID,
        ),
        "latent_map_tv": (
            lambda v: LatentMAPTV(latent_map, lambda_tv=v[0], beta=v[1]),
            lambda rule: LatentMAPTV(latent_map, lambda_tv="auto", beta="auto", tune_rule=rule),
            ("lambda_tv", "beta"),
            DEFAULT_TUNING_GRID,
        ),
    }


def _psnr(x_hat, physics, truth) -> float:
    return float(np.mean(image_metrics(from_physics_domain(x_hat, physics).real.clamp(0, 1), truth)["psnr"]))


def collect(args) -> dict:
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    hvae = pretrained.load(args.hvae).eval() if "pnp_hvae" in args.solvers else None
    latent_map = (
        _OnceLatentMAP(pretrained.load(LATENT_VAE).eval(), max_iter=100) if "latent_map_tv" in args.solvers else None
    )
    solvers = _solvers(hvae, latent_map)
    out_path = ROOT / args.out
    rows = []
    earlier = _earlier_oracles(args.oracle_from)
    for name in args.subjects:
        subject = load_subject(name, args.n_cal, args.n_eval, args.corpus)
        for task in [t for t in TASKS_OF[subject.modality] if t in args.tasks]:
            physics = build_physics(TASKS[task], tuple(subject.evaluation.shape[-2:]))
            y_cal = physics(to_physics_domain(subject.calibration, physics))
            y_eval = physics(to_physics_domain(subject.evaluation, physics))
            for solver in args.solvers:
                build, build_auto, params, grid = solvers[solver]
                param = ", ".join(params)
                start = time.perf_counter()
                build(grid[len(grid) // 2])(y_eval.clone(), physics)  # a fresh tensor: a full solve, timed
                one_solve = time.perf_counter() - start
                oracle = earlier.get((name, task, solver, tuple(grid)))
                if oracle is None:
                    oracle = {v: _psnr(build(v)(y_eval, physics), physics, subject.evaluation) for v in grid}
                best = max(oracle, key=oracle.get)
                if args.reference_tuned:
                    # the protocol of run_reserved.py: the grid value best on the reference slices' ground truth
                    cal = {v: _psnr(build(v)(y_cal, physics), physics, subject.calibration) for v in grid}
                    ref = max(cal, key=cal.get)
                    rows.append(
                        {
                            "subject": name,
                            "task": task,
                            "solver": solver,
                            "rule": "reference GT",
                            "requested_rule": "reference GT",
                            "param": param,
                            "auto_value": ref,
                            "oracle_value": best,
                            "auto_psnr": oracle[ref],
                            "oracle_psnr": oracle[best],
                            "gap_db": oracle[ref] - oracle[best],
                            "at_bound": _at_edge(ref, grid),
                            "oracle_at_grid_edge": _at_edge(best, grid),
                            "n_solves": len(grid),
                            "tuning_cost_x": float("nan"),
                            "oracle_table": {str(k): v for k, v in oracle.items()},
                            "curve": {"values": list(cal), "scores": list(cal.values())},
                        }
                    )
                    print(
                        f"{name:20s} {task:7s} {solver:9s} reference GT {ref:.4g} {oracle[ref]:6.2f} dB | "
                        f"oracle {best:.4g} {oracle[best]:6.2f} dB",
                        flush=True,
                    )
                for rule in args.rules:
                    start = time.perf_counter()
                    tuned = build_auto(rule).reconstruct(y_cal, physics)
                    tune_seconds = time.perf_counter() - start
                    choices = [tuned.diagnostics().choices[p] for p in params]
                    choice = _joint(choices)
                    psnr = _psnr(build(choice["value"])(y_eval, physics), physics, subject.evaluation)
                    cal_solve = one_solve * len(subject.calibration_idx) / len(subject.evaluation_idx)
                    row = {
                        "subject": name,
                        "task": task,
                        "solver": solver,
                        "rule": choice["rule"],
                        "requested_rule": rule,
                        "param": param,
                        "auto_value": choice["value"],
                        "oracle_value": best,
                        "auto_psnr": psnr,
                        "oracle_psnr": oracle[best],
                        "gap_db": psnr - oracle[best],
                        "at_bound": choice["at_bound"],
                        "oracle_at_grid_edge": _at_edge(best, grid),
                        "n_solves": choice["n_solves"],
                        "tuning_cost_x": tune_seconds / max(cal_solve, 1e-9),
                        "oracle_table": {str(k): v for k, v in oracle.items()},
                        "curve": choice["curve"],
                    }
                    rows.append(row)
                    print(
                        f"{name:20s} {task:7s} {solver:9s} {rule:12s} auto {_fmt(choice['value'])} "
                        f"{psnr:6.2f} dB | oracle {_fmt(best)} {oracle[best]:6.2f} dB | gap {row['gap_db']:+.2f} "
                        f"| cost {row['tuning_cost_x']:.1f}x",
                        flush=True,
                    )
                    write_json_atomic(out_path, {"rows": rows, "args": vars(args)})
    return {"rows": rows}


def _joint(choices: list[dict]) -> dict:
    """One record of several parameters' choices (value a tuple when there are several)."""
    if len(choices) == 1:
        return choices[0]
    return {
        "value": tuple(c["value"] for c in choices),
        "rule": "+".join(sorted({c["rule"] for c in choices})),
        "at_bound": any(c["at_bound"] for c in choices),
        "n_solves": sum(c["n_solves"] for c in choices),
        "curve": [c["curve"] for c in choices],
    }


def _at_edge(value, grid) -> bool:
    """Whether any coordinate of ``value`` is that coordinate's smallest or largest in ``grid``."""
    columns = list(zip(*grid)) if isinstance(value, tuple) else [grid]
    coords = value if isinstance(value, tuple) else (value,)
    return any(v in (min(c), max(c)) for v, c in zip(coords, columns))


def _fmt(value) -> str:
    return ", ".join(f"{v:.4g}" for v in value) if isinstance(value, (tuple, list)) else f"{value:.4g}"


def _earlier_oracles(paths) -> dict:
    """(subject, task, solver, grid) -> oracle table of earlier runs (``--oracle-from``)."""
    import json

    tables = {}
    for path in paths or []:
        for row in json.loads(Path(path).read_text())["rows"]:
            table = {ast.literal_eval(k): v for k, v in row["oracle_table"].items()}
            tables[(row["subject"], row["task"], row["solver"], tuple(table))] = table
    return tables


def rst(rows) -> str:
    header = [
        "subject",
        "task",
        "solver",
        "rule",
        "auto value",
        "auto PSNR",
        "oracle value",
        "oracle PSNR",
        "gap (dB)",
        "at bound",
        "cost (x one solve)",
    ]
    body = [
        [
            r["subject"],
            r["task"],
            r["solver"],
            r["rule"] + (" (default)" if r["requested_rule"] == "auto" else ""),
            _fmt(r["auto_value"]),
            f"{r['auto_psnr']:.2f}",
            _fmt(r["oracle_value"]),
            f"{r['oracle_psnr']:.2f}",
            f"{r['gap_db']:+.2f}",
            "yes" if r["at_bound"] else "no",
            "-" if r["tuning_cost_x"] != r["tuning_cost_x"] else f"{r['tuning_cost_x']:.1f}",
        ]
        for r in rows
    ]
    return common.rst_table(header, body)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--solvers", nargs="+", default=["tv", "pnp_hvae"], choices=SOLVERS)
    parser.add_argument("--rules", nargs="+", default=["auto"], choices=["auto", "discrepancy", "sure", "splitting"])
    parser.add_argument(
        "--reference-tuned",
        action="store_true",
        help="also the value best on the reference slices' ground truth (run_reserved.py's protocol)",
    )
    parser.add_argument(
        "--hvae",
        default="hvae_mri64",
        help="shipped HVAE name or a save_pretrained folder (to measure a candidate release)",
    )
    parser.add_argument(
        "--oracle-from",
        nargs="+",
        metavar="JSON",
        help="reuse the oracle grids of earlier runs with the same model, slices and grid (saves the grid solves)",
    )
    parser.add_argument("--n-cal", type=int, default=3)
    parser.add_argument("--n-eval", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--out", default="results/benchmarks/autotune.json")
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="do not run: merge the rows of earlier runs (into --out)"
    )


def run(args: argparse.Namespace) -> int:
    if args.combine:
        import json

        record = {
            "rows": [row for path in args.combine for row in json.loads(Path(path).read_text())["rows"]],
            "combined": args.combine,
        }
        write_json_atomic(ROOT / args.out, record)
    else:
        record = collect(args)
    print(rst(record["rows"]))
    return 0
