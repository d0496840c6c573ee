"""The MLflow model registry for HF model dirs: register, alias, fetch.

A model version's files are the HF dir (config, safetensors, tokenizer) logged as the
artifacts of the run that made it, under ``model/``; the version's source points there. Any
stage loads a version by URI — ``models:/genai-base@champion``, ``models:/genai-base/3`` — or
takes a plain HF model path: ``model_dir`` turns either into a local directory.
"""

from __future__ import annotations

from pathlib import Path

from infra import tracking

CHAMPION = "champion"  # the alias every later stage loads by default
ARTIFACT_PATH = "model"


def register_model_dir(
    name: str, model_dir: Path | str, run_id: str, tags: dict | None = None, description: str = ""
) -> str:
    """Log ``model_dir`` into the run and register it as a new version of ``name``; returns
    the version number (as a string, as MLflow spells it)."""
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    client.log_artifacts(run_id, str(model_dir), ARTIFACT_PATH)
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        description=description,
        tags={k: str(v) for k, v in (tags or {}).items()},
    )
    return str(version.version)


def alias_version(name: str, alias: str = CHAMPION):
    """The ModelVersion holding ``alias``, or None when no version holds it (or no model)."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def version_with_tags(name: str, tags: dict[str, str]):
    """The newest version of ``name`` carrying every tag in ``tags``, or None."""
    from mlflow.exceptions import MlflowException

    query = " and ".join([f"name='{name}'"] + [f"tags.`{k}`='{v}'" for k, v in tags.items()])
    try:
        found = tracking.client().search_model_versions(query)
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version), default=None)


def set_alias(name: str, version: str, alias: str = CHAMPION) -> None:
    tracking.client().set_registered_model_alias(name, alias, version)


def model_dir(uri_or_path: str | Path, dst: Path | str | None = None) -> Path:
    """A local HF model dir for a ``models:/…`` URI (downloaded into ``dst`` or a workspace
    cache) or an existing local path. Never reaches outside the tracking store."""
    text = str(uri_or_path)
    if not text.startswith("models:/"):
        path = Path(text)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not an HF model dir (no config.json), nor a models:/ URI"
            )
        return path
    import mlflow.artifacts

    from infra.settings import load_settings

    version = resolve(text)
    dst = (
        Path(dst)
        if dst
        else (load_settings().home / "registry" / version.name / f"v{version.version}")
    )
    if not (dst / ARTIFACT_PATH / "config.json").is_file():
        mlflow.artifacts.download_artifacts(
            artifact_uri=version.source,
            dst_path=str(dst),
            tracking_uri=tracking.client().tracking_uri,
        )
    return dst / ARTIFACT_PATH


def resolve(uri: str):
    """The ModelVersion a ``models:/name@alias`` or ``models:/name/version`` URI names."""
    rest = uri.removeprefix("models:/")
    client = tracking.client()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = alias_version(name, alias)
        if version is None:
            raise LookupError(
                f"{uri}: no version of {name!r} holds alias {alias!r} in "
                f"{client.tracking_uri}; run the flow that registers it first"
            )
        return version
    name, _, number = rest.partition("/")
    if not number.isdigit():
        raise ValueError(f"{uri} is not models:/<name>@<alias> or models:/<name>/<version>")
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, number)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    raise LookupError(f"{uri}: {name!r} has no version {number}; {_versions_of(name)}") from None


def _versions_of(name: str) -> str:
    """What a user could have meant: the model's versions and aliases, or that it has none."""
    from mlflow.exceptions import MlflowException

    try:
        found = tracking.client().search_model_versions(f"name='{name}'")
    except MlflowException:
        found = []
    if not found:
        return f"no model named {name!r} is registered; run the flow that registers it first"
    numbers = sorted(int(v.version) for v in found)
    aliases = sorted({a for v in found for a in (v.aliases or [])})
    listed = (
        f"versions {numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else f"version {numbers[0]}"
    )
    return f"it has {listed}" + (f", aliases {', '.join(aliases)}" if aliases else "")
