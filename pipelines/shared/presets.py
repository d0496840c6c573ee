"""YAML presets for stage configs: ``configs/<stage>/<model-size>_<method>_<device>.yaml``.

A preset only lists what differs from the config model's defaults; the model validates it and
every config model forbids unknown fields, so a misspelt or missing field fails fast with the
field's dotted path.
"""

from __future__ import annotations

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
    return config


def config_or_preset(model: type[Model], stage: str, config: Model | None, preset: str | None):
    """A flow's config: ``config`` as given, else the ``preset`` named (what a deployment
    names), else the model's defaults. Both at once is ambiguous and refused."""
    if config is not None and preset:
        raise ValueError(f"{stage}: give a config or a preset ({preset!r}), not both")
    if config is not None:
        return config
    return load_preset(model, stage, preset) if preset else model()
