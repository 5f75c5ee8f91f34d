"""Recipe files: the shipped recipe library, reading a recipe's YAML and loading a validated
:class:`~deepinv_tunable.recipes.Recipe` from a file (the schema itself is
``deepinv_tunable/recipes/schema.py``, described key by key in :doc:`/recipes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .schema import Recipe, RecipeError, parse_recipe

#: the recipes shipped with the package (the repository's ``recipes/``, linked into the package)
RECIPE_LIBRARY = Path(__file__).parent / "library"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``deepinv-tunable run NAME``)."""
    return sorted(p.stem for p in RECIPE_LIBRARY.glob("*.yaml"))


def resolve_recipe(path: str | Path, what: str = "recipe") -> Path:
    """A recipe file: ``path`` itself when it exists, else the shipped recipe of that name
    (``demo_learned_prior`` or ``demo_learned_prior.yaml``), so a recipe runs by name from an
    installed wheel.

    >>> resolve_recipe("demo_mri_brain").name
    'demo_mri_brain.yaml'
    """
    given = Path(path)
    if given.is_file():
        return given
    shipped = RECIPE_LIBRARY / (given.name if given.suffix in (".yaml", ".yml") else f"{given.name}.yaml")
    if given.parent == Path(".") or given.parent.name == "recipes":
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(
        f"{what} file not found: '{path}' (neither a file nor one of the shipped recipes: {', '.join(shipped_recipes())})"
    )


def read_recipe_file(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """The YAML mapping of a recipe file (reconstruction or training): a missing file raises
    ``FileNotFoundError``, bad YAML or a document that is not a mapping one ``RecipeError``.
    An empty file is an empty mapping (the schema then names what is missing)."""
    path = resolve_recipe(path, what)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{what} '{path}' is not valid YAML: {err}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{what} '{path}' must be a mapping of keys to values, got a {type(raw).__name__}")
    return raw


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    r"""Read, override and validate a recipe file.

    :param str path: YAML file.
    :param dict overrides: dotted keys to set before validation, e.g.
        ``{"data.input": "brain.nii.gz", "output.dir": "out"}``.
    :raises FileNotFoundError: if ``path`` does not exist.
    :raises RecipeError: for YAML syntax errors and schema violations.
    """
    raw = read_recipe_file(path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_recipe(raw, source=f"'{path}'")
