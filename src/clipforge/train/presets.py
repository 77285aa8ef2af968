"""Named training presets: ``recipes/<name>.json`` files holding TrainConfig fields.

A preset is applied under the fields a user gives: ``apply_recipe({"recipe": "small-data", "lr": 1e-3})``
returns the preset's fields updated with the given ones (so an explicit value always wins), and
keeps ``recipe`` to record where the others came from.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..config import ConfigError


def _folder() -> Any:
    return resources.files("clipforge.train").joinpath("recipes")


@cache
def recipe_names() -> tuple[str, ...]:
    """The built-in presets, sorted."""
    return tuple(
        sorted(p.name[: -len(".json")] for p in _folder().iterdir() if p.name.endswith(".json"))
    )


@cache
def _load(name: str) -> dict[str, Any]:
    if name not in recipe_names():
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")
    text = _folder().joinpath(f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise ConfigError(f"recipe {name}: expected an object with a 'fields' object")
    return data


def recipe_fields(name: str) -> dict[str, Any]:
    """The TrainConfig fields preset ``name`` sets."""
    return dict(_load(name)["fields"])


def recipe_description(name: str) -> str:
    return str(_load(name).get("description", ""))


def apply_recipe(data: dict[str, Any], *, where: str = "train config") -> dict[str, Any]:
    """``data`` over the fields of the recipe it names (``data["recipe"]``); unchanged without one."""
    name = data.get("recipe") if isinstance(data, dict) else None
    if name is None:
        return data
    if not isinstance(name, str):
        raise ConfigError(f"{where}: recipe must be a name, got {name!r}")
    return {**recipe_fields(name), **data}
