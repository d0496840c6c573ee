"""Child process for reliability tests: write one batch (10 % bad rows) through write_table.

usage: write_batch.py <lake root> <txn id>     (GENAI_FAULT in the environment arms a fault)
"""

import sys
from pathlib import Path

from infra.lake import TableSpec, expect, write_table
from infra.spark import get_spark

SPEC = TableSpec(
    layer="bronze",
    name="events",
    schema="id STRING, text STRING",
    key=("id",),
    expectations=(expect("column_value_lengths_to_be_between", column="text", min_value=1),),
    max_quarantine_fraction=0.2,
)
ROWS = [(f"e{i:04d}", "" if i % 10 == 0 else f"event {i}") for i in range(400)]

if __name__ == "__main__":
    root, txn = Path(sys.argv[1]), sys.argv[2]
    spark = get_spark(master="local[2]", extra_conf={"spark.ui.enabled": "false"})
    manifest = write_table(
        spark, SPEC, spark.createDataFrame(ROWS, SPEC.schema).repartition(4), txn_id=txn, root=root
    )
    print("MANIFEST", manifest["version"], manifest["rows"], manifest["quarantined"])
