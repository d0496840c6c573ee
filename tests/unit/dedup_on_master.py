"""Child process: run the dedup job on a given Spark master and print its decisions as JSON.

usage: dedup_on_master.py <master URL>
"""

import json
import sys

from infra.spark import get_spark
from pipelines.corpus.dedup import deduplicate
from pipelines.corpus.minhash import DedupConfig


def seeded_docs(n: int = 300, seed: int = 11) -> list[tuple[str, str]]:
    """Documents with known near-duplicates: every fifth one is an edited copy of another."""
    import random

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    docs = []
    for i in range(n):
        if i % 5 == 4:
            base = docs[rng.randrange(len(docs))][1].split()
            for _ in range(2):
                base[rng.randrange(len(base))] = rng.choice(words)
            docs.append((f"d{i:04d}", " ".join(base)))
        else:
            docs.append((f"d{i:04d}", " ".join(rng.choice(words) for _ in range(60))))
    return docs


def decisions(spark) -> dict:
    df = spark.createDataFrame(seeded_docs(), "id STRING, text STRING")
    result = deduplicate(df, DedupConfig())
    return {
        "kept": sorted(r.id for r in result.kept.select("id").collect()),
        "duplicates": sorted(
            (r.id, r.representative_id, r.cluster_id) for r in result.duplicates.collect()
        ),
    }


if __name__ == "__main__":
    session = get_spark(
        master=sys.argv[1], extra_conf={"spark.ui.enabled": "false", "spark.cores.max": "2"}
    )
    print("DECISIONS " + json.dumps(decisions(session)))
    session.stop()
