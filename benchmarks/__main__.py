"""One command line for every benchmark study: ``python -m benchmarks STUDY [study options]``.

``python -m benchmarks --help`` lists the studies, ``python -m benchmarks STUDY --help`` the
options of one. Each study module has ``add_arguments(parser)`` and ``run(args) -> int``; only
the chosen module is imported (some import the learned priors and take seconds).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

#: study name -> module of this package (the module names are the scripts' historical file names)
STUDIES: dict[str, str] = {
    "autoencode": "run_autoencode",
    "autotune": "run_autotune",
    "baselines": "run_baselines",
    "capacity": "run_capacity",
    "dpir_sigma": "run_dpir_sigma",
    "flash": "run_flash",
    "flash_nfe": "run_flash_nfe",
    "hvae_tau_map": "run_hvae_tau_map",
    "inference_precision": "inference_precision",
    "k_study": "run_k_study",
    "ldm": "run_ldm",
    "pnp_hvae": "run_pnp_hvae",
    "pnp_hvae_knobs": "run_pnp_hvae_knobs",
    "reserved": "run_reserved",
    "slab_tv": "run_slab_tv",
    "table": "run",
    "tables": "collate",
    "tau_holdout": "run_tau_holdout",
    "training_throughput": "training_throughput",
    "trials": "run_trials",
    "tunable": "run_tunable",
    "tune_cost": "run_tune_cost",
    "uncertainty": "run_uncertainty",
    "volume": "run_volume",
    "volume_speed": "run_volume_speed",
}

PROG = "python -m benchmarks"


def _docstring(module: str) -> str:
    """A study module's docstring, read from its source without importing it."""
    source = (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    return ast.get_docstring(ast.parse(source)) or ""


def build_parser(study: str | None = None) -> argparse.ArgumentParser:
    """The parser of every study; only ``study``'s module is imported, to add its options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=f"Run one benchmark study ({PROG} STUDY --help lists its options)."
    )
    subparsers = parser.add_subparsers(dest="study", metavar="STUDY", title="studies", required=True)
    for name, module in STUDIES.items():
        doc = _docstring(module)
        sub = subparsers.add_parser(name, help=doc.split("\n")[0], description=doc.split("\n\n")[0])
        if name == study:
            importlib.import_module(f"{__package__}.{module}").add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the study is the first word that is not an option (the top-level parser has only --help)
    study = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(study).parse_args(argv)
    name = args.study
    del args.study  # the study sees the same namespace as its own parser gave it
    return importlib.import_module(f"{__package__}.{STUDIES[name]}").run(args)


if __name__ == "__main__":
    sys.exit(main())
