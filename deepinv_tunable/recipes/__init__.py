"""Recipes: schema, runner and the command-line entry point."""

from .files import load_recipe
from .runner import RunResult, run_recipe
from .schema import Recipe, RecipeError, parse_recipe

__all__ = ["Recipe", "RecipeError", "RunResult", "load_recipe", "parse_recipe", "run_recipe"]
