"""The table-documentation task's text format, shared by the stage that renders training
targets and the evaluation that scores generations: the instruction (task text + DDL), the
response layout ("Description: …" then "- column: comment" per column, in table order), its
lenient and strict parsers, and the column names of a CREATE TABLE statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pipelines.shared.templates import END_MARKER, RESPONSE_MARKER

TABLEDOC_TASK = (
    "Write documentation for the database table defined below: a description of "
    "one to three sentences, then one comment per column, in table order."
)


def tabledoc_instruction(ddl: str) -> str:
    return f"{TABLEDOC_TASK}\n\n{ddl}"


_DESCRIPTION = re.compile(r"^\s*\**description\**\s*:\s*\**\s*(.*?)\s*$", re.IGNORECASE)
_COLUMN_LINE = re.compile(r"^\s*[-*•]\s+`?([A-Za-z_][\w$]*)`?\s*:\s*(.*?)\s*$")
_STRICT_COLUMN_LINE = re.compile(r"^- ([A-Za-z_][\w$]*): (\S.*)$")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def render_response(description: str, comments: Iterable[tuple[str, str]]) -> str:
    lines = [f"Description: {one_line(description)}"]
    lines += [f"- {name}: {one_line(comment)}" for name, comment in comments]
    return "\n".join(lines)


_TABLE_CONSTRAINT = re.compile(
    r"^(CONSTRAINT|PRIMARY|FOREIGN|UNIQUE|CHECK|INDEX|KEY|EXCLUDE)\b", re.IGNORECASE
)
_CREATE_TABLE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\b", re.IGNORECASE
)


def ddl_columns(text: str) -> list[str]:
    """Column names of the first CREATE TABLE in ``text``, in order (table constraints,
    comments and quoting are skipped); raises ValueError when there is none."""
    match = _CREATE_TABLE.search(text)
    start = text.find("(", match.end()) if match else -1
    if start < 0:
        raise ValueError("no CREATE TABLE (...) statement found")
    columns = []
    for element in _top_level_elements(text[start + 1 :]):
        element = re.sub(r"--[^\n]*", " ", element).strip()
        if element and not _TABLE_CONSTRAINT.match(element):
            columns.append(_identifier(element))
    if not columns:
        raise ValueError("the CREATE TABLE statement declares no columns")
    return columns


_QUOTED_IDENTIFIER = re.compile(r'^(?:"([^"]+)"|`([^`]+)`|\[([^\]]+)\])')


def _identifier(element: str) -> str:
    """The leading identifier of a column definition; quoted ones may hold spaces."""
    quoted = _QUOTED_IDENTIFIER.match(element)
    return next(g for g in quoted.groups() if g) if quoted else element.split()[0]


def _top_level_elements(body: str) -> list[str]:
    """Split a table body at commas outside parentheses, quotes and comments; stop at the
    body's closing parenthesis."""
    elements, current, depth, quote, i = [], [], 0, None, 0
    while i < len(body):
        ch = body[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif body.startswith("--", i):  # a comment runs to the line's end
            end = body.find("\n", i)
            i = len(body) if end < 0 else end
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            elements.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    elements.append("".join(current))
    return elements


def response_template(columns: Sequence[str]) -> list:
    """The response layout as infra.llm fields (description, then one comment per column):
    filled field by field, a generation parses by construction."""
    from infra.llm_fields import Field

    return [Field("description", "Description:", ["\n"], 96, joiner=" ")] + [
        Field(name, f"- {name}:", ["\n"], 64, joiner=" ") for name in columns
    ]


def response_part(text: str) -> str:
    """The response of a full Alpaca example (or the text itself), without the end marker."""
    if RESPONSE_MARKER in text:
        text = text.split(RESPONSE_MARKER, 1)[1]
    return text.split(END_MARKER, 1)[0].strip()


def parse_response(text: str, columns: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(description, {column: comment}) from a response, leniently: bullets may be * or -,
    names may be back-quoted, unknown names are ignored, the first comment for a name wins."""
    wanted = set(columns)
    description: list[str] = []
    comments: dict[str, str] = {}
    in_description = False
    for line in response_part(text).splitlines():
        if match := _COLUMN_LINE.match(line):
            in_description = False
            name, comment = match.groups()
            if name in wanted and name not in comments:
                comments[name] = comment
        elif match := _DESCRIPTION.match(line):
            in_description = not description
            description = description or [match.group(1)]
        elif in_description and line.strip():
            description.append(line.strip())  # a description wrapped over several lines
    return one_line(" ".join(description)), comments


def response_columns(response: str) -> list[str]:
    """Column names, in order, of a response's strict ``- name: comment`` lines."""
    return [m.group(1) for line in response.splitlines() if (m := _STRICT_COLUMN_LINE.match(line))]


def format_valid(text: str, columns: Sequence[str]) -> bool:
    """Strict: a non-empty Description line, then exactly one '- name: comment' per column,
    in table order, and nothing else (blank lines aside)."""
    lines = [line for line in response_part(text).splitlines() if line.strip()]
    if len(lines) != len(columns) + 1:
        return False
    head = _DESCRIPTION.match(lines[0])
    if not (lines[0].startswith("Description: ") and head and head.group(1)):
        return False
    for line, name in zip(lines[1:], columns, strict=False):
        match = _STRICT_COLUMN_LINE.match(line)
        if not match or match.group(1) != name:
            return False
    return True


def column_coverage(text: str, columns: Sequence[str]) -> float:
    """Share of the columns that got a non-empty comment."""
    if not columns:
        return 1.0
    comments = parse_response(text, columns)[1]
    return sum(1 for c in columns if comments.get(c, "").strip()) / len(columns)
