"""Recipes: the YAML description of a run, its pydantic models, loading and whole-recipe validation."""

from dataflywheel.recipe.models import InputSpec, ModelSpec, OutputSpec, Recipe, StepSpec
from dataflywheel.recipe.validate import load_recipe, validate_recipe

__all__ = ["InputSpec", "ModelSpec", "OutputSpec", "Recipe", "StepSpec", "load_recipe", "validate_recipe"]
