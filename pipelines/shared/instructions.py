"""Instruction data sets in the shared Alpaca template: any data set on disk (jsonl, parquet,
a ``datasets`` save_to_disk folder) loaded as {instruction, response, text}, the jsonl form
stages write theirs in, and the (prompt, target) pair a model is fine-tuned on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.shared.templates import format_example, prompt_of


def training_pair(instruction: str, response: str) -> tuple[str, str]:
    """(prompt, target): the Alpaca text cut after the response marker; the target ends
    with the end marker, so a model learns to stop."""
    prompt = prompt_of(instruction)
    return prompt, format_example(instruction, response)[len(prompt) :]


def write_instruction_jsonl(pairs: Iterable[tuple[str, str]], path: Path | str) -> Path:
    """An instruction data set (``{"instruction", "response"}`` per line) that
    :func:`load_instruction_dataset` and ``finetune_task`` read; written atomically."""
    from infra.files import write_text_atomic

    path = Path(path)
    text = "".join(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


class InstructionDatasetError(ValueError):
    """A row of an instruction data set is unusable; the message names the file and row."""


class _BadRow(ValueError):
    pass


def load_instruction_dataset(
    path: str | Path,
    instruction_field: str = "instruction",
    response_field: str = "response",
    input_field: str | None = None,
    *,
    on_error: str = "raise",
    split: str | None = None,
    stats: dict | None = None,
) -> list[dict]:
    """[{instruction, response, text}] from a .jsonl file, a .parquet file or a directory
    written by ``datasets``' save_to_disk (``split`` picks from a DatasetDict; default train).

    A non-empty ``input_field`` value is appended to the instruction under "Input:" (the
    Dolly variant of the template). Bad rows raise InstructionDatasetError naming the file and
    row (jsonl: line); with ``on_error="skip"`` they are skipped, counted in ``stats``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no instruction data set at {path}")
    fields = [f for f in (instruction_field, response_field, input_field) if f]
    examples, errors, seen = [], [], 0
    for where, row in _rows(path, fields, split):
        seen += 1
        try:
            examples.append(_example(row, instruction_field, response_field, input_field))
        except _BadRow as err:
            message = f"{path}: {where}: {err}"
            if on_error == "raise":
                raise InstructionDatasetError(message) from None
            errors.append(message)
    if stats is not None:
        stats.update(rows=seen, loaded=len(examples), skipped=len(errors), errors=errors[:20])
    return examples


def _rows(path: Path, fields: list[str], split: str | None) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        yield from _dataset_rows(path, split)
    elif path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path, fields)
    else:
        raise InstructionDatasetError(
            f"{path}: expected a .jsonl or .parquet file or a datasets save_to_disk directory"
        )


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines carry no row
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {number}", _BadRow(f"not valid JSON ({err.msg})")


def _parquet_rows(path: Path, fields: list[str]) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    present = [f for f in fields if f in parquet.schema_arrow.names]  # missing -> row error
    number = 0
    for batch in parquet.iter_batches(columns=present, batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", row


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        name = split or "train"
        if name not in data:
            raise InstructionDatasetError(f"{path}: no split {name!r}; it has {sorted(data)}")
        data = data[name]
    for number, row in enumerate(data, start=1):
        yield f"row {number}", row


def _example(
    row: Any, instruction_field: str, response_field: str, input_field: str | None
) -> dict:
    if isinstance(row, _BadRow):
        raise row
    if not isinstance(row, dict):
        raise _BadRow(f"expected an object with fields, got {type(row).__name__}")
    instruction = _text_field(row, instruction_field)
    response = _text_field(row, response_field)
    if input_field and (extra := row.get(input_field)) not in (None, ""):
        if not isinstance(extra, str):
            raise _BadRow(f"field {input_field!r} is {type(extra).__name__}, expected a string")
        if extra.strip():
            instruction = f"{instruction}\n\nInput:\n{extra.strip()}"
    return {
        "instruction": instruction,
        "response": response,
        "text": format_example(instruction, response),
    }


def _text_field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise _BadRow(f"field {name!r} is missing (expected a non-empty string)")
    value = row[name]
    if not isinstance(value, str):
        raise _BadRow(f"field {name!r} is {type(value).__name__}, expected a non-empty string")
    if not value.strip():
        raise _BadRow(f"field {name!r} is empty (expected a non-empty string)")
    return value.strip()
