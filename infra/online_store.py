"""The online feature store: feature tables in SQLite (``$GENAI_HOME/online/features.sqlite``)
for keyed lookups at request time, one table per feature table keyed (PRIMARY KEY) by the
Delta table's key, and ``_sync_state`` recording the Delta table id, version and schema each
table was last synced from. Callers hand in each table's spec (name, DDL schema, key) as data;
one SQLite transaction per sync of a table, so a crash leaves the previous state whole.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from infra.lake import TableSpec


class FeatureStoreError(RuntimeError):
    """The online store cannot answer: a table never synced, a feature it does not hold."""


class UnknownKeyError(LookupError):
    """A key the online table does not hold: names the table, the key column and the values."""

    def __init__(self, table: str, key: str, missing: Sequence, synced: str = ""):
        self.table, self.key, self.missing = table, key, list(missing)
        shown = ", ".join(repr(v) for v in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"unknown {key} {shown}{more}: not in online table {table!r}{synced}")


class Change(NamedTuple):
    row: dict  # the full row (a delete needs only the key columns)
    deleted: bool = False


@dataclass(frozen=True)
class SyncState:
    table: str
    source: str  # the Delta table's path
    table_id: str  # Delta's table id: a recreated table gets a new one
    version: int  # last Delta version copied
    schema: str  # the TableSpec schema the online table was created from
    rows: int
    synced_at: str


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQLITE_TYPES = {
    "STRING": "TEXT",
    "DOUBLE": "REAL",
    "FLOAT": "REAL",
    "INT": "INTEGER",
    "INTEGER": "INTEGER",
    "BIGINT": "INTEGER",
    "LONG": "INTEGER",
    "SMALLINT": "INTEGER",
    "TINYINT": "INTEGER",
    "BOOLEAN": "INTEGER",
    "DATE": "TEXT",
    "TIMESTAMP": "TEXT",
}
INSERT_BATCH = 1000  # rows per executemany: bounded memory for a full copy of a big table


def parse_schema(ddl: str) -> list[tuple[str, str]]:
    """(column, upper-cased Spark type) pairs of a DDL string; commas inside <> or () are
    part of a type (ARRAY<STRING>, DECIMAL(10,2))."""
    columns, depth, start = [], 0, 0
    for i, char in enumerate(ddl + ","):
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == "," and depth == 0:
            name, _, kind = ddl[start:i].strip().partition(" ")
            columns.append((name.strip("`"), kind.strip().upper()))
            start = i + 1
    return columns


def _sqlite_type(kind: str) -> str:
    if kind.startswith("DECIMAL"):
        return "REAL"
    return _SQLITE_TYPES.get(kind, "TEXT")  # arrays, maps, structs: JSON text


def _encode(kind: str, value):
    if value is None:
        return None
    if kind == "TIMESTAMP":  # PySpark hands back naive local time; store ISO 8601 UTC
        return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value)
    if kind == "DATE":
        return value.isoformat() if isinstance(value, date) else str(value)
    if kind == "BOOLEAN":
        return int(bool(value))
    if kind.startswith(("ARRAY", "MAP", "STRUCT")):
        return json.dumps(value, default=str)
    if kind.startswith("DECIMAL"):
        return float(value)
    return value


def _decoder(kind: str) -> Callable[[Any], Any] | None:
    if kind == "BOOLEAN":
        return bool
    if kind.startswith(("ARRAY", "MAP", "STRUCT")):
        return json.loads
    return None  # stored as read; timestamps and dates stay ISO text (JSON-ready)


def default_store_path() -> Path:
    from infra.settings import load_settings

    return load_settings().home / "online" / "features.sqlite"


class OnlineStore:
    """Feature tables in SQLite for keyed lookups at request time (well under a millisecond:
    each table's key is its PRIMARY KEY, rows clustered on it). WAL journal: lookups in other
    processes keep reading the previous state while a sync writes. One connection per store,
    shared by threads under a lock."""

    STATE_TABLE = "_sync_state"

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions, sync() opens its own
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._lock = threading.RLock()
        self._tables: dict[str, tuple[str, list[tuple[str, str]], tuple[str, ...]]] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps commits atomic anyway
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.STATE_TABLE} (table_name TEXT "
                "PRIMARY KEY, source TEXT, table_id TEXT, version INTEGER, "
                "schema TEXT, key TEXT, rows INTEGER, synced_at TEXT)"
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------

    def sync_state(self, table: str) -> SyncState | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT table_name, source, table_id, version, schema, rows, synced_at "
                f"FROM {self.STATE_TABLE} WHERE table_name = ?",
                (table,),
            ).fetchone()
        return SyncState(*row) if row else None

    def tables(self) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self._db.execute(
                    f"SELECT table_name FROM {self.STATE_TABLE} ORDER BY table_name"
                )
            ]

    def count(self, table: str) -> int:
        self._meta(table)
        with self._lock:
            return self._db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]

    # -- writing ----------------------------------------------------------------------------

    def apply(
        self,
        spec: TableSpec,
        changes: Iterable[Change],
        *,
        source: str,
        table_id: str,
        version: int,
        full: bool,
    ) -> dict:
        """Apply changes to the online copy of ``spec`` and record the Delta version they
        bring it to — all in one transaction. ``full``: the changes are the whole table (the
        online table is rebuilt from them). Returns {upserted, deleted, rows}."""
        from infra.faults import fault_point

        _check_name(spec.name)
        columns = parse_schema(spec.schema)
        names = [c for c, _ in columns]
        key = list(spec.key)
        if not key:
            raise ValueError(f"{spec.qualified_name} has no key: the online store needs one")
        upsert = (
            f'INSERT INTO "{spec.name}" ({", ".join(names)}) VALUES '
            f"({', '.join('?' * len(names))}) ON CONFLICT ({', '.join(key)}) DO UPDATE "
            f"SET {', '.join(f'{c} = excluded.{c}' for c in names if c not in key)}"
        )
        delete = f'DELETE FROM "{spec.name}" WHERE ' + " AND ".join(f"{k} = ?" for k in key)
        counts = {"upserted": 0, "deleted": 0}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one writer; readers see the old state
            try:
                if full:
                    self._db.execute(f'DROP TABLE IF EXISTS "{spec.name}"')
                self._db.execute(_create_table(spec.name, columns, key))
                for batch in _batches(changes, INSERT_BATCH):
                    ups = [
                        tuple(_encode(t, c.row.get(n)) for n, t in columns)
                        for c in batch
                        if not c.deleted
                    ]
                    gone = [tuple(c.row[k] for k in key) for c in batch if c.deleted]
                    if ups:
                        self._db.executemany(upsert, ups)
                        counts["upserted"] += len(ups)
                    for values in gone:
                        counts["deleted"] += self._db.execute(delete, values).rowcount
                fault_point("features.sync_mid")  # tests: a crash before the version is recorded
                rows = self._db.execute(f'SELECT COUNT(*) FROM "{spec.name}"').fetchone()[0]
                self._db.execute(
                    f"INSERT OR REPLACE INTO {self.STATE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        spec.name,
                        source,
                        table_id,
                        int(version),
                        spec.schema,
                        ",".join(key),
                        rows,
                        datetime.now(UTC).isoformat(),
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._tables.pop(spec.name, None)
        return {**counts, "rows": rows}

    # -- reading ----------------------------------------------------------------------------

    def _meta(self, table: str) -> tuple[str, list[tuple[str, str]], tuple[str, ...]]:
        """(source, columns, key) of a synced table, cached until the next sync here."""
        meta = self._tables.get(table)
        if meta is None:
            with self._lock:
                row = self._db.execute(
                    f"SELECT source, schema, key FROM {self.STATE_TABLE} WHERE table_name = ?",
                    (table,),
                ).fetchone()
            if row is None:
                raise FeatureStoreError(
                    f"online table {table!r} has never been synced into {self.path}: run the "
                    f"sync-online-features flow first"
                )
            meta = (row[0], parse_schema(row[1]), tuple(row[2].split(",")))
            self._tables[table] = meta
        return meta

    def get(self, table: str, key) -> dict | None:
        """The row with this key (a tuple for a composite key), or None."""
        found = self.get_many(table, [key])
        return found.get(key)

    def get_many(self, table: str, keys: Sequence) -> dict:
        """Rows by key, {key: row} for the keys present (absent keys are left out)."""
        try:
            return self._select(table, keys)
        except sqlite3.OperationalError:  # another process rebuilt the table: read it afresh
            self._tables.pop(table, None)
            return self._select(table, keys)

    def _select(self, table: str, keys: Sequence) -> dict:
        _, columns, key = self._meta(table)
        names = ", ".join(c for c, _ in columns)
        where = " AND ".join(f"{k} = ?" for k in key)
        sql = f'SELECT {names} FROM "{table}" WHERE {where}'
        decoders = [(c, _decoder(t)) for c, t in columns]
        found = {}
        with self._lock:
            for value in dict.fromkeys(keys):
                params = value if isinstance(value, tuple) else (value,)
                row = self._db.execute(sql, params).fetchone()
                if row is not None:
                    found[value] = {
                        c: (d(v) if d and v is not None else v)
                        for (c, d), v in zip(decoders, row, strict=False)
                    }
        return found

    def require(self, table: str, key_column: str, keys: Sequence) -> dict:
        """Like get_many, but every key must be there: else UnknownKeyError naming them."""
        found = self.get_many(table, keys)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            state = self.sync_state(table)
            synced = f" (synced from {state.source} version {state.version})" if state else ""
            raise UnknownKeyError(table, key_column, missing, synced)
        return found


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"online table name {name!r}: expected letters, digits and _")


def _create_table(name: str, columns: list[tuple[str, str]], key: list[str]) -> str:
    for column, _ in columns:
        _check_name(column)
    body = ", ".join(f"{c} {_sqlite_type(t)}" for c, t in columns)
    return (
        f'CREATE TABLE IF NOT EXISTS "{name}" ({body}, PRIMARY KEY ({", ".join(key)})) '
        f"WITHOUT ROWID"
    )


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
