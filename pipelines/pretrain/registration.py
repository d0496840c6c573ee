"""Registering a pretrained base: a new version of the registered model, and ``champion``
moved to it only when its bits per byte on the pinned validation documents beat the current
champion's, both scored on the same decoded text (each with its own tokenizer)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from infra import registry
from pipelines.pretrain import lm_metrics
from pipelines.shared.promotion import register_challenger


def register_base_model(
    trained: dict, shards: dict, name: str, logger, open_run: Callable[[], AbstractContextManager]
) -> dict:
    """The registered version's manifest; ``open_run`` opens the MLflow step run that the
    registration is logged in. The same finished run exported again is not registered twice."""
    existing = registry.version_with_tags(
        name, {"run_dir": trained["run_dir"], "steps": str(trained["steps"])}
    )
    if existing is not None:  # the same finished run, exported again (e.g. after a code change)
        return {
            "name": name,
            "version": str(existing.version),
            "uri": f"models:/{name}/{existing.version}",
            "champion": registry.CHAMPION in (existing.aliases or []),
            "val_bpb": float(existing.tags["val_bpb"]),
            "champion_val_bpb": None,
            "previous_champion": None,
            "model_dir": trained["final_model_dir"],
        }
    texts = lm_metrics.validation_texts(shards["dir"])
    window = int(trained["seq_len"])
    bpb = lm_metrics.bits_per_byte(trained["final_model_dir"], texts, window=window)
    champion = registry.alias_version(name)
    champion_bpb = None
    if champion is not None:
        champion_bpb = lm_metrics.bits_per_byte(
            registry.model_dir(f"models:/{name}/{champion.version}"), texts, window=window
        )
    tags = {
        "val_bpb": f"{bpb:.6f}",
        "validation_shards": shards["cache_key"],
        "run_dir": trained["run_dir"],
        "steps": trained["steps"],
        "tokens": trained["tokens"],
    }
    with open_run() as run:
        version, decision = register_challenger(
            name,
            trained["final_model_dir"],
            trained["mlflow_run_id"],
            {"val_bpb": bpb},
            None if champion_bpb is None else {"val_bpb": champion_bpb},
            lm_metrics.CHAMPION_RULE,
            tags=tags,
            description="Base LLM pretrained by the pretrain flow",
        )
        promote = decision.promote
        run.log_metrics(
            {
                "val_bpb": bpb,
                **({"champion_val_bpb": champion_bpb} if champion_bpb is not None else {}),
            }
        )
        run.set_tags({"model_version": version, "promoted": promote})
    verdict = (
        "is the new champion"
        if promote
        else f"stays a challenger ({bpb:.4f} >= champion v{champion.version}'s {champion_bpb:.4f})"
    )
    logger.info(
        "%s version %s: %.4f bits/byte on %d validation texts; %s",
        name,
        version,
        bpb,
        len(texts),
        verdict,
    )
    return {
        "name": name,
        "version": version,
        "uri": f"models:/{name}/{version}",
        "champion": promote,
        "val_bpb": bpb,
        "champion_val_bpb": champion_bpb,
        "previous_champion": None if champion is None else str(champion.version),
        "model_dir": trained["final_model_dir"],
    }
