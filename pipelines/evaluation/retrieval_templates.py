"""Template questions generated from docstring documents, and the eval set a retriever is
scored on. A template question puts a document's summary line, with every word of its target's
identifier taken out, into a question ("How do I ...?", "Which function ...?"), so a retriever
cannot find the answer by matching the name; the same seed gives the same set in any input
order. :func:`eval_set_for` combines them with the hand-written questions and user files.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from pipelines.evaluation.retrieval_sets import (
    EvalQuestion,
    EvalSet,
    EvalSetError,
    hand_written_questions,
    load_eval_set,
)

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
    r"usage:|example|examples|note:|warning:|returns?:|args:|parameters)",
    re.I,
)
# Words that carry no content: not counted when judging how much of a summary survived.
STOPWORDS = frozenset(
    "the a an and or of to in on for with by from as at is are be this that these those it its "
    "if not no into via when which who whose will can may should must has have was were been "
    "any all each some other than then also only such their there".split()
)
_WORD_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_TOKEN = re.compile(r"\w+")
_ABBREVIATIONS = {
    "e.g.": "eg\u2024",
    "i.e.": "ie\u2024",
    "etc.": "etc\u2024",
    "vs.": "vs\u2024",
}  # U+2024 (one-dot leader) keeps them out of sentence ends


class TemplateConfig(BaseModel):
    """How template questions are drawn from the docstring corpus."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(DEFAULT_TEMPLATE_QUESTIONS, ge=1)  # questions; None = every document
    seed: int = 0  # which documents and templates; the same seed gives the same set
    min_summary_words: int = Field(MIN_SUMMARY_WORDS, ge=1)
    max_summary_words: int = Field(MAX_SUMMARY_WORDS, ge=2)


def template_questions(
    documents: Iterable,
    n: int | None = DEFAULT_TEMPLATE_QUESTIONS,
    seed: int = 0,
    name: str | None = None,
    config: TemplateConfig | None = None,
) -> EvalSet:
    """Questions generated from docstring documents (``py:`` source ids), one per sampled
    document, whose answer is that document. ``documents`` are RAG documents (pipelines.rag) or any
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
        raise EvalSetError(
            "no document qualifies for a template question: template questions "
            "need `py:` docstring documents with a specific summary line of at "
            f"least {config.min_summary_words} words"
        )
    rng = random.Random(config.seed)
    chosen = (
        candidates
        if config.n is None or config.n >= len(candidates)
        else rng.sample(candidates, config.n)
    )
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
    return [
        EvalQuestion(question, (source_id,), "", f"template:seed{config.seed}")
        for source_id, (question, stripped) in drafts.items()
        if collisions[_normalised(stripped)] == 1
    ]


def _doc_fields(doc) -> tuple[str, str, str]:
    if isinstance(doc, Mapping):
        return (
            doc.get("source_id") or doc.get("id") or "",
            doc.get("text") or "",
            doc.get("origin") or "",
        )
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
    text = re.sub(
        r":[\w:.-]+:`~?([^`<]*?)\s*(?:<[^>]*>)?`",
        lambda m: (
            m.group(1).rsplit(".", 1)[-1]
            if "." in m.group(1) and " " not in m.group(1)
            else m.group(1)
        ),
        text,
    )
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
        qualname = dotted[len(module) + 1 :].split(".") if dotted != module else []
        hidden = [module.rsplit(".", 1)[-1], *qualname]
    else:
        classes = [i for i, p in enumerate(parts) if p[:1].isupper()]
        start = classes[0] - 1 if classes and classes[0] > 0 else len(parts) - 2
        hidden = parts[max(start, 0) :]
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
    return any(
        p.lower() in hidden for piece in token.split("_") for p in _WORD_PART.findall(piece)
    )


def _strip_hidden(summary: str, hidden: set[str]) -> str:
    """The summary without the words that reveal a hidden identifier, punctuation tidied."""
    kept = [
        word
        for word in summary.split()
        if not any(_reveals_token(t, hidden) for t in _TOKEN.findall(word))
    ]
    text = " ".join(kept)
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)  # "()" left by a removed call
    text = re.sub(r"\s+([,;:)]|\.(?=\s|$))", r"\1", text)  # "word ," -> "word,"
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    if text.count("(") > text.count(")"):
        text = re.sub(r"\s*\([^()]*$", "", text)  # "(for" whose closing words were hidden
    return " ".join(text.split()).strip(" ,;:-")


def _question_for(source_id: str, summary: str, origin: str, seed: int) -> tuple[str, str] | None:
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
        question = " ".join(
            template.format(s=_lower_first(stripped), kind=kind, S=stripped).split()
        )
        if not reveals(question, hidden):
            return question, stripped
    return None


def _content_words(summary: str) -> int:
    return sum(
        1
        for t in _TOKEN.findall(summary)
        if len(t) >= 3 and t.isalpha() and t.lower() not in STOPWORDS
    )


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
    fallback = [
        "Which {kind} is described as: {S}?",
        "Where is this documented: {S}?",
        "What API matches this description: {S}?",
    ]
    rng.shuffle(fallback)
    return fitting + fallback


# Imperative verbs docstring summaries open with ("Return ...", "Create ..."): only these get
# the "How do I ...?" / "Which function returns ...?" templates; other openings are described.
_VERBS = frozenset(
    """
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
""".split()
)


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


class EvalQuestionsConfig(BaseModel):
    """Which questions a retriever is scored on."""

    model_config = ConfigDict(extra="forbid")

    hand_written: bool = True  # the repository's questions about the default corpus
    template: int = Field(200, ge=0)  # questions generated from the corpus's docstrings
    template_seed: int = 0  # which ones
    files: list[str] = Field(default_factory=list)  # CSV/JSONL question files of your own


def eval_set_for(documents: Sequence, questions: EvalQuestionsConfig) -> EvalSet:
    """The eval set of ``questions`` over a corpus's ``documents`` (objects with
    ``source_id`` and ``text``). Hand-written questions whose expected documents are not in
    this corpus are left out (counted in the set's name) and expected ids outside it dropped,
    as a capped demo corpus holds only part of the packages."""
    known = {d.source_id for d in documents}
    sets = []
    if questions.hand_written:
        hand = hand_written_questions()
        kept = tuple(
            q._replace(expected_source_ids=tuple(i for i in q.expected_source_ids if i in known))
            for q in hand
            if known.intersection(q.expected_source_ids)
        )
        sets.append(EvalSet(f"hand-written ({len(kept)} of {len(hand)})", kept))
    if questions.template:
        sets.append(
            template_questions(documents, n=questions.template, seed=questions.template_seed)
        )
    sets += [load_eval_set(path) for path in questions.files]
    if not sets:
        raise EvalSetError("questions: no eval set (hand_written off, template 0, no files)")
    return EvalSet.combine(" + ".join(s.name for s in sets), *sets)
