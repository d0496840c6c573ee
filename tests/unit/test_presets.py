"""Every shipped preset validates against its stage's config (a misplaced or misspelt field
fails here, not in a user's scheduled run)."""

from pathlib import Path

import pytest

from pipelines.shared.presets import load_preset

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def _flows() -> dict:
    """Every flow of flows/*.py by its function name (the name of its configs/ folder)."""
    import importlib

    from prefect import Flow

    found = {}
    for path in sorted((REPO / "flows").glob("*.py")):
        module = importlib.import_module(f"flows.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, Flow) and value.fn.__module__ == module.__name__:
                found[value.fn.__name__] = value
    return found


def _config_classes() -> dict:
    """Each flow's config model: the type of its ``config`` parameter."""
    import typing

    classes = {}
    for name, flow in _flows().items():
        hint = typing.get_type_hints(flow.fn)["config"]
        classes[name] = next(a for a in typing.get_args(hint) if a is not type(None))
    return classes


PRESETS = sorted((p.parent.name, p.stem) for p in CONFIGS.glob("*/*.yaml"))


def test_every_stage_folder_has_a_config_class():
    assert {stage for stage, _ in PRESETS} <= set(_config_classes())


@pytest.mark.parametrize("stage,name", PRESETS, ids=[f"{s}/{n}" for s, n in PRESETS])
def test_preset_validates(stage, name):
    config = load_preset(_config_classes()[stage], stage, name)
    assert config.model_dump()  # validated, and every field serialises


def test_a_misspelt_nested_field_names_its_path(tmp_path):
    from flows.review_summaries import ReviewSummariesConfig

    preset = tmp_path / "typo.yaml"
    preset.write_text("summary:\n  window: week\n  context_token: 256\n")  # context_tokens
    with pytest.raises(
        ValueError,
        match=r"not a valid ReviewSummariesConfig: .*\nsummary\.context_token\n"
        r"  Extra inputs are not permitted",
    ):
        load_preset(ReviewSummariesConfig, "review_summaries", str(preset))


def test_every_flow_takes_a_config_or_a_preset_and_refuses_both():
    import inspect

    flows = _flows()
    assert len(flows) >= 11
    for name, flow in flows.items():
        parameters = inspect.signature(flow.fn).parameters
        assert {"config", "preset"} <= set(parameters), name
        assert parameters["config"].default is None and parameters["preset"].default is None
    from pipelines.shared.presets import config_or_preset

    with pytest.raises(ValueError, match="give a config or a preset"):
        config_or_preset(_config_classes()["pretrain"], "pretrain", object(), "tiny_cpu")


def test_every_deployment_names_a_preset_its_flow_loads():
    import yaml

    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    classes = _config_classes()
    assert {d["entrypoint"].split(":")[1] for d in deployments} == set(classes)
    for deployment in deployments:
        flow_name = deployment["entrypoint"].split(":")[1]
        preset = deployment.get("parameters", {}).get("preset")
        assert preset, f"{deployment['name']} ({flow_name}) names no preset"
        assert load_preset(classes[flow_name], flow_name, preset).model_dump()


def test_every_config_model_forbids_unknown_fields():
    import importlib
    import inspect
    import pkgutil

    from pydantic import BaseModel

    lax = []
    for package in ("pipelines", "infra", "tasks", "flows"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseModel)
                    and value.__module__ == module.__name__
                    and not info.name.startswith("infra.serving")  # OpenAI request schemas
                    and value.model_config.get("extra") != "forbid"
                ):
                    lax.append(f"{info.name}.{name}")
    assert lax == []
