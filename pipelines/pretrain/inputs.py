"""What pretraining reads when no mix manifest is handed to it: the mix table's current
version in the lake, checked to exist and to hold rows before anything heavy starts."""

from __future__ import annotations

from pathlib import Path

from infra.lake import table_ref

MIX_TABLE = ("gold", "pretrain_mix")  # the corpus stage writes it; pretraining reads it by path


def current_mix(spark, lake: Path) -> dict:
    """The mix table's current (path, table id, version) in ``lake``, or a clear error when
    it is not there or holds no rows."""
    path = Path(lake).joinpath(*MIX_TABLE)
    try:
        ref = table_ref(spark, path)
    except Exception as err:
        raise FileNotFoundError(
            f"no Delta table at {path}: run the prepare-corpus flow first "
            f"({err.__class__.__name__})"
        ) from None
    if spark.read.format("delta").load(str(path)).limit(1).count() == 0:
        raise ValueError(
            f"the mix table {path} (version {ref['version']}) is empty: nothing to pretrain on"
        )
    return ref
