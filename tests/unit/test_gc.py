"""`genai gc` on a small fake workspace: checkpoints written by the loop's own
``save_checkpoint``, a Delta table with history past the retention window, token shard sets
written by ``write_token_shards``, Prefect result files. What goes, what stays, that a dry run
removes nothing, and that a second run finds nothing left to free."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tiny_model import tiny_sentences  # tests/ is on sys.path

from infra import disk
from infra.faults import InjectedFault
from infra.prefect.results import live_results, stale_results
from infra.settings import Settings
from infra.vacuum import delta_tables, vacuum_tables
from pipelines.pretrain.shard_gc import (
    runs_in_progress,
    stale_token_shards,
    unreferenced_token_shards,
)
from pipelines.pretrain.tokenizer import TokenizerConfig, train_tokenizer
from pipelines.pretrain.tokens import tokenize_in_process, write_token_shards
from pipelines.shared.gc import GcConfig, format_report, gc_report, latent_shard_sets
from pipelines.training.checkpoint_gc import stale_checkpoints, stale_checkpoints_of_runs
from pipelines.training.checkpoints import find_resume_checkpoint, save_checkpoint, tag_name
from pipelines.training.config import TrainerConfig

OLD_H = 300.0  # hours: well past the default 168 h retention
RETENTION_H = 168.0


def set_age(path: Path, hours: float) -> None:
    """Make ``path`` and everything under it look last written ``hours`` ago."""
    when = time.time() - hours * 3600
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (when, when))
    os.utime(path, (when, when))


def snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# --- checkpoints, as the loop writes them ----------------------------------------------------


class FakeEngine:
    """What ``save_checkpoint`` asks of DeepSpeed's engine: its files in the tag dir."""

    def __init__(self):
        import torch

        self.module = torch.nn.Linear(2, 2)

    def save_checkpoint(self, save_dir, tag, client_state, save_latest, **_):
        tag_dir = Path(save_dir) / tag
        tag_dir.mkdir(parents=True, exist_ok=True)
        (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"w" * 4096)
        (tag_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o" * 8192)


def save(ckpt_dir: Path, step: int, interrupted: bool = False) -> None:
    """One checkpoint through the loop's own writer; ``interrupted``: its files written, the
    COMPLETE marker not yet (the ``ckpt.during_save`` fault point): a save in progress."""
    config = TrainerConfig(keep_checkpoints=10)  # the writer's own pruning keeps them all
    position = {"phase": 0, "sampler": {"position": step}}
    if not interrupted:
        save_checkpoint(FakeEngine(), ckpt_dir, step, position, None, config)
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENAI_FAULT", "ckpt.during_save")
        mp.setenv("GENAI_FAULT_MODE", "raise")
        with pytest.raises(InjectedFault):
            save_checkpoint(FakeEngine(), ckpt_dir, step, position, None, config)


def tags(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir())


# --- the workspace -------------------------------------------------------------------------


def write_history(spark, table: Path) -> None:
    """Three versions, each overwriting the last. Version 1's removals are made to look
    300 h old: Delta ages a removed file by its tombstone's deletionTimestamp (in the commit)
    and by the file's mtime, so both are set back; version 2's removals stay recent."""
    for i in range(3):
        spark.range(i * 10, i * 10 + 10, numPartitions=2).write.format("delta").mode(
            "overwrite"
        ).save(str(table))
    commit = table / "_delta_log" / f"{1:020d}.json"
    old = time.time() - OLD_H * 3600
    actions = [json.loads(line) for line in commit.read_text().splitlines()]
    for action in actions:
        if "remove" in action:
            action["remove"]["deletionTimestamp"] = int(old * 1000)
            os.utime(table / action["remove"]["path"], (old, old))
    commit.write_text("".join(json.dumps(a) + "\n" for a in actions))
    (commit.parent / f".{commit.name}.crc").unlink()  # Hadoop's checksum of the old text
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # re-read the edited commit


def shard_set(tokenizer, root: Path, table: dict, seed: int = 7) -> Path:
    records = [(f"d{i}", s) for i, s in enumerate(tiny_sentences(80))]
    summary = write_token_shards(
        lambda: tokenize_in_process(records, tokenizer), tokenizer, table, root, 16, 0.2, seed, 8
    )
    return Path(summary["dir"])


def run_gc(spark, settings: Settings, storage: Path, config: GcConfig) -> dict:
    """What flows/gc.py runs, task by task, without Prefect."""
    hours, dry, now = config.retention_hours, config.dry_run, time.time()
    checkpoints = stale_checkpoints_of_runs(settings.path("runs"), config.keep_checkpoints)
    results = stale_results(storage, hours, now)
    live = live_results(storage, hours, now)
    shards = unreferenced_token_shards(spark, settings.home, settings.lake, live, hours, now)
    sweeps = [
        disk.apply(checkpoints, dry),
        disk.apply(results, dry),
        disk.apply(shards, dry),
        latent_shard_sets(settings.home),
        vacuum_tables(spark, settings.lake, hours, dry_run=dry),
    ]
    return gc_report([s.as_dict() for s in sweeps], dry)


@pytest.fixture(scope="module")
def workspace(spark, tmp_path_factory):
    from infra.lake import table_ref

    home = tmp_path_factory.mktemp("gc") / "ws"
    settings = Settings(home=home)
    ws = {"settings": settings, "storage": home / "prefect" / "storage"}

    # a finished pretraining run with 5 checkpoints; a fine-tuning run saving its 4th
    pretrain = home / "runs" / "pretrain" / "demo-0123456789abcdef"
    for step in (10, 20, 30, 40, 50):
        save(pretrain / "checkpoints", step)
    (pretrain / "summary.json").write_text("{}")
    finetune = home / "runs" / "finetune" / "r8-0123456789abcdef"
    for step in (5, 10, 15):
        save(finetune / "checkpoints", step)
    save(finetune / "checkpoints", 20, interrupted=True)
    ws["pretrain"], ws["finetune"] = pretrain / "checkpoints", finetune / "checkpoints"

    table = home / "lake" / "gold" / "pretrain_mix"
    write_history(spark, table)
    ws["table"], ws["ref"] = table, table_ref(spark, table)
    ws["parquet"] = sorted(p.name for p in table.glob("*.parquet"))

    # token shard sets from the table's versions; all old except "young"
    tokenizer = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=512))
    tokens, ref = home / "tokens", ws["ref"]
    shards = {
        "current": shard_set(tokenizer, tokens, ref),  # the table's current version (2)
        "unused": shard_set(tokenizer, tokens, {**ref, "version": 0}),
        "cached": shard_set(tokenizer, tokens, {**ref, "version": 1}),  # a live result names it
        "young": shard_set(tokenizer, tokens, {**ref, "version": 0}, seed=8),
    }
    shards["leftover"] = tokens / f".{'tokens-' + 'a' * 24}.tmp-0123456789ab"
    (shards["leftover"] / "train-00000.npy").parent.mkdir()
    (shards["leftover"] / "train-00000.npy").write_bytes(b"\0" * 1000)
    for name in ("current", "unused", "cached", "leftover"):
        set_age(shards[name], OLD_H)
    ws["shards"] = shards
    (home / "latents" / "vae-0123").mkdir(parents=True)

    storage = ws["storage"]
    storage.mkdir(parents=True)
    manifest = {"dir": str(shards["cached"]), "cache_key": shards["cached"].name}
    (storage / "build-token-shards-new").write_text(json.dumps({"result": json.dumps(manifest)}))
    old_manifest = {"dir": str(shards["unused"]), "cache_key": shards["unused"].name}
    (storage / "build-token-shards-old").write_text(json.dumps({"result": old_manifest}))
    set_age(storage / "build-token-shards-old", OLD_H)
    return ws


@pytest.fixture(scope="module")
def gc_runs(spark, workspace):
    """A dry run, a real run and a second real run, with the workspace before and after."""
    settings, storage = workspace["settings"], workspace["storage"]
    home = settings.home
    runs = {"before": snapshot(home)}
    runs["dry"] = run_gc(spark, settings, storage, GcConfig(dry_run=True))
    runs["after_dry"] = snapshot(home)
    runs["resume_before"] = find_resume_checkpoint(workspace["pretrain"])
    runs["real"] = run_gc(spark, settings, storage, GcConfig())
    runs["after"] = snapshot(home)
    runs["again"] = run_gc(spark, settings, storage, GcConfig())
    return runs


def removed(report: dict, category: str) -> set[str]:
    return {r["path"] for s in report["sweeps"] if s["category"] == category for r in s["removed"]}


def left(report: dict, category: str) -> set[str]:
    return {x["path"] for s in report["sweeps"] if s["category"] == category for x in s["left"]}


def test_a_dry_run_removes_nothing_and_lists_what_the_run_removes(gc_runs):
    dry, real = gc_runs["dry"], gc_runs["real"]
    assert gc_runs["after_dry"] == gc_runs["before"]
    assert dry["dry_run"] and not real["dry_run"]
    for category in ("checkpoints", "prefect_results", "token_shards", "delta"):
        assert removed(dry, category) == removed(real, category), category
        assert removed(real, category), f"the workspace has {category} to remove"
    assert dry["freed_bytes"] == real["freed_bytes"]
    assert real["total_bytes"] == sum(real["freed_bytes"].values()) > 0
    gone = set(gc_runs["before"]) - set(gc_runs["after"])
    assert sum(gc_runs["before"][p] for p in gone) == real["total_bytes"]
    lines = format_report(dry)
    assert any(line.startswith("would remove") for line in lines) and lines[-1].startswith(
        "  total"
    )


def test_each_run_keeps_its_newest_checkpoints_and_the_one_a_resume_loads(gc_runs, workspace):
    pretrain, finetune = workspace["pretrain"], workspace["finetune"]
    assert tags(pretrain) == [tag_name(40), tag_name(50)]
    assert find_resume_checkpoint(pretrain) == gc_runs["resume_before"] == tag_name(50)
    # the fine-tuning run's save of step 20 is in progress: left, with its two newest
    assert tags(finetune) == [tag_name(10), tag_name(15), tag_name(20)]
    assert str(finetune / tag_name(20)) in left(gc_runs["real"], "checkpoints")
    assert removed(gc_runs["real"], "checkpoints") == {
        str(pretrain / tag_name(s)) for s in (10, 20, 30)
    } | {str(finetune / tag_name(5))}


def test_vacuum_removes_only_files_past_retention_and_adds_no_version(gc_runs, workspace, spark):
    from infra.lake import table_ref

    table = workspace["table"]
    left_files = sorted(p.name for p in table.glob("*.parquet"))
    assert len(workspace["parquet"]) == 6 and len(left_files) == 4  # version 0's 2 files went
    assert removed(gc_runs["real"], "delta") == {str(table)}
    assert table_ref(spark, table) == workspace["ref"]  # VACUUM logged no commit
    assert spark.read.format("delta").load(str(table)).count() == 10
    v1 = spark.read.format("delta").option("versionAsOf", 1).load(str(table))
    assert sorted(r.id for r in v1.collect()) == list(range(10, 20))  # within the window


def test_only_old_shard_sets_that_nothing_references_are_removed(gc_runs, workspace):
    shards = workspace["shards"]
    assert removed(gc_runs["real"], "token_shards") == {
        str(shards["unused"]),
        str(shards["leftover"]),
    }
    for name in ("current", "cached", "young"):
        assert shards[name].is_dir(), name
    home = workspace["settings"].home
    assert left(gc_runs["real"], "latent_shards") == {str(home / "latents" / "vae-0123")}
    assert (home / "latents" / "vae-0123").is_dir()


def test_old_prefect_results_go_and_new_ones_stay(gc_runs, workspace):
    storage = workspace["storage"]
    assert removed(gc_runs["real"], "prefect_results") == {str(storage / "build-token-shards-old")}
    assert (storage / "build-token-shards-new").is_file()


def test_a_second_run_frees_nothing(gc_runs):
    again = gc_runs["again"]
    assert again["total_bytes"] == 0
    assert all(not s["removed"] for s in again["sweeps"])
    assert set(again["freed_bytes"]) == set(gc_runs["real"]["freed_bytes"])


# --- without Spark -------------------------------------------------------------------------


def test_the_tag_latest_names_survives_even_when_newer_ones_are_complete(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        save(ckpt, step)
    (ckpt / "latest").write_text(tag_name(20))  # killed between step 30's marker and `latest`
    assert find_resume_checkpoint(ckpt) == tag_name(20)
    disk.apply(stale_checkpoints(ckpt, keep=1), dry_run=False)
    assert tags(ckpt) == [tag_name(20), tag_name(30)]
    assert find_resume_checkpoint(ckpt) == tag_name(20)


def test_a_run_with_no_complete_checkpoint_is_left_as_it_is(tmp_path):
    ckpt = tmp_path / "checkpoints"
    save(ckpt, 10, interrupted=True)
    sweep = stale_checkpoints(ckpt, keep=1)
    assert not sweep.removals and [x.path for x in sweep.left] == [str(ckpt)]


def test_a_pretraining_run_in_progress_keeps_every_shard_set(tmp_path):
    tokenizer = train_tokenizer(tiny_sentences(), TokenizerConfig(vocab_size=512))
    lake = tmp_path / "lake"
    table = {"table": str(lake / "gold" / "pretrain_mix"), "table_id": "t", "version": 0}
    old = shard_set(tokenizer, tmp_path / "tokens", table)
    set_age(old, OLD_H)
    run = tmp_path / "runs" / "pretrain" / "demo-0123"
    (run / "checkpoints").mkdir(parents=True)  # written now, no summary.json yet
    busy = runs_in_progress(tmp_path / "runs" / "pretrain", RETENTION_H, time.time())
    assert busy == [run]

    def now_version_1(_path):
        return {"table_id": "t", "version": 1}

    sweep = stale_token_shards(tmp_path / "tokens", lake, now_version_1, set(), busy, RETENTION_H)
    assert not sweep.removals and [x.path for x in sweep.left] == [str(old)]
    (run / "summary.json").write_text("{}")  # the run finished: nothing reads it any more
    done = runs_in_progress(tmp_path / "runs" / "pretrain", RETENTION_H, time.time())
    sweep = stale_token_shards(tmp_path / "tokens", lake, now_version_1, set(), done, RETENTION_H)
    assert [r.path for r in sweep.removals] == [str(old)]


def test_a_retention_below_deltas_check_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="below Delta's 168 h"):
        GcConfig(retention_hours=24)
    assert GcConfig(retention_hours=24, allow_short_retention=True).retention_hours == 24
    with pytest.raises(ValueError, match="Extra inputs"):
        GcConfig(keep=3)
    with pytest.raises(ValueError):
        GcConfig(keep_checkpoints=0)


def test_every_table_of_the_lake_is_vacuumed_quarantine_and_rejected_ones_too(tmp_path):
    for name in ("silver/corpus_clean", "silver/corpus_clean__quarantine", "gold/x__rejected"):
        (tmp_path / name / "_delta_log").mkdir(parents=True)
    (tmp_path / "silver" / "not_a_table").mkdir()
    assert [str(p.relative_to(tmp_path)) for p in delta_tables(tmp_path)] == [
        "gold/x__rejected",
        "silver/corpus_clean",
        "silver/corpus_clean__quarantine",
    ]
