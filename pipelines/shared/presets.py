"""YAML presets for stage configs: ``configs/<stage>/<model-size>_<method>_<device>.yaml``.

A preset only lists what differs from the config model's defaults; the model validates it, so
a misspelt or missing field fails fast with the field's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Model = TypeVar("Model", bound=BaseModel)


def preset_path(stage: str, name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = CONFIGS / stage / f"{name}.yaml"
    if not candidate.exists():
        known = sorted(p.stem for p in (CONFIGS / stage).glob("*.yaml"))
        raise FileNotFoundError(f"no preset {name!r} for stage {stage!r}; known: {known}")
    return candidate


def load_preset(model: type[Model], stage: str, name: str) -> Model:
    path = preset_path(stage, name)
    data = yaml.safe_load(path.read_text()) or {}
    try:
        config = model.model_validate(data)
    except Exception as err:
        raise ValueError(f"preset {path} is not a valid {model.__name__}: {err}") from err
    unknown = unknown_fields(config, data)
    if unknown:  # config classes that allow extra fields would drop these silently
        raise ValueError(
            f"preset {path}: no such field(s) in {model.__name__}: {', '.join(unknown)}"
        )
    return config


def unknown_fields(config: BaseModel, data: Mapping, where: str = "") -> list[str]:
    """Dotted paths of the keys in ``data`` that ``config``, at any depth, has no field for."""
    unknown = []
    for key, value in data.items():
        if key not in type(config).model_fields:
            unknown.append(f"{where}{key}")
        elif isinstance(value, Mapping) and isinstance(child := getattr(config, key), BaseModel):
            unknown += unknown_fields(child, value, f"{where}{key}.")
    return unknown
