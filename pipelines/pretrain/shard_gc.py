"""Which token shard dirs (``$GENAI_HOME/tokens/<key>``) a clean-up may remove.

A shard dir is named by its cache key (``tokens.shard_cache_key``: the mix table's id and
version, tokenizer, seq_len, holdout, shard size, format) and its ``index.json`` names the
table version it was built from. Nothing else records a shard set: the pretrain flow reaches it
through ``build-token-shards``' cached result, and a run dir is keyed by the shard key without
naming it. So a dir is removed only when all of these hold:

1. it is complete (``_COMPLETE``; a dir without it may be a build finishing) and its index reads;
2. it was not built from the current version of its table (the next pretrain run would reuse
   it), and that table is in this lake (a table elsewhere cannot be checked: left);
3. no live Prefect result (one younger than the retention window, which the result sweep
   keeps) names its key: a cache hit would hand its path to training;
4. nothing in it was written for ``retention_hours``;
5. no pretraining run is in progress (a run dir without ``summary.json`` written within the
   window): such a run may be reading any shard set, since run dirs do not name theirs.

A build's temp dir (``.tokens-….tmp-…``) or a half-deleted dir (``….discarded-…``,
``….gc-…``) untouched for the window is a crashed process's leftover (a build's task times
out after hours): removed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from infra.disk import Left, Removal, Sweep, age_hours, tree_bytes
from pipelines.pretrain.tokens import is_complete, read_index
from pipelines.training.loop import SUMMARY

CATEGORY = "token_shards"
TOKENS_DIR = "tokens"  # under $GENAI_HOME: where tasks.pretrain builds shard dirs
RUNS_DIR = ("runs", "pretrain")  # under $GENAI_HOME: pretraining run dirs (run.run_dir)
SHARD_KEY = re.compile(r"tokens-[0-9a-f]{24}")  # shard_cache_key's names
LEFTOVER = re.compile(r"\.tokens-[0-9a-f]{24}\.(tmp|discarded|gc)-[0-9a-f]+")

# (table path) -> {"table_id", "version"} of its current version, None when no table is there
TableVersion = Callable[[str], dict | None]


def unreferenced_token_shards(
    spark,
    home: Path | str,
    lake: Path | str,
    live_results: Iterable[Path],
    retention_hours: float,
    now: float | None = None,
) -> Sweep:
    """The workspace's shard dirs that nothing references, checked against the lake's Delta
    tables, the live Prefect result files and the pretraining runs in progress."""
    now = time.time() if now is None else now
    home = Path(home)
    return stale_token_shards(
        home / TOKENS_DIR,
        lake,
        delta_table_version(spark),
        referenced_shard_keys(_read(p) for p in live_results),
        runs_in_progress(home.joinpath(*RUNS_DIR), retention_hours, now),
        retention_hours,
        now,
    )


def referenced_shard_keys(documents: Iterable[bytes | str]) -> set[str]:
    """Shard keys named anywhere in these documents (Prefect results: JSON manifests)."""
    keys: set[str] = set()
    for doc in documents:
        text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
        keys.update(SHARD_KEY.findall(text))
    return keys


def runs_in_progress(runs_root: Path | str, retention_hours: float, now: float) -> list[Path]:
    """Pretraining run dirs without ``summary.json`` written to within the window."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    return sorted(
        run
        for run in root.iterdir()
        if run.is_dir()
        and not (run / SUMMARY).is_file()
        and age_hours(run, now) <= retention_hours
    )


def stale_token_shards(
    tokens_root: Path | str,
    lake: Path | str,
    table_version: TableVersion,
    referenced: set[str],
    busy_runs: list[Path],
    retention_hours: float,
    now: float | None = None,
) -> Sweep:
    """Shard dirs under ``tokens_root`` that nothing references (see the module docstring).

    ``referenced``: keys named by live Prefect results; ``busy_runs``: pretraining runs in
    progress (:func:`runs_in_progress`)."""
    now = time.time() if now is None else now
    sweep = Sweep(CATEGORY)
    root = Path(tokens_root)
    if not root.is_dir():
        return sweep
    for path in sorted(root.iterdir()):
        age = age_hours(path, now)
        if age <= retention_hours or not path.is_dir():
            continue
        if LEFTOVER.fullmatch(path.name):
            reason = f"an interrupted build's or removal's leftover, untouched for {age:.0f} h"
            sweep.removals.append(Removal(str(path), tree_bytes(path), reason))
            continue
        verdict, why = _verdict(path, lake, table_version, referenced, busy_runs)
        if verdict == "left":
            sweep.left.append(Left(str(path), why))
        elif verdict == "remove":
            reason = f"{why}, untouched for {age:.0f} h"
            sweep.removals.append(Removal(str(path), tree_bytes(path), reason))
    return sweep


def _verdict(
    path: Path, lake, table_version: TableVersion, referenced: set[str], busy_runs: list[Path]
) -> tuple[str, str]:
    """("keep" | "left" | "remove", why) for a shard dir older than the window."""
    if not SHARD_KEY.fullmatch(path.name):
        return "left", "not a shard dir this code writes"
    if not is_complete(path):
        return "left", "no _COMPLETE marker: a build may be finishing"
    try:
        table = read_index(path)["table"]
        source, table_id, version = str(table["table"]), table["table_id"], int(table["version"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return "left", f"its index does not say which table it was built from ({err})"
    try:
        current = table_version(source)
    except Exception as err:  # a table dir Delta cannot read: cannot tell what is current
        return "left", f"cannot read its table {source}: {type(err).__name__}"
    if current is None and not _inside(source, lake):
        return "left", f"built from {source}, not a table of this lake"
    if current is not None and (current["table_id"], int(current["version"])) == (
        table_id,
        version,
    ):
        return "keep", "built from the table's current version: the next run reuses it"
    if path.name in referenced:
        return "keep", "a live Prefect result names it"
    if busy_runs:
        return "left", f"pretraining run {busy_runs[0]} is in progress and may read it"
    now_at = "gone" if current is None else f"now version {current['version']}"
    return "remove", f"built from {source} version {version} ({now_at}), named by no live result"


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:  # removed since it was listed: it references nothing now
        return b""


def _inside(path: str, root) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, ValueError):
        return False


def delta_table_version(spark) -> TableVersion:
    """``table_version`` over Delta: the table's (id, current version), None when none there."""
    from infra.lake import table_ref

    seen: dict[str, dict | None] = {}

    def current(path: str) -> dict | None:
        if path not in seen:
            has_table = (Path(path) / "_delta_log").is_dir()
            seen[path] = table_ref(spark, path) if has_table else None
        return seen[path]

    return current
