"""Retriever evaluation: eval sets of (question, expected source ids), precision/recall/nDCG@k
through MLflow's retriever evaluation, and the chunk size x retriever grid, each cell cached.

Three kinds of eval set, all :class:`EvalSet` (a content hash names each one in cache keys):

* template questions generated from the docstring corpus (seeded): a document's summary line,
  with every word of its target's identifier taken out, put into a question ("How do I ...?",
  "Which function ...?"), so a retriever cannot find the answer by matching the name;
* the hand-written questions in ``pipelines/data/rag_questions.jsonl`` about the mlflow,
  prefect and pyspark APIs, as a user would ask them (some with several answers);
* user CSVs with columns ``question`` and ``expected_source_ids`` (ids separated by ``;`` or
  ``|``).

Evaluation is decoupled from the store: it takes ``retrieve(question, k) -> source ids`` (rank
order). The metrics are MLflow's (``mlflow.models.evaluate(model_type="retriever")`` with
``mlflow.metrics.precision_at_k``/``recall_at_k``/``ndcg_at_k``), never formulas of our own.
MLflow 3.x marks these metrics deprecated in favour of ``mlflow.genai``, whose retrieval scorers
are LLM judges without ranked ground-truth ids; the static-dataset path still works and is what
this module uses (its deprecation warnings are silenced here, once, on purpose).
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import os
import random
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field, field_validator

QUESTIONS_FILE = Path(__file__).parent / "data" / "rag_questions.jsonl"
KS = tuple(range(1, 11))  # precision/recall/nDCG at every k from 1 to 10
METRICS = ("precision", "recall", "ndcg")  # MLflow's metric families, named <family>_at_<k>
EXPERIMENT = "evaluate-retrieval"  # runs go here when no parent run is given
RETRIEVERS = ("vector", "fts", "hybrid")
CHUNK_SIZES = (64, 128, 256)  # embedder tokens; all-MiniLM-L6-v2 reads at most 256
ID_SEPARATORS = re.compile(r"[;|]")  # between expected ids in a CSV cell
MARKDOWN_ROWS = 30  # per-question rows shown in the markdown report (the CSV has them all)

Retriever = Literal["vector", "fts", "hybrid"]


class EvalSetError(ValueError):
    """A bad eval set input: names the file, the row and what was expected."""


# =============================================================================================
# Eval sets
# =============================================================================================

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


def load_eval_set(path: Path | str, known_ids: Iterable[str] | None = None) -> EvalSet:
    """A user eval set by file type: ``.jsonl`` (like rag_questions.jsonl) or ``.csv``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return load_question_file(path, known_ids=known_ids)
    if suffix == ".csv":
        return load_csv(path, known_ids=known_ids)
    raise EvalSetError(f"eval set {path}: unsupported file type {suffix or '(none)'!r} "
                       f"(expected .csv or .jsonl)")


def load_question_file(path: Path | str, name: str | None = None,
                       known_ids: Iterable[str] | None = None) -> EvalSet:
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
        questions.append(_question(obj.get("question"), ids, where, f"{path.name}:{line_no}",
                                   note))
    return _finish(name or path.stem, questions, path, known_ids)


def load_csv(path: Path | str, name: str | None = None,
             known_ids: Iterable[str] | None = None) -> EvalSet:
    """A user CSV with a header: ``question``, ``expected_source_ids`` (ids separated by ';'
    or '|'); other columns are ignored except an optional ``note``. Row numbers in errors
    count data rows from 1 (the header is not a row); the line is given too."""
    path = Path(path)
    reader = csv.DictReader(_read_eval_file(path).splitlines())
    missing = [c for c in ("question", "expected_source_ids") if c not in (reader.fieldnames or [])]
    if missing:
        raise EvalSetError(f"eval set {path}: missing column(s) {', '.join(missing)} (header "
                           f"{reader.fieldnames or 'empty'}; expected question, "
                           f"expected_source_ids)")
    questions = []
    for row_no, row in enumerate(reader, start=1):
        where = f"eval set {path} row {row_no} (line {reader.line_num})"
        if None in row:
            raise EvalSetError(f"{where}: more fields than the header has columns")
        cell = row["expected_source_ids"]
        ids = [] if cell is None else [i.strip() for i in ID_SEPARATORS.split(cell) if i.strip()]
        questions.append(_question(row["question"], ids, where, f"{path.name} row {row_no}",
                                   row.get("note") or ""))
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


def _finish(name: str, questions: list[EvalQuestion], path: Path,
            known_ids: Iterable[str] | None) -> EvalSet:
    if not questions:
        raise EvalSetError(f"eval set {path} has no questions")
    eval_set = EvalSet(name, tuple(questions))
    if known_ids is not None:
        problems = unknown_ids(eval_set, known_ids)
        if problems:
            listed = "; ".join(f"{origin}: {', '.join(ids)}" for origin, ids in
                               list(problems.items())[:10])
            raise EvalSetError(f"eval set {path}: {len(problems)} question(s) expect ids not "
                               f"in the corpus: {listed}")
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


# ---------------------------------------------------------------- template questions ------

MIN_SUMMARY_WORDS = 5  # shorter summaries ("Return the name.") say too little to retrieve by
MAX_SUMMARY_WORDS = 30  # a question longer than this stops reading like a question
MIN_KEPT_WORDS = 4  # content words left after the identifier's words are removed
MIN_KEPT_FRACTION = 0.75  # ... and the share of the summary's content words that survive
DEFAULT_TEMPLATE_QUESTIONS = 200  # n: enough for stable means, cheap to retrieve

# Summaries that say nothing about the API (dunder boilerplate, aliases, deprecations, stubs).
GENERIC_SUMMARY = re.compile(
    r"^(initiali[sz]e (self|the object|a new instance)|return (str|repr|hash)\(self\)|"
    r"implement |see (help|the|also|:)|alias (for|of)|an? alias|same as|deprecated|"
    r"this (method|function|class|module) is deprecated|do not use|todo|internal|"
    r"for internal use|override|placeholder|not implemented|dummy|helper (function|class)|"
    r"usage:|example|examples|note:|warning:|returns?:|args:|parameters)", re.I)
# Words that carry no content: not counted when judging how much of a summary survived.
STOPWORDS = frozenset(
    "the a an and or of to in on for with by from as at is are be this that these those it its "
    "if not no into via when which who whose will can may should must has have was were been "
    "any all each some other than then also only such their there".split())
_WORD_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_TOKEN = re.compile(r"\w+")
_ABBREVIATIONS = {"e.g.": "eg\u2024", "i.e.": "ie\u2024", "etc.": "etc\u2024",
                  "vs.": "vs\u2024"}  # U+2024 (one-dot leader) keeps them out of sentence ends


class TemplateConfig(BaseModel):
    """How template questions are drawn from the docstring corpus."""

    n: int | None = Field(DEFAULT_TEMPLATE_QUESTIONS, ge=1)  # questions; None = every document
    seed: int = 0  # which documents and templates; the same seed gives the same set
    min_summary_words: int = Field(MIN_SUMMARY_WORDS, ge=1)
    max_summary_words: int = Field(MAX_SUMMARY_WORDS, ge=2)


def template_questions(documents: Iterable, n: int | None = DEFAULT_TEMPLATE_QUESTIONS,
                       seed: int = 0, name: str | None = None,
                       config: TemplateConfig | None = None) -> EvalSet:
    """Questions generated from docstring documents (``py:`` source ids), one per sampled
    document, whose answer is that document. ``documents`` are pipelines.rag.Document or any
    objects with ``source_id``/``text`` (``origin`` optional), or corpus records (dicts with
    ``id``/``text``/``origin``).

    A question never contains its target's identifier: not the qualname, not the function or
    class name, not the module's last component, nor any of their snake_case/CamelCase word
    parts (a question word that contains one is dropped). Documents whose summary line is too
    short, generic, shared with another document, or mostly made of those words are skipped.
    ``config`` (when given) replaces ``n`` and ``seed``."""
    config = config or TemplateConfig(n=n, seed=seed)
    candidates = _template_candidates(documents, config)
    if not candidates:
        raise EvalSetError("no document qualifies for a template question: template questions "
                           "need `py:` docstring documents with a specific summary line of at "
                           f"least {config.min_summary_words} words")
    rng = random.Random(config.seed)
    chosen = candidates if config.n is None or config.n >= len(candidates) else \
        rng.sample(candidates, config.n)
    questions = sorted(chosen, key=lambda q: q.expected_source_ids[0])
    return EvalSet(name or f"template-seed{config.seed}", tuple(questions))


def _template_candidates(documents: Iterable, config: TemplateConfig) -> list[EvalQuestion]:
    """Every qualifying document's question, sorted by source id (input order never matters)."""
    summaries = {}
    for doc in documents:
        source_id, text, origin = _doc_fields(doc)
        if not source_id.startswith("py:") or not text:
            continue
        summary = summary_line(text, config.max_summary_words)
        if summary and _specific(summary, config.min_summary_words):
            summaries[source_id] = (summary, origin)
    # A summary several documents share (overloads, re-exports) has no single right answer.
    shared = Counter(_normalised(s) for s, _ in summaries.values())
    drafts = {}
    for source_id in sorted(summaries):
        summary, origin = summaries[source_id]
        if shared[_normalised(summary)] == 1:
            drafted = _question_for(source_id, summary, origin, config.seed)
            if drafted is not None:
                drafts[source_id] = drafted
    # Summaries that differed only in their hidden words ("Wrapper around Run ..." and
    # "Wrapper around LoggedModel ...") read the same once those are gone: ambiguous too.
    collisions = Counter(_normalised(stripped) for _, stripped in drafts.values())
    return [EvalQuestion(question, (source_id,), "", f"template:seed{config.seed}")
            for source_id, (question, stripped) in drafts.items()
            if collisions[_normalised(stripped)] == 1]


def _doc_fields(doc) -> tuple[str, str, str]:
    if isinstance(doc, Mapping):
        return (doc.get("source_id") or doc.get("id") or "", doc.get("text") or "",
                doc.get("origin") or "")
    return doc.source_id, doc.text, getattr(doc, "origin", "") or ""


def summary_line(docstring: str, max_words: int = MAX_SUMMARY_WORDS) -> str:
    """The first sentence of the first prose paragraph, reST markup reduced to plain words,
    cut to ``max_words``; "" when the docstring opens with code or a directive."""
    paragraph = next((p for p in re.split(r"\n\s*\n", docstring.strip()) if p.strip()), "")
    text = " ".join(paragraph.split())
    if not text or not text[0].isalpha() or text.startswith(("..", ">>>")):
        return ""
    text = _plain(text)
    for abbreviation, protected in _ABBREVIATIONS.items():
        text = text.replace(abbreviation, protected)
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])|(?<=[.!?])$", text, maxsplit=1)[0]
    for abbreviation, protected in _ABBREVIATIONS.items():
        sentence = sentence.replace(protected, abbreviation)
    words = sentence.split()
    return " ".join(words[:max_words]).rstrip(" .:;,")


def _plain(text: str) -> str:
    """reST/markdown markup to words: roles keep their target's display name, links their
    text; literals lose their quotes; URLs go."""
    text = re.sub(r":[\w:.-]+:`~?([^`<]*?)\s*(?:<[^>]*>)?`",
                  lambda m: m.group(1).rsplit(".", 1)[-1] if "." in m.group(1) and
                  " " not in m.group(1) else m.group(1), text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", text)  # `text <url>`_
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"`+([^`]*)`+_?", r"\1", text)  # ``literal``, `ref`_, `code`
    text = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", text)
    return " ".join(text.split())


def _specific(summary: str, min_words: int) -> bool:
    words = re.findall(r"[A-Za-z][\w'-]*", summary)
    return len(words) >= min_words and not GENERIC_SUMMARY.match(summary)


def _normalised(summary: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", summary.lower()))


def target_identifiers(source_id: str, origin: str = "") -> tuple[list[str], str]:
    """(identifier components a question must not reveal, kind) for a ``py:`` source id:
    the module's last component plus every qualname component. The module/qualname split
    comes from the document's origin (``site-packages/<path>.py:<line>``) when it parses;
    otherwise the first CamelCase component is taken as the class (the module is the
    component before it), else the last component as the function — over-hiding at worst."""
    dotted = source_id.removeprefix("py:").split("#", 1)[0]
    parts = dotted.split(".")
    module = _module_from_origin(origin)
    if module and (dotted == module or dotted.startswith(module + ".")):
        qualname = dotted[len(module) + 1:].split(".") if dotted != module else []
        hidden = [module.rsplit(".", 1)[-1], *qualname]
    else:
        classes = [i for i, p in enumerate(parts) if p[:1].isupper()]
        start = classes[0] - 1 if classes and classes[0] > 0 else len(parts) - 2
        hidden = parts[max(start, 0):]
        qualname = hidden[1:] if len(hidden) > 1 else hidden
    if not qualname:
        kind = "module"
    elif qualname[-1][:1].isupper():
        kind = "class"
    else:
        kind = "method" if len(qualname) > 1 and qualname[-2][:1].isupper() else "function"
    return hidden, kind


def _module_from_origin(origin: str) -> str | None:
    match = re.match(r"^[^/]+/(.+?)\.py:\d+$", origin)
    if not match:
        return None
    module = match.group(1).removesuffix("/__init__").replace("/", ".")
    return module if all(p.isidentifier() for p in module.split(".")) else None


def hidden_words(identifiers: Iterable[str]) -> set[str]:
    """Lowercased identifiers and their snake_case/CamelCase word parts (two letters or more)."""
    words = set()
    for identifier in identifiers:
        words.add(identifier.lower())
        for piece in identifier.split("_"):
            words.update(p.lower() for p in _WORD_PART.findall(piece) if len(p) >= 2)
    return words


def reveals(text: str, hidden: set[str]) -> bool:
    """Whether any word of ``text`` gives a hidden identifier away: it equals a hidden word,
    one of its own word parts does, it contains a hidden word of three letters or more
    ("logs" gives away ``log``), or it is the start (four letters or more) of one."""
    return any(_reveals_token(token, hidden) for token in _TOKEN.findall(text))


def _reveals_token(token: str, hidden: set[str]) -> bool:
    lowered = token.lower()
    if lowered in hidden or any(h in lowered for h in hidden if len(h) >= 3):
        return True
    if len(lowered) >= 4 and any(h.startswith(lowered) for h in hidden):
        return True  # "partition" gives away ``partitionedBy``
    return any(p.lower() in hidden for piece in token.split("_")
               for p in _WORD_PART.findall(piece))


def _strip_hidden(summary: str, hidden: set[str]) -> str:
    """The summary without the words that reveal a hidden identifier, punctuation tidied."""
    kept = [word for word in summary.split()
            if not any(_reveals_token(t, hidden) for t in _TOKEN.findall(word))]
    text = " ".join(kept)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # "()" left by a removed call
    text = re.sub(r"\s+([,;:)]|\.(?=\s|$))", r"\1", text)  # "word ," -> "word,"
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    if text.count("(") > text.count(")"):
        text = re.sub(r"\s*\([^()]*$", "", text)  # "(for" whose closing words were hidden
    return " ".join(text.split()).strip(" ,;:-")


def _question_for(source_id: str, summary: str, origin: str, seed: int
                  ) -> tuple[str, str] | None:
    """(question, the summary it was made from with hidden words removed), or None."""
    identifiers, kind = target_identifiers(source_id, origin)
    hidden = hidden_words(identifiers)
    stripped = _strip_hidden(summary, hidden)
    kept, before = _content_words(stripped), _content_words(summary)
    if kept < MIN_KEPT_WORDS or kept < MIN_KEPT_FRACTION * before:
        return None  # too little of the summary is left to describe the target
    first_kept = bool(stripped) and summary.split()[0] == stripped.split()[0]
    rng = random.Random(f"{seed}:{source_id}")  # per document: stable when the corpus changes
    for template in _templates(summary, kind, first_kept, rng):
        question = " ".join(template.format(s=_lower_first(stripped), kind=kind,
                                            S=stripped).split())
        if not reveals(question, hidden):
            return question, stripped
    return None


def _content_words(summary: str) -> int:
    return sum(1 for t in _TOKEN.findall(summary)
               if len(t) >= 3 and t.isalpha() and t.lower() not in STOPWORDS)


def _templates(summary: str, kind: str, first_kept: bool, rng: random.Random) -> list[str]:
    """Question templates that fit the summary's grammar, in a seeded order; description-style
    ones last, as the fallback (and whenever the opening word had to go)."""
    first = summary.split()[0].lower()
    fitting: list[str] = []
    if first_kept and first in ("a", "an"):
        fitting = ["Which {kind} is {s}?", "What is {s}?"]
    elif first_kept and kind in ("function", "method", "module") and first in _VERBS:
        fitting = ["How do I {s}?", "What should I call to {s}?", "How can I {s}?"]
    elif first_kept and kind in ("function", "method") and _base_verb(first) in _VERBS:
        fitting = ["Which {kind} {s}?", "What API {s}?"]
    rng.shuffle(fitting)
    fallback = ["Which {kind} is described as: {S}?", "Where is this documented: {S}?",
                "What API matches this description: {S}?"]
    rng.shuffle(fallback)
    return fitting + fallback


# Imperative verbs docstring summaries open with ("Return ...", "Create ..."): only these get
# the "How do I ...?" / "Which function returns ...?" templates; other openings are described.
_VERBS = frozenset("""
add aggregate append apply assert build cache calculate call cancel cast check clear close
collect combine compare compute concatenate configure construct convert copy count create
decode define delete deploy describe deserialize disable display download drop dump emit
enable encode evaluate execute expand explode export extract fetch fill filter find fit flush
format generate get group handle infer initialize insert join list load log look make map mark
merge open parse partition pause persist plot predict prepare print process publish pull push
query raise read record register reload remove rename render repartition replace reset resolve
restore resume retrieve retry return round run sample save schedule score search select send
serialize serve set show sort split start stop store submit sync take test trace track train
transform translate trigger truncate unpersist update upload validate visualize wait wrap write
""".split())


def _base_verb(word: str) -> str:
    """'returns' -> 'return', 'applies' -> 'apply', 'pushes' -> 'push' (for the verb check)."""
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else ""


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and (len(first) == 1 or first[1:].islower()):
        return text[0].lower() + text[1:]
    return text


# =============================================================================================
# Evaluating one retriever
# =============================================================================================

def dedup_source_ids(source_ids: Iterable, k: int | None = None) -> list[str]:
    """Source ids in rank order, each once (several chunks of one document count once),
    cut to ``k``. Items may be ids or hits with a ``source_id``."""
    unique = list(dict.fromkeys(_source_id(item) for item in source_ids))
    return unique if k is None else unique[:k]


def _source_id(item) -> str:
    source_id = item if isinstance(item, str) else getattr(item, "source_id", None)
    if not isinstance(source_id, str):
        raise TypeError(f"retriever returned {item!r}: expected a source id string or a hit "
                        f"with a source_id")
    return source_id


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = tuple(sorted(set(ks)))
    if not values or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in values):
        raise ValueError(f"ks must be positive integers, got {list(ks)!r}")
    return values


def evaluate_retriever(retrieve: Callable[[str, int], Sequence], eval_set: EvalSet,
                       ks: Iterable[int] = KS, run=None, *, run_name: str = "retriever",
                       experiment: str = EXPERIMENT, params: dict | None = None) -> dict:
    """Ask ``retrieve(question, max(ks))`` every question, then score the ranked source ids
    with MLflow's retriever evaluation in an MLflow run of its own: a child of ``run`` (an
    infra.tracking.Run or a run id) when given, else a top-level run in ``experiment``.

    ``retrieve`` should give ``k`` distinct source ids when the corpus has them (fetch more
    chunks than k, then dedup): MLflow's precision@k divides by min(k, ids retrieved), so a
    short list would flatter precision. Ids are deduplicated here too, keeping rank order.

    Returns ``{"metrics": {"precision_at_1": mean, ...}, "per_question": [{question,
    expected, retrieved, hit_rank, precision_at_k..., recall_at_k..., ndcg_at_k...}],
    "run_id", "eval_set", "ks"}`` — JSON-able, so a grid cell can be cached as is."""
    ks = check_ks(ks)
    if not len(eval_set):
        raise EvalSetError(f"eval set {eval_set.name!r} has no questions")
    depth = max(ks)
    retrieved = []
    for index, q in enumerate(eval_set, start=1):
        try:
            retrieved.append(dedup_source_ids(retrieve(q.question, depth), depth))
        except Exception as exc:
            raise RuntimeError(f"retriever failed on question {index} of {eval_set.name!r} "
                               f"({q.question!r}): {exc}") from exc
    expected = [list(q.expected_source_ids) for q in eval_set]
    run_params = {"eval_set": eval_set.describe(), "ks": list(ks), **(params or {})}
    scores, means, run_id = mlflow_retriever_scores(
        [q.question for q in eval_set], expected, retrieved, ks, run, run_name, experiment,
        run_params)
    per_question = []
    for i, q in enumerate(eval_set):
        row = {"question": q.question, "eval_set": q.part or eval_set.name,
               "expected": expected[i], "retrieved": retrieved[i],
               "hit_rank": hit_rank(expected[i], retrieved[i])}
        row.update({name: values[i] for name, values in scores.items()})
        per_question.append(row)
    return {"metrics": means, "per_question": per_question, "run_id": run_id,
            "eval_set": eval_set.describe(), "ks": list(ks)}


def hit_rank(expected: Sequence[str], retrieved: Sequence[str]) -> int | None:
    """1-based rank of the first expected id among the retrieved ones; None for a miss."""
    wanted = set(expected)
    return next((rank for rank, s in enumerate(retrieved, start=1) if s in wanted), None)


def metric_names(ks: Iterable[int]) -> list[str]:
    return [f"{family}_at_{k}" for k in check_ks(ks) for family in METRICS]


def mlflow_retriever_scores(questions: list[str], expected: list[list[str]],
                            retrieved: list[list[str]], ks: Iterable[int], run=None,
                            run_name: str = "retriever", experiment: str = EXPERIMENT,
                            params: dict | None = None
                            ) -> tuple[dict[str, list[float]], dict[str, float], str]:
    """(per-question scores by metric, means by metric, run id) from
    ``mlflow.models.evaluate(model_type="retriever")`` on a static table of expected vs
    retrieved ids. The default evaluator scores ``retriever_k`` = max(ks) itself; the other
    ks come as extra metrics. MLflow logs the means (``<metric>/mean``, ``/variance``,
    ``/p90``) and the per-question table (``eval_results_table.json``) to the run."""
    from infra import tracking
    from infra.settings import apply_environment

    apply_environment()  # MLflow's fluent API reads the workspace store from the environment
    import mlflow
    import pandas as pd

    ks = check_ks(ks)
    depth = max(ks)
    frame = pd.DataFrame({"question": questions, "expected": expected, "retrieved": retrieved})
    parent = getattr(run, "run_id", run)
    where = tracking.experiment_of(parent) if parent else experiment
    with tracking.start_run(where, run_name, parent=parent) as child:
        child.log_params(params or {})
        with warnings.catch_warnings():
            # mlflow.metrics.*_at_k and the legacy evaluate are deprecated (since 3.4) in
            # favour of mlflow.genai, which has no ranked-id retrieval metrics: still the tool.
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=r".*(mlflow\.metrics|mlflow\.evaluate|deprecated)")
            extra = [make(k) for k in ks if k != depth for make in
                     (mlflow.metrics.precision_at_k, mlflow.metrics.recall_at_k,
                      mlflow.metrics.ndcg_at_k)]
            # evaluate() logs into the thread's active run: make it the child, explicitly.
            with mlflow.start_run(run_id=child.run_id, nested=True):
                result = mlflow.models.evaluate(
                    data=frame, model_type="retriever", targets="expected",
                    predictions="retrieved", evaluators="default",
                    evaluator_config={"retriever_k": depth}, extra_metrics=extra)
    # result.tables looks the run up in the *active* experiment; read the logged table itself.
    logged = result.artifacts["eval_results_table"].content
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    if list(table["question"]) != list(questions):
        raise RuntimeError("MLflow's eval_results_table rows do not match the questions' order")
    names = metric_names(ks)
    missing = [n for n in names if f"{n}/mean" not in result.metrics]
    if missing:
        raise RuntimeError(f"MLflow's retriever evaluation did not compute {missing}: check "
                           f"that expected and retrieved are lists of string ids")
    scores = {n: [round(float(v), 6) for v in table[f"{n}/score"]] for n in names}
    means = {n: round(float(result.metrics[f"{n}/mean"]), 6) for n in names}
    return scores, means, child.run_id


# =============================================================================================
# The grid: chunk size x retriever, each cell cached
# =============================================================================================

class GridCell(NamedTuple):
    """One grid cell: the chunk table (by chunk size, in embedder tokens) and the retriever."""

    chunk_size: int
    retriever: Retriever

    @property
    def name(self) -> str:
        return f"chunk{self.chunk_size}-{self.retriever}"


class GridConfig(BaseModel):
    """The evaluate-retrieval grid (a flow parameter)."""

    # Chunk sizes in embedder tokens: one table each (all-MiniLM-L6-v2 reads at most 256).
    chunk_sizes: list[int] = Field(default_factory=lambda: list(CHUNK_SIZES))
    # Retrievers read from each table: LanceDB vector search, its full-text index, and their
    # reciprocal-rank fusion.
    retrievers: list[Retriever] = Field(default_factory=lambda: list(RETRIEVERS))
    max_k: int = Field(10, ge=1, le=100)  # metrics at every k from 1 to max_k
    # the best cell maximises this mean; None: nDCG at max_k (rank-aware, uses the whole list)
    metric: str | None = None

    @field_validator("chunk_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("chunk_sizes must be positive token counts")
        return value

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(range(1, self.max_k + 1))

    def cells(self) -> list[GridCell]:
        return grid_cells(self.chunk_sizes, self.retrievers)


def grid_cells(chunk_sizes: Iterable[int] = CHUNK_SIZES,
               retrievers: Iterable[str] = RETRIEVERS) -> list[GridCell]:
    return [GridCell(size, retriever) for size in dict.fromkeys(chunk_sizes)
            for retriever in dict.fromkeys(retrievers)]


@dataclass
class CellResult:
    """One evaluated (or cache-read) grid cell."""

    cell: GridCell
    key: str  # the cache key it was stored under
    table_version: str  # what the cell read (table name and version, as given)
    metrics: dict[str, float]  # mean per metric name, e.g. ndcg_at_10
    per_question: list[dict]
    run_id: str | None  # the MLflow run that computed it (an earlier one on a cache hit)
    cached: bool = False
    eval_set: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cell": self.cell._asdict(), "name": self.cell.name, "key": self.key,
                "table_version": self.table_version, "metrics": self.metrics,
                "per_question": self.per_question, "run_id": self.run_id,
                "cached": self.cached, "eval_set": self.eval_set}


def code_version() -> str:
    """This module's source and MLflow's version: either changing invalidates cached cells."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(importlib.metadata.version("mlflow").encode())
    return digest.hexdigest()[:16]


def cell_key(cell: GridCell, table_version: str, eval_set: EvalSet, ks: Iterable[int],
             extra: Mapping | None = None) -> str:
    """Cache key of one cell: its config, the table version it reads, the eval set's content
    hash, the ks, this code's version, and anything else the caller says matters (e.g. the
    embedder, the retriever code's hash)."""
    payload = {"cell": cell._asdict(), "table": str(table_version),
               "eval_set": eval_set.content_hash, "ks": list(check_ks(ks)),
               "code": code_version(), "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_grid(cells: Iterable[GridCell], retrieve_for_cell: Callable[[GridCell], Callable],
                  eval_set: EvalSet, cache_dir: Path | str, *,
                  table_version: Callable[[GridCell], object] | Mapping,
                  ks: Iterable[int] = KS, run=None, out_dir: Path | str | None = None,
                  key_extra: Mapping | None = None, metric: str | None = None
                  ) -> list[CellResult]:
    """Evaluate every cell, reading back the cells whose key is already in ``cache_dir``.

    ``retrieve_for_cell(cell)`` gives the cell's ``retrieve(question, k)``; it is only called
    for cells not in the cache (opening an index can be costly). ``table_version`` says what a
    cell reads — a function of the cell, or a mapping by cell or by chunk size — e.g.
    ``"docs__recursive-128-16__all-minilm-l6-v2@7"``: a new table version means a new key.
    With ``run`` (a parent MLflow run), each computed cell gets a child run and the parent
    gets every cell's metric at step k, the best cell, and the reports; with ``out_dir``, the
    reports (write_grid_reports) are written there."""
    cells = list(cells)
    ks = check_ks(ks)
    _check_cells(cells)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    for cell in cells:
        version = str(_table_version(table_version, cell))
        key = cell_key(cell, version, eval_set, ks, key_extra)
        path = cache / f"{cell.name}-{key[:20]}.json"
        stored = _read_cached(path, key)
        if stored is not None:
            results.append(_cell_result(stored, cached=True))
            continue
        evaluated = evaluate_retriever(
            retrieve_for_cell(cell), eval_set, ks, run, run_name=cell.name,
            params={"chunk_size": cell.chunk_size, "retriever": cell.retriever,
                    "table_version": version, "cache_key": key})
        record = {"key": key, "cell": cell._asdict(), "table_version": version, **evaluated}
        _write_json_atomic(path, record)
        results.append(_cell_result(record, cached=False))
    if out_dir is not None:
        write_grid_reports(results, out_dir, metric)
    if run is not None:
        log_grid(results, run, out_dir, metric)
    return results


def _check_cells(cells: list[GridCell]) -> None:
    if not cells:
        raise ValueError("the grid has no cells")
    for cell in cells:
        if cell.retriever not in RETRIEVERS:
            raise ValueError(f"grid cell {cell}: unknown retriever {cell.retriever!r} "
                             f"(expected one of {', '.join(RETRIEVERS)})")
        if not isinstance(cell.chunk_size, int) or cell.chunk_size < 1:
            raise ValueError(f"grid cell {cell}: chunk_size must be a positive token count")
    duplicates = [c.name for c, n in Counter(cells).items() if n > 1]
    if duplicates:
        raise ValueError(f"grid cells repeated: {', '.join(duplicates)}")


def _table_version(table_version, cell: GridCell):
    if callable(table_version):
        return table_version(cell)
    for lookup in (cell, cell.chunk_size):
        if lookup in table_version:
            return table_version[lookup]
    raise KeyError(f"no table version for grid cell {cell.name} (give one per cell or per "
                   f"chunk size)")


def _read_cached(path: Path, key: str) -> dict | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or torn: compute again
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temp file beside ``path`` and rename: a crash never leaves half a cell."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _cell_result(record: dict, cached: bool) -> CellResult:
    return CellResult(GridCell(**record["cell"]), record["key"], record["table_version"],
                      record["metrics"], record["per_question"], record.get("run_id"), cached,
                      record.get("eval_set", {}))


def best_cell(results: Sequence[CellResult], metric: str | None = None) -> CellResult:
    """The cell with the highest mean ``metric`` (the first one in grid order on a tie);
    None = nDCG at the largest k computed."""
    metric = resolve_metric(results, metric)
    if metric not in results[0].metrics:
        raise ValueError(f"metric {metric!r} not computed (have "
                         f"{', '.join(results[0].metrics)})")
    return max(results, key=lambda r: r.metrics[metric])


def resolve_metric(results: Sequence[CellResult], metric: str | None) -> str:
    if not results:
        raise ValueError("no grid results to choose from")
    return metric or f"ndcg_at_{max(_ks_of(results[0]))}"


def grid_summary(results: Sequence[CellResult], metric: str | None = None) -> dict:
    """A small JSON-able manifest: the best cell and each cell's headline numbers."""
    metric = resolve_metric(results, metric)
    best = best_cell(results, metric)
    return {"metric": metric, "best": {"cell": best.cell.name, metric: best.metrics[metric]},
            "eval_set": best.eval_set,
            "cells": [{"cell": r.cell.name, "cached": r.cached, "run_id": r.run_id,
                       "table_version": r.table_version,
                       **{m: r.metrics[m] for m in _headline(r.metrics, metric)}}
                      for r in results],
            "by_eval_set": {part: {"questions": count,
                                   "best": {"cell": max(cells, key=cells.get),
                                            metric: max(cells.values())},
                                   "cells": cells}
                            for part, (count, cells) in part_scores(results, metric).items()}}


def part_scores(results: Sequence[CellResult], metric: str
                ) -> dict[str, tuple[int, dict[str, float]]]:
    """{eval set: (questions, {cell: mean metric})} for each set a combined eval set was
    made of — template questions and hand-written ones can favour different cells. The means
    are over the per-question scores MLflow gave, as the cells' own means are."""
    parts: dict[str, tuple[int, dict[str, float]]] = {}
    for r in results:
        by_part: dict[str, list[float]] = {}
        for row in r.per_question:
            by_part.setdefault(row.get("eval_set", ""), []).append(row[metric])
        for part, values in by_part.items():
            parts.setdefault(part, (len(values), {}))[1][r.cell.name] = (
                sum(values) / len(values))
    return parts


def _headline(metrics: Mapping[str, float], metric: str) -> list[str]:
    ks = sorted({int(name.rsplit("_", 1)[1]) for name in metrics})
    top = ks[-1]
    wanted = [f"precision_at_{ks[0]}", "recall_at_5", f"recall_at_{top}", f"ndcg_at_{top}",
              metric]
    return list(dict.fromkeys(m for m in wanted if m in metrics))


# ----------------------------------------------------------------------- reports ---------

PER_QUESTION_CSV = "grid_per_question.csv"
METRICS_CSV = "grid_metrics.csv"
CHART_PNG = "grid_metrics.png"
MARKDOWN_FILE = "grid.md"


def write_grid_reports(results: Sequence[CellResult], out_dir: Path | str,
                       metric: str | None = None) -> dict[str, str]:
    """The per-question table (CSV), metrics per cell and k (CSV), a chart of each metric
    against k per cell (PNG) and the markdown report, in ``out_dir``: {kind: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"per_question_csv": out / PER_QUESTION_CSV, "metrics_csv": out / METRICS_CSV,
             "chart_png": out / CHART_PNG, "markdown": out / MARKDOWN_FILE}
    _write_per_question_csv(results, paths["per_question_csv"])
    _write_metrics_csv(results, paths["metrics_csv"])
    plot_grid(results, paths["chart_png"])
    paths["markdown"].write_text(grid_markdown(results, metric))
    return {kind: str(path) for kind, path in paths.items()}


def _ks_of(result: CellResult) -> list[int]:
    return sorted({int(name.rsplit("_", 1)[1]) for name in result.metrics})


def _write_per_question_csv(results: Sequence[CellResult], path: Path) -> None:
    score_columns = metric_names(_ks_of(results[0])) if results else []
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cell", "chunk_size", "retriever", "eval_set", "question",
                         "expected", "retrieved", "hit_rank", *score_columns])
        for r in results:
            for row in r.per_question:
                writer.writerow([r.cell.name, r.cell.chunk_size, r.cell.retriever,
                                 row.get("eval_set", ""), row["question"],
                                 ";".join(row["expected"]),
                                 ";".join(row["retrieved"]),
                                 "" if row["hit_rank"] is None else row["hit_rank"],
                                 *(row.get(c, "") for c in score_columns)])


def _write_metrics_csv(results: Sequence[CellResult], path: Path) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["cell", "chunk_size", "retriever", "k", *METRICS, "cached", "run_id"])
        for r in results:
            for k in _ks_of(r):
                writer.writerow([r.cell.name, r.cell.chunk_size, r.cell.retriever, k,
                                 *(r.metrics[f"{m}_at_{k}"] for m in METRICS), r.cached,
                                 r.run_id or ""])


def plot_grid(results: Sequence[CellResult], path: Path | str) -> Path:
    """One panel per metric (precision, recall, nDCG) against k; a line per cell, colour by
    retriever, line style by chunk size. Drawn without pyplot (no global figure state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(METRICS), sharey=True)
    sizes = sorted({r.cell.chunk_size for r in results})
    styles = ["-", "--", ":", "-."]
    colours = {"vector": "tab:blue", "fts": "tab:orange", "hybrid": "tab:green"}
    for axis, family in zip(axes, METRICS):
        for r in results:
            ks = _ks_of(r)
            axis.plot(ks, [r.metrics[f"{family}_at_{k}"] for k in ks], marker="o",
                      markersize=3, color=colours.get(r.cell.retriever),
                      linestyle=styles[sizes.index(r.cell.chunk_size) % len(styles)],
                      label=r.cell.name)
        axis.set_title(f"{'nDCG' if family == 'ndcg' else family}@k")
        axis.set_xlabel("k")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mean over questions")
    axes[-1].legend(fontsize="small", loc="best")
    if results and results[0].eval_set:
        info = results[0].eval_set
        figure.suptitle(f"Retriever grid on {info.get('name')} ({info.get('questions')} "
                        f"questions)")
    figure.savefig(path, dpi=110)
    return Path(path)


def grid_markdown(results: Sequence[CellResult], metric: str | None = None) -> str:
    """The grid as markdown (for a Prefect artifact): one row per cell with headline metrics,
    the best cell marked, then the best cell's per-question table."""
    metric = resolve_metric(results, metric)
    best = best_cell(results, metric)
    columns = _headline(best.metrics, metric)
    info = best.eval_set
    lines = [f"# Retriever evaluation: {info.get('name', 'eval set')}", "",
             f"{info.get('questions', len(best.per_question))} questions (eval set hash "
             f"`{str(info.get('hash', ''))[:12]}`). Best cell by {metric}: "
             f"**{best.cell.name}** = {best.metrics[metric]:.3f}.", "",
             "| cell | chunk size | retriever | " + " | ".join(columns) + " | cached |",
             "|---|---:|---|" + "---:|" * len(columns) + "---|"]
    for r in results:
        name = f"**{r.cell.name}**" if r is best else r.cell.name
        values = " | ".join(f"{r.metrics[c]:.3f}" for c in columns)
        lines.append(f"| {name} | {r.cell.chunk_size} | {r.cell.retriever} | {values} | "
                     f"{'yes' if r.cached else 'no'} |")
    lines += _part_lines(results, metric)
    top = max(_ks_of(best))
    lines += ["", f"## Per question, {best.cell.name}", "",
              f"| question | expected | top retrieved | hit rank | recall@{top} | ndcg@{top} |",
              "|---|---|---|---:|---:|---:|"]
    for row in best.per_question[:MARKDOWN_ROWS]:
        lines.append("| " + " | ".join([
            _md(row["question"]), _md(", ".join(row["expected"])),
            _md(", ".join(row["retrieved"][:3])),
            "miss" if row["hit_rank"] is None else str(row["hit_rank"]),
            f"{row[f'recall_at_{top}']:.2f}", f"{row[f'ndcg_at_{top}']:.2f}"]) + " |")
    hidden = len(best.per_question) - MARKDOWN_ROWS
    if hidden > 0:
        lines += ["", f"... {hidden} more questions in {PER_QUESTION_CSV}."]
    return "\n".join(lines) + "\n"


def _part_lines(results: Sequence[CellResult], metric: str) -> list[str]:
    """A table of ``metric`` per cell for each eval set of a combined one (none for one)."""
    parts = part_scores(results, metric)
    if len(parts) < 2:
        return []
    names = list(parts)
    lines = ["", f"## {metric} by eval set", "",
             "| cell | " + " | ".join(f"{_md(n)} ({parts[n][0]})" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for r in results:
        values = []
        for name in names:
            cells = parts[name][1]
            value = f"{cells[r.cell.name]:.3f}"
            values.append(f"**{value}**" if r.cell.name == max(cells, key=cells.get) else value)
        lines.append(f"| {r.cell.name} | " + " | ".join(values) + " |")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def log_grid(results: Sequence[CellResult], run, out_dir: Path | str | None = None,
             metric: str | None = None) -> None:
    """Log the grid to the parent run: each cell's metric families at step k (MLflow charts
    them against k), the best cell, and the reports in ``out_dir`` as artifacts."""
    from infra import tracking

    metric = resolve_metric(results, metric)
    handle = run if hasattr(run, "log_metrics") else tracking.Run(str(run))
    for r in results:
        for k in _ks_of(r):
            handle.log_metrics({f"{r.cell.name}.{family}": r.metrics[f"{family}_at_{k}"]
                                for family in METRICS}, step=k)
    best = best_cell(results, metric)
    handle.log_metrics({f"best.{metric}": best.metrics[metric]})
    handle.set_tags({"best_cell": best.cell.name, "eval_set_hash": best.eval_set.get("hash", "")})
    if out_dir is not None:
        handle.log_artifacts(out_dir, "retrieval_grid")
