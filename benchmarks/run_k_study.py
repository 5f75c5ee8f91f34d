r"""Where the best latent size k moves with noise and measurements: k-sweeps of the shipped
tunable priors on a reserved subject, beside the linear closed form fitted to each model.

For every model and case: :class:`~deepinv_tunable.solvers.LatentMAP` at each k of the grid
(the oracle k is chosen with the ground truth and labelled so), the gain of the oracle k over the
full latent, the k chosen from the measurements alone by :func:`~deepinv_tunable.tuning.latent_size.select_k`
(splitting, discrepancy and SURE), and the closed form's :math:`k^\star`
(:func:`~deepinv_tunable.tuning.spectrum.optimal_k_linear` on the model's
:func:`~deepinv_tunable.tuning.spectrum.generator_spectrum`, fitted on encoded slices of a *training*
subject, in truncation order, with :math:`\lambda = \gamma \sigma^2 \overline{\varsigma^2}`).

Cases (``--axes``):

* ``noise``: denoising at :data:`SIGMAS`; the closed form is exact for a linear generator here.
* ``mri``: single-coil Cartesian MRI at :data:`ACCELERATIONS`, noise 0.01; the closed form with the
  effective noise :math:`\sigma^2 a` (a latent direction's energy is seen in a fraction
  :math:`1/a` of k-space on average): an approximation, stated as such.
* ``ct``: parallel-beam CT at :data:`VIEWS` on the CT subject; measured only (no closed form).

With ``--ldm UNET`` each model of ``--models`` is a tunable VAE and the solver is
:class:`~deepinv_tunable.solvers.TunableLDMSolver` (that UNet, ``--n-steps`` DDIM steps, data
consistency ``--consistency``, default the solver's own scheduled local MAP) instead of LatentMAP; every ``k`` of a
case starts from the same seeded noise. The spectrum and the closed form are the VAE's (the LDM
samples in its latent). Splitting costs ``n_splits`` further solves per ``k``: ``--rules
discrepancy closed_form`` skips it.

Writes ``--out`` (JSON, atomically after every case) and, with ``--figure``, heat maps of the
oracle k (as a fraction of K) and of its gain over full k, models by cases.

Usage::

    python -m benchmarks k_study --models tunable_vae_mri128 --axes noise mri      # ~25 min, 1 thread
    python -m benchmarks k_study --models ordered_flow_mri128 --gamma 0 --axes noise mri ct
    python -m benchmarks k_study --models tunable_vae_mri128 --ldm tunable_ldm_mri128 --n-steps 20 \
        --n-eval 2 --rules discrepancy closed_form --axes noise mri --out ldm.json
    python -m benchmarks k_study --combine a.json b.json --out benchmarks/results/k_study_results.json --figure docs/figures/k_study.png
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepinv_tunable import pretrained
from deepinv_tunable.diffusion.consistency import CONSISTENCY_STEPS, consistency_step
from deepinv_tunable.physics import build_physics, to_physics_domain
from deepinv_tunable.solvers import LatentMAP, TunableLDMSolver
from deepinv_tunable.tuning import (
    default_k_rule,
    effective_noise_sigma,
    generator_spectrum,
    nearest_k,
    optimal_k_linear,
    save_spectrum,
    select_k,
)
from deepinv_tunable.utils.atomic import save_figure, write_json_atomic

from .reserved_data import load_subject
from .run_autotune import _psnr

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (0.005, 0.01, 0.02, 0.05, 0.1)
ACCELERATIONS = (2, 4, 8, 16)
VIEWS = (30, 60, 120)
#: the k grid, as fractions of the model's K
K_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1)
#: a training subject whose encoded slices fit each model's spectrum (never a reserved one)
SPECTRUM_SUBJECT = "pyradiomics_brain1"


def cases(axes: list[str]) -> list[dict[str, Any]]:
    out = []
    if "noise" in axes:
        out += [{"axis": "noise", "level": s, "spec": {"kind": "denoising", "noise_sigma": s}} for s in SIGMAS]
    if "mri" in axes:
        out += [
            {"axis": "mri", "level": a, "spec": {"kind": "mri", "acceleration": a, "noise_sigma": 0.01}}
            for a in ACCELERATIONS
        ]
    if "ct" in axes:
        out += [{"axis": "ct", "level": v, "spec": {"kind": "ct", "n_views": v, "noise_sigma": 0.01}} for v in VIEWS]
    return out


def predicted_k(spectrum: torch.Tensor, physics, sigma: float, gamma: float, spread_sq: float) -> int | None:
    r"""The closed form's k* for a case with the latent weight of the linear MAP,
    :math:`\lambda = \gamma\sigma^2\overline{\varsigma^2}` (``None`` where it has no closed form)."""
    try:
        sigma = effective_noise_sigma(physics, sigma)
    except ValueError:
        return None
    return optimal_k_linear(spectrum, sigma, gamma * sigma**2 * spread_sq, truncation_order=True)


def closed_form_choice(row: dict, gamma0_k: int | None = None) -> dict:
    """k proposed before any sweep (:func:`~deepinv_tunable.tuning.spectrum.closed_form_k`: the
    gamma-0 closed form snapped to the nearest grid k in log k) and its PSNR gap to the oracle k.
    Rows of this version carry it (``auto_closed_form``); for earlier rows it is recomputed from
    the gamma-0 closed form's k* of the same model and case (``gamma0_k``, the row's own
    ``predicted_k`` when not given: the proposal does not depend on the solver's gamma)."""
    if "auto_closed_form" in row:
        chosen = row["auto_closed_form"]
        return {"closed_form_grid_k": chosen and chosen["k"][0], "closed_form_gap_db": chosen and chosen["gap_db"]}
    k_star = row["predicted_k"] if gamma0_k is None else gamma0_k
    if k_star is None:
        return {"closed_form_grid_k": None, "closed_form_gap_db": None}
    psnr = {int(k): v for k, v in row["psnr_vs_k"].items()}
    k = nearest_k(k_star, list(psnr))
    return {"closed_form_grid_k": k, "closed_form_gap_db": psnr[k] - psnr[row["oracle_k"]]}


RULES = ("splitting", "discrepancy", "sure", "closed_form")


def build_solver(model, args):
    """LatentMAP on ``model``, or with ``--ldm`` the tunable latent diffusion sampler on it; the
    second value is what each sweep's ``reconstruct`` call also gets (a seed: every ``k`` of a
    case starts from the same noise)."""
    if args.ldm:
        unet, consistency = pretrained.load(args.ldm), consistency_step(args.consistency)
        return TunableLDMSolver(model, unet, max_iter=args.n_steps, consistency=consistency), {"seed": args.seed}
    return LatentMAP(model, gamma=args.gamma, max_iter=args.n_steps), {}


def model_label(name: str, args) -> str:
    return f"{args.ldm} ({args.consistency}) on {name}" if args.ldm else name


def study(args) -> dict:
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)
    record: dict[str, Any] = {"args": vars(args), "models": {}, "rows": []}
    subjects = {
        "mr": load_subject(args.subject, 0, args.n_eval, args.corpus).evaluation,
        "ct": load_subject(args.ct_subject, 0, args.n_eval, args.corpus).evaluation if "ct" in args.axes else None,
    }
    for name in args.models:
        model = pretrained.load(name).eval()
        label = model_label(name, args)
        K = int(model.latent_dim)
        ks = sorted({max(1, round(f * K)) for f in K_FRACTIONS})
        began = time.perf_counter()
        with torch.no_grad():
            latents = model.encode_mean(load_subject(SPECTRUM_SUBJECT, 0, args.spectrum_slices, args.corpus).evaluation)
        spectrum = generator_spectrum(model, latents, stride=max(1, K // 2048))
        if args.save_spectrum:
            save_spectrum(
                pretrained.path(name),
                spectrum,
                subject=SPECTRUM_SUBJECT,
                slices=args.spectrum_slices,
                stride=max(1, K // 2048),
                recipe=f"python -m benchmarks k_study --models {name} --axes --save-spectrum",
            )
        spread_sq = float(latents.flatten(1).var(0).mean())
        record["models"][label] = {
            "K": K,
            "ks": ks,
            "spectrum_seconds": time.perf_counter() - began,
            "spectrum_block_rms": [float(v) for v in spectrum.reshape(16, -1).pow(2).mean(1).sqrt()],
            "latent_variance_mean": spread_sq,
        }
        solver, call = build_solver(model, args)
        for case in cases(args.axes or []):
            truth = subjects["ct" if case["axis"] == "ct" else "mr"]
            physics = build_physics(case["spec"], tuple(truth.shape[-2:]))
            y = physics(to_physics_domain(truth, physics), rng=torch.Generator().manual_seed(args.seed))
            fits = {k: solver.reconstruct(y, physics, k=k, **call) for k in ks}
            per_slice = {
                k: [_psnr(fit.x[b : b + 1], physics, truth[b : b + 1]) for b in range(len(truth))]
                for k, fit in fits.items()
            }
            psnr = {k: float(np.mean(v)) for k, v in per_slice.items()}
            oracle = max(ks, key=lambda k: (psnr[k], -k))
            row = {
                "model": label,
                "axis": case["axis"],
                "level": case["level"],
                "psnr_vs_k": {str(k): v for k, v in psnr.items()},
                "psnr_vs_k_per_slice": {str(k): v for k, v in per_slice.items()},
                "oracle_k": oracle,
                "oracle_gain_db": psnr[oracle] - psnr[K],
                "interior": oracle < K,
                # the sampler has no latent weight: its closed form is the gamma-0 one
                "predicted_k": predicted_k(
                    spectrum, physics, case["spec"]["noise_sigma"], 0.0 if args.ldm else args.gamma, spread_sq
                ),
            }
            for rule in args.rules:
                if rule == "closed_form" and row["predicted_k"] is None:
                    row["auto_closed_form"] = None
                    continue
                chosen = select_k(
                    solver, y, physics, ks, rule=rule, seed=0, fits=fits, spectrum=spectrum, solve_kwargs=call
                )
                row[f"auto_{rule}"] = {
                    "k": chosen.value.tolist(),
                    "psnr": _psnr(chosen.reconstruction.x, physics, truth),
                }
                row[f"auto_{rule}"]["gap_db"] = row[f"auto_{rule}"]["psnr"] - psnr[oracle]
                if chosen.split_scores is not None:  # every hold-out's score: other choice rules, offline
                    row[f"auto_{rule}"]["split_scores"] = {str(k): v.tolist() for k, v in chosen.split_scores.items()}
                elif chosen.table:  # per-slice residuals / risk estimates, for the same reason
                    row[f"auto_{rule}"]["scores"] = {str(k): v.tolist() for k, v in chosen.table.items()}
            row["auto_default_rule"] = default_k_rule(physics)
            row.update(closed_form_choice(row))
            record["rows"].append(row)
            write_json_atomic(ROOT / args.out, record)
            print(
                f"{label} {case['axis']} {case['level']}: "
                + " ".join(f"{k}:{psnr[k]:.2f}" for k in ks)
                + f" | oracle {oracle} ({row['oracle_gain_db']:+.2f} dB over K) | closed form {row['predicted_k']}"
                + "".join(
                    f" | {rule} {row[f'auto_{rule}']['gap_db']:+.2f}" for rule in args.rules if row.get(f"auto_{rule}")
                )
                + (f" | closed form on the grid {row['closed_form_gap_db']:+.2f}" if row["predicted_k"] else ""),
                flush=True,
            )
    record["spearman"] = spearman_by_axis(record["rows"])
    write_json_atomic(ROOT / args.out, record)
    return record


def combine(paths: list[str]) -> dict:
    """One record from several runs (e.g. one per model or prior weight); a model name appearing
    in two runs keeps both, suffixed with its run's gamma. An earlier combined record (one with
    ``runs``) is merged as it is."""
    import json

    out: dict[str, Any] = {"runs": [], "models": {}, "rows": []}
    records = [json.loads(Path(path).read_text()) for path in paths]
    gamma0_k = {
        (row["model"], row["axis"], row["level"]): row["predicted_k"]
        for record in records
        if "args" in record and record["args"]["gamma"] == 0
        for row in record["rows"]
    }
    for record in records:
        if "runs" in record:  # an earlier combined file (e.g. the docs' one): its labels are final
            out["runs"] += record["runs"]
            out["models"].update(record["models"])
            out["rows"] += record["rows"]
            continue
        gamma = record["args"]["gamma"]
        out["runs"].append(record["args"])
        for name, info in record["models"].items():
            # the LDM sampler has no prior weight
            label = name if record["args"].get("ldm") else f"{name} (gamma {gamma:g})"
            out["models"][label] = {**info, "gamma": gamma}
            out["rows"] += [
                {**row, **closed_form_choice(row, gamma0_k.get((name, row["axis"], row["level"]))), "model": label}
                for row in record["rows"]
                if row["model"] == name
            ]
    out["spearman"] = spearman_by_axis(out["rows"])
    return out


def spearman_by_axis(rows: list[dict]) -> dict[str, float | None]:
    """Spearman correlation of the closed form's k* with the oracle k, per (model, axis)."""
    from scipy.stats import spearmanr

    out = {}
    for key in sorted({(r["model"], r["axis"]) for r in rows if r["predicted_k"] is not None}):
        sel = [r for r in rows if (r["model"], r["axis"]) == key]
        pred, meas = [r["predicted_k"] for r in sel], [r["oracle_k"] for r in sel]
        both_vary = len(set(pred)) > 1 and len(set(meas)) > 1
        out[" / ".join(map(str, key))] = float(spearmanr(pred, meas).statistic) if both_vary else None
    return out


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    models = list(record["models"])
    columns = sorted({(r["axis"], r["level"]) for r in rows}, key=lambda c: (["noise", "mri", "ct"].index(c[0]), c[1]))
    frac = np.full((len(models), len(columns)), np.nan)
    gain, predicted = np.full_like(frac, np.nan), np.full_like(frac, np.nan)
    for r in rows:
        i, j = models.index(r["model"]), columns.index((r["axis"], r["level"]))
        K = record["models"][r["model"]]["K"]
        frac[i, j] = r["oracle_k"] / K
        gain[i, j] = r["oracle_gain_db"]
        if r["predicted_k"] is not None:
            predicted[i, j] = r["predicted_k"] / K
    labels = [f"{'σ' if a == 'noise' else ('R' if a == 'mri' else 'views')}={v}" for a, v in columns]
    fig, axes = plt.subplots(3, 1, figsize=(1.0 + 0.8 * len(columns), 2.4 + 2.1 * len(models)), squeeze=False)
    for ax, data, title, fmt in (
        (axes[0, 0], frac, "oracle k / K (measured, ground truth)", "{:.2f}"),
        (axes[1, 0], gain, "oracle k over full k (dB)", "{:+.2f}"),
        (axes[2, 0], predicted, "closed form k* / K (model spectrum)", "{:.2f}"),
    ):
        im = ax.imshow(data, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(columns)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(models)), [Path(m).name for m in models], fontsize=7)
        ax.set_title(title, fontsize=9)
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["tunable_vae_mri128", "tunable_vae_f4_mri128"])
    parser.add_argument(
        "--axes", nargs="*", default=["noise", "mri"], choices=["noise", "mri", "ct"], help="none: spectrum only"
    )
    parser.add_argument("--subject", default="itk_t1", help="reserved MR subject")
    parser.add_argument("--ct-subject", default="pyradiomics_lung2", help="reserved CT subject")
    parser.add_argument("--n-eval", type=int, default=3)
    parser.add_argument("--n-steps", type=int, default=100)
    parser.add_argument("--gamma", type=float, default=1.0, help="LatentMAP's prior weight")
    parser.add_argument(
        "--ldm", default=None, help="a tunable LDM UNet: sweep TunableLDMSolver on each VAE of --models"
    )
    parser.add_argument("--consistency", default="local_map", choices=list(CONSISTENCY_STEPS), help="with --ldm")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES, help="GT-free k rules to score")
    parser.add_argument("--spectrum-slices", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--corpus", default=str(ROOT / "corpus"))
    parser.add_argument("--out", default="results/benchmarks/k_study.json")
    parser.add_argument("--figure", default=None, help="heat maps here (e.g. docs/figures/k_study.png)")
    parser.add_argument("--combine", nargs="+", default=None, help="merge these runs' JSON into --out (no solving)")
    parser.add_argument(
        "--save-spectrum",
        action="store_true",
        help="ship each model's fitted spectrum in its pretrained folder (for select_k's 'closed_form' rule)",
    )


def run(args: argparse.Namespace) -> int:
    record = combine(args.combine) if args.combine else study(args)
    if args.combine:
        write_json_atomic(ROOT / args.out, record)
    print("Spearman(closed-form k*, oracle k):", record["spearman"])
    if args.figure:
        plot(record, ROOT / args.figure)
    return 0
