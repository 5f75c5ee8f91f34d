"""Recipes: schema, runner and the command-line entry point."""

from .runner import RunResult, run_recipe
from .schema import Recipe, RecipeError, load_recipe, parse_recipe

__all__ = ["Recipe", "RecipeError", "RunResult", "load_recipe", "parse_recipe", "run_recipe"]
