"""Data mixing: weighted sampling across sources to a byte budget, deterministic by seed.

Each source gets ``weight / sum(weights)`` of the budget. Within a source, documents are taken
in a seeded hash order until its share is filled; a source smaller than its share is repeated
(up to ``max_repeats`` passes, each in a fresh order) so the mix keeps its proportions.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from infra.lake import TableSpec, expect

PRETRAIN_MIX = TableSpec(
    layer="gold",
    name="pretrain_mix",
    schema=(
        "mix_id STRING, id STRING, source STRING, package STRING, licence STRING, "
        "text STRING, n_bytes INT, repeat INT"
    ),
    key=("mix_id",),
    expectations=(
        expect("column_values_to_not_be_null", column="text"),
        expect("column_value_lengths_to_be_between", column="text", min_value=1),
        expect("column_values_to_be_between", column="repeat", min_value=0),
    ),
    max_quarantine_fraction=0.0,  # the mix is built from gated tables: any failure is a bug
    description="What pretraining reads: documents sampled per source to a byte budget.",
)


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        default_factory=lambda: {"docstring": 0.6, "metadata": 0.3, "licence": 0.1, "user": 1.0},
        description="relative share of the byte budget per source; sources not listed are out",
    )
    byte_budget: int = Field(50_000_000, gt=0, description="UTF-8 bytes in the mix")
    max_repeats: int = Field(1, ge=1, description="passes over a source smaller than its share")
    seed: int = 1234  # the order within each source is a pure function of (seed, pass, id)


def build_mix(df, config: MixConfig):
    """Select the mix from a deduplicated corpus; returns (mix DataFrame, targets by source)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = df.sparkSession
    present = {r.source for r in df.select("source").distinct().collect()}
    weights = {s: w for s, w in config.weights.items() if s in present and w > 0}
    total = sum(weights.values()) or 1.0
    targets = {s: int(config.byte_budget * w / total) for s, w in weights.items()}
    target_col = (
        F.create_map(*[x for s, t in targets.items() for x in (F.lit(s), F.lit(t))])
        if targets
        else F.create_map().cast("map<string,bigint>")
    )

    passes = spark.range(config.max_repeats).select(F.col("id").cast("int").alias("repeat"))
    order = (
        Window.partitionBy("source")
        .orderBy("repeat", "_order", "id")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    candidates = (
        df.where(F.col("source").isin(list(targets)))
        .withColumn("n_bytes", F.octet_length("text"))
        .crossJoin(passes)
        .withColumn("_order", F.xxhash64(F.lit(config.seed), "repeat", "id"))
        .withColumn("_filled", F.sum("n_bytes").over(order) - F.col("n_bytes"))
    )
    mix = candidates.where(F.col("_filled") < target_col[F.col("source")]).select(
        F.concat_ws("@", "id", F.col("repeat").cast("string")).alias("mix_id"),
        "id",
        "source",
        "package",
        "licence",
        "text",
        F.col("n_bytes").cast("int"),
        "repeat",
    )
    return mix, targets


def mix_stats(mix, targets: dict[str, int]) -> dict:
    from pyspark.sql import functions as F

    rows = (
        mix.groupBy("source")
        .agg(
            F.count("*").alias("docs"),
            F.sum("n_bytes").alias("bytes"),
            F.max("repeat").alias("max_repeat"),
        )
        .collect()
    )
    return {
        r.source: {
            "docs": r.docs,
            "bytes": int(r.bytes),
            "target_bytes": targets[r.source],
            "passes": r.max_repeat + 1,
        }
        for r in rows
    }


def mix_corpus(spark, corpus: dict, config: MixConfig, txn_id: str) -> dict:
    """Step: deduplicated corpus table (manifest) → gold/pretrain_mix; returns its manifest."""
    from infra.lake import read_table, write_table

    mix, targets = build_mix(read_table(spark, corpus), config)
    manifest = write_table(spark, PRETRAIN_MIX, mix, txn_id=txn_id, mode="overwrite")
    manifest["stats"] = {"by_source": mix_stats(read_table(spark, manifest), targets)}
    manifest["inputs"] = [corpus]
    return manifest
