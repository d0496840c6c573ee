"""One fine-tuning run's name and directory (what a sweep cell or a task model trains in).

Kept apart from the sweep's plan so that a task model's cache key reaches the LoRA code it
trains with, not the synthetic-example generator the sweep's config names."""

from __future__ import annotations

from pathlib import Path

from pipelines.finetune.lora import FinetuneConfig
from pipelines.finetune.pairs import digest


def cell_name(config: FinetuneConfig) -> str:
    targets = (
        config.lora.targets
        if isinstance(config.lora.targets, str)
        else "+".join(config.lora.targets)
    )
    return f"r{config.lora.r}-{targets}-{config.base_bits}bit"


def run_dir(root: Path, config: FinetuneConfig, pairs: dict, base, ranks: int) -> Path:
    """A pure function of what the run's trajectory depends on: config, data, the base (its
    content or registry version, as the cache key has it), ranks and the code the ranks run."""
    from infra.fingerprints import code_fingerprint

    payload = {
        "config": config.model_dump(mode="json"),
        "pairs": pairs["key"],
        "base": base,
        "ranks": ranks,
        "code": code_fingerprint("pipelines.finetune.lora"),
    }
    return Path(root) / f"r{config.lora.r}-{digest(payload)}"
