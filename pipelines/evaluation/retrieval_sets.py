"""Retriever eval sets: named, ordered (question, expected source ids) pairs with a content
hash that names each set in cache keys. Loaded from the repository's hand-written questions
about the mlflow, prefect and pyspark APIs (``data/rag_questions.jsonl``, some with several
answers), from JSON lines files like it, or from user CSVs with columns ``question`` and
``expected_source_ids`` (ids separated by ``;`` or ``|``); every bad row names its file and row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

QUESTIONS_FILE = Path(__file__).parent / "data" / "rag_questions.jsonl"
ID_SEPARATORS = re.compile(r"[;|]")  # between expected ids in a CSV cell


class EvalSetError(ValueError):
    """A bad eval set input: names the file, the row and what was expected."""


class EvalQuestion(NamedTuple):
    """One question and the source ids that answer it (any order; all count for recall)."""

    question: str
    expected_source_ids: tuple[str, ...]
    note: str = ""  # why these answers, for the hand-written set
    origin: str = ""  # where it came from: <file>:<line>, <file> row <n>, template:<seed>
    part: str = ""  # the eval set it came from in a combined set (reported separately)


@dataclass(frozen=True)
class EvalSet:
    """Named, ordered questions. ``content_hash`` covers the questions and their expected ids
    (not notes or origins), so a cache keyed on it is invalidated exactly when they change."""

    name: str
    questions: tuple[EvalQuestion, ...]

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[EvalQuestion]:
        return iter(self.questions)

    @cached_property
    def content_hash(self) -> str:
        payload = [[q.question, sorted(q.expected_source_ids)] for q in self.questions]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def describe(self) -> dict:
        """Small JSON-able identity: for manifests, MLflow params and cache keys."""
        return {"name": self.name, "questions": len(self), "hash": self.content_hash}

    @classmethod
    def combine(cls, name: str, *sets: EvalSet) -> EvalSet:
        """The sets' questions in order, each tagged with its set's name as ``part``; a
        question text seen before is dropped (first wins)."""
        seen: set[str] = set()
        questions = []
        for eval_set in sets:
            for q in eval_set:
                if q.question not in seen:
                    seen.add(q.question)
                    questions.append(q._replace(part=q.part or eval_set.name))
        return cls(name, tuple(questions))


def hand_written_questions() -> EvalSet:
    """The repository's hand-written questions about the mlflow, prefect and pyspark APIs."""
    return load_question_file(QUESTIONS_FILE, name="hand-written")


def hand_written_targets() -> list[str]:
    """Every expected id of the hand-written questions, in file order: the documents a capped
    demo corpus keeps so that its index can answer them."""
    return [i for q in hand_written_questions() for i in q.expected_source_ids]


def load_eval_set(path: Path | str, known_ids: Iterable[str] | None = None) -> EvalSet:
    """A user eval set by file type: ``.jsonl`` (like rag_questions.jsonl) or ``.csv``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return load_question_file(path, known_ids=known_ids)
    if suffix == ".csv":
        return load_csv(path, known_ids=known_ids)
    raise EvalSetError(
        f"eval set {path}: unsupported file type {suffix or '(none)'!r} (expected .csv or .jsonl)"
    )


def load_question_file(
    path: Path | str, name: str | None = None, known_ids: Iterable[str] | None = None
) -> EvalSet:
    """JSON lines: ``{"question": str, "expected_source_ids": [str, ...], "note": str?}``."""
    path = Path(path)
    text = _read_eval_file(path)
    questions = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"eval set {path} line {line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise EvalSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        ids = obj.get("expected_source_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise EvalSetError(f"{where}: 'expected_source_ids' must be a list of strings")
        note = obj.get("note", "")
        if not isinstance(note, str):
            raise EvalSetError(f"{where}: 'note' must be a string")
        questions.append(
            _question(obj.get("question"), ids, where, f"{path.name}:{line_no}", note)
        )
    return _finish(name or path.stem, questions, path, known_ids)


def load_csv(
    path: Path | str, name: str | None = None, known_ids: Iterable[str] | None = None
) -> EvalSet:
    """A user CSV with a header: ``question``, ``expected_source_ids`` (ids separated by ';'
    or '|'); other columns are ignored except an optional ``note``. Row numbers in errors
    count data rows from 1 (the header is not a row); the line is given too."""
    path = Path(path)
    reader = csv.DictReader(_read_eval_file(path).splitlines())
    missing = [
        c for c in ("question", "expected_source_ids") if c not in (reader.fieldnames or [])
    ]
    if missing:
        raise EvalSetError(
            f"eval set {path}: missing column(s) {', '.join(missing)} (header "
            f"{reader.fieldnames or 'empty'}; expected question, "
            f"expected_source_ids)"
        )
    questions = []
    for row_no, row in enumerate(reader, start=1):
        where = f"eval set {path} row {row_no} (line {reader.line_num})"
        if None in row:
            raise EvalSetError(f"{where}: more fields than the header has columns")
        cell = row["expected_source_ids"]
        ids = [] if cell is None else [i.strip() for i in ID_SEPARATORS.split(cell) if i.strip()]
        questions.append(
            _question(
                row["question"], ids, where, f"{path.name} row {row_no}", row.get("note") or ""
            )
        )
    return _finish(name or path.stem, questions, path, known_ids)


def _read_eval_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheets add a BOM
    except FileNotFoundError:
        raise EvalSetError(f"eval set {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise EvalSetError(f"eval set {path}: not UTF-8 text (byte {exc.start})") from None


def _question(question, ids: list[str], where: str, origin: str, note: str) -> EvalQuestion:
    if not isinstance(question, str) or not question.strip():
        raise EvalSetError(f"{where}: 'question' is missing or empty")
    if not ids or any(not i.strip() for i in ids):
        raise EvalSetError(f"{where}: 'expected_source_ids' needs at least one non-empty id")
    unique = tuple(dict.fromkeys(i.strip() for i in ids))
    return EvalQuestion(" ".join(question.split()), unique, note, origin)


def _finish(
    name: str, questions: list[EvalQuestion], path: Path, known_ids: Iterable[str] | None
) -> EvalSet:
    if not questions:
        raise EvalSetError(f"eval set {path} has no questions")
    eval_set = EvalSet(name, tuple(questions))
    if known_ids is not None:
        problems = unknown_ids(eval_set, known_ids)
        if problems:
            listed = "; ".join(
                f"{origin}: {', '.join(ids)}" for origin, ids in list(problems.items())[:10]
            )
            raise EvalSetError(
                f"eval set {path}: {len(problems)} question(s) expect ids not "
                f"in the corpus: {listed}"
            )
    return eval_set


def unknown_ids(eval_set: EvalSet, known_ids: Iterable[str]) -> dict[str, list[str]]:
    """{question origin: its expected ids missing from ``known_ids``} (empty when all exist)."""
    known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
    problems = {}
    for q in eval_set:
        missing = [i for i in q.expected_source_ids if i not in known]
        if missing:
            problems[q.origin or q.question] = missing
    return problems
