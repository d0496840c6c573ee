"""Prompt/response pairs files, the fine-tuning ranks' input: one ``{prompt, response}`` JSON
object per line. ``write_pair_files`` makes the train and test files from an examples table (its
split column, the table's version pinned) or from an instruction data set on disk (held out
by a hash of the instruction), named by a digest of their source.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipelines.shared.instructions import load_instruction_dataset, training_pair


def read_pairs(path: Path | str) -> list[tuple[str, str]]:
    """(prompt, response) pairs from a jsonl file with ``prompt`` and ``response`` fields."""
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pairs.append((str(record["prompt"]), str(record["response"])))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{path} line {number}: not a JSON object with prompt and response ({err})"
                ) from None
    return pairs


def write_pairs(pairs: list[tuple[str, str]], path: Path | str) -> Path:
    from infra.files import write_text_atomic

    text = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), text)
    return Path(path)


def digest(payload) -> str:
    """16 hex digits naming a JSON-able payload: pairs dirs, run dirs, cache keys."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def write_pair_files(
    dataset: dict | str, test_fraction: float, out_root: Path | str, spark=None
) -> dict:
    """Write ``<out_root>/<digest>/{train,test}.jsonl`` from a table manifest with
    instruction, response and split columns (read through ``spark``), or from an instruction
    data set file/dir; returns the files, their sizes, the source and the key of their content."""
    if isinstance(dataset, dict):
        train, test, source = pairs_from_table(spark, dataset)
    else:
        train, test = pairs_from_dataset(dataset, test_fraction)
        source = {"path": str(dataset)}
    # named by what was rendered: a dataset edited in place or a changed template gives new
    # files and a new key (so the fine-tune reruns), and a model's pairs are never overwritten
    key = digest([train, test])
    out = Path(out_root) / key
    write_pairs(train, out / "train.jsonl")
    write_pairs(test, out / "test.jsonl")
    return {
        "train": str(out / "train.jsonl"),
        "test": str(out / "test.jsonl"),
        "train_examples": len(train),
        "test_examples": len(test),
        "source": source,
        "key": key,
    }


def pairs_from_table(spark, manifest: dict):
    """(train, test, source) from the pinned table version, in example_id order."""
    from infra.lake import read_table

    rows = (
        read_table(spark, manifest)
        .select("example_id", "instruction", "response", "split")
        .orderBy("example_id")
        .collect()
    )
    split = {"train": [], "test": []}
    for row in rows:
        split[row.split].append(training_pair(row.instruction, row.response))
    source = {k: manifest[k] for k in ("table", "table_id", "version")}
    return split["train"], split["test"], source


def pairs_from_dataset(path: str, test_fraction: float):
    """(train, test): an example is held out when a hash of its instruction falls below
    ``test_fraction``, so the split is stable across reruns and row orders."""
    examples = load_instruction_dataset(path)
    split = {"train": [], "test": []}
    for example in examples:
        bucket = (
            int(hashlib.blake2b(example["instruction"].encode(), digest_size=8).hexdigest(), 16)
            / 2**64
        )
        split["test" if bucket < test_fraction else "train"].append(
            training_pair(example["instruction"], example["response"])
        )
    return split["train"], split["test"]
