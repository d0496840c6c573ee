"""The workspace clean-up (``genai gc``, deployment ``gc/weekly``): its config, the report it
prints, and what it leaves on purpose.

Each category is decided by the code that owns it: checkpoints by the training loop's rules
(``pipelines.training.checkpoint_gc``), token shards by their keys and the mix table
(``pipelines.pretrain.shard_gc``), Prefect results by age (``infra.prefect.results``), Delta
history by Delta's VACUUM (``infra.vacuum``); ``infra.disk`` measures and removes. Latent
shard sets (``$GENAI_HOME/latents/<key>``) are listed and left: no code here records what
references them, so nothing can tell an unused one from one a run still reads.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.disk import Left, Sweep
from infra.vacuum import DELTA_RETENTION_HOURS, check_retention

LATENTS = "latents"  # under $GENAI_HOME: one dir per latent shard set


class GcConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_checkpoints: int = Field(2, ge=1)  # newest complete checkpoints kept per training run
    # (the one a resume would load is kept too, whatever this says)
    retention_hours: float = Field(DELTA_RETENTION_HOURS, ge=0)  # Delta history, unreferenced
    # token shards and cached Prefect results younger than this stay: 168 h = 7 days,
    # Delta's default and the least its retention check accepts
    allow_short_retention: bool = False  # True lets retention_hours go below 168 h: only
    # when nothing else uses the workspace (a write in progress could lose its files)
    dry_run: bool = False  # list what would be removed, with sizes; remove nothing

    @model_validator(mode="after")
    def _check_retention(self):
        check_retention(self.retention_hours, self.allow_short_retention)
        return self


def latent_shard_sets(home: Path | str) -> Sweep:
    """Latent shard dirs, each left with the reason (see the module docstring)."""
    root = Path(home) / LATENTS
    sweep = Sweep("latent_shards")
    if root.is_dir():
        for path in sorted(p for p in root.iterdir() if p.is_dir()):
            sweep.left.append(Left(str(path), "nothing records what references latent shards"))
    return sweep


def gc_report(sweeps: list[dict], dry_run: bool) -> dict:
    """The sweeps' dicts (``Sweep.as_dict``) with bytes per category and in all."""
    freed: dict[str, int] = {}
    for sweep in sweeps:
        freed[sweep["category"]] = freed.get(sweep["category"], 0) + sweep["bytes"]
    return {
        "dry_run": dry_run,
        "freed_bytes": freed,  # in a dry run: what would be freed
        "total_bytes": sum(freed.values()),
        "sweeps": sweeps,
    }


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_report(report: dict) -> list[str]:
    """The report as lines: each removal (dry run: each candidate) and each path left, then
    bytes per category."""
    verb = "would remove" if report["dry_run"] else "removed"
    lines = []
    for sweep in report["sweeps"]:
        for r in sweep["removed"]:
            lines.append(f"{verb} {human_bytes(r['bytes']):>10}  {r['path']}  ({r['reason']})")
        for x in sweep["left"]:
            lines.append(f"left {x['path']}: {x['reason']}")
    lines.append(("would free" if report["dry_run"] else "freed") + ":")
    for category, n in report["freed_bytes"].items():
        lines.append(f"  {category:<16} {human_bytes(n):>10}")
    lines.append(f"  {'total':<16} {human_bytes(report['total_bytes']):>10}")
    return lines
