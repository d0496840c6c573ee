"""Documents read offline, one record each: installed packages' own documentation or the
user's files — shared by the corpus stage (pretraining text) and the RAG stage (API docs).

By default the documents are the installed Python packages' own documentation — each
distribution's METADATA description, the licence/notice files it ships, and the docstrings of
its modules, classes and functions, read with ``ast`` (never by importing: importing runs
third-party code and is slow). Users can point it at their own folders instead (``.jsonl``,
``.parquet``, ``.txt``/``.md``).

The driver only *lists* work items (one per file, cheap, see ``list_work_items``);
``extract_records`` turns one item into records, a pure function that Spark runs on executors
or ``iter_records`` runs in-process. Bad input never disappears: a record that could not be
read cleanly is still emitted, with ``ingest_error`` saying why, so the quality gate
quarantines it with that reason.
"""

import ast
import email.parser
import importlib.metadata
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.shared.input_files import (
    InputFileError,
    check_readable,
    decode_utf8,
    walk_refusing_symlinks,
)
from pipelines.shared.python_exports import imported_names, is_private_module, parse_module

FIELDS = ("id", "source", "package", "licence", "text", "origin", "ingest_error")

MAX_DOC_CHARS = 200_000  # longer "documents" are data dumps, not prose: quarantined as oversize

PROJECT_DIST = "genai-lifecycle"  # this project: the corpus is text no one here wrote
PACKAGE_SOURCES = ("metadata", "licence", "docstring")
USER_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet", ".txt": "text", ".md": "text"}
LICENCE_PREFIXES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")
# Files whose names start like a licence but are code or binaries (graphviz/copying.py,
# prefect/_internal/analytics/notice.py): not licence text.
NOT_LICENCE_SUFFIXES = {
    ".py",
    ".pyc",
    ".pyi",
    ".pyx",
    ".pxd",
    ".so",
    ".pyd",
    ".dll",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".js",
    ".ts",
    ".html",
    ".css",
    ".json",
    ".png",
    ".jpg",
    ".gif",
    ".svg",
}
MAX_LICENCE_FIELD_CHARS = 100  # some METADATA `License:` fields hold the whole licence text
PARQUET_BATCH_ROWS = 4096  # rows per Arrow batch: bounded memory for big user files


class CorpusConfig(BaseModel):
    """What the raw corpus reads. Empty ``paths`` = installed packages' documentation."""

    model_config = ConfigDict(extra="forbid")

    # Distributions to read (names compared normalised: Great_Expectations == great-expectations);
    # None = every installed distribution except this project.
    packages: list[str] | None = None
    # Which package documents to read: METADATA descriptions, licence/notice files, docstrings.
    sources: list[Literal["metadata", "licence", "docstring"]] = Field(
        default_factory=lambda: list(PACKAGE_SOURCES)
    )
    # Skip docstrings of `_private` modules and names (dunders like __init__ are kept): they
    # document internals, not the API people write about.
    exclude_private: bool = True
    # Skip modules under `tests`/`test` directories: test docstrings are boilerplate.
    exclude_tests: bool = True
    # User files or folders to read instead of packages (.jsonl, .parquet, .txt, .md); folders
    # are walked recursively, symlinks refused.
    paths: list[str] = Field(default_factory=list)
    # Spark slices of work items; None = 4 x default parallelism, so uneven files balance.
    partitions: int | None = Field(default=None, ge=1)

    @field_validator("sources")
    @classmethod
    def _some_source(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("sources must name at least one of metadata, licence, docstring")
        return value


class WorkItem(NamedTuple):
    """One file to extract; small and picklable so Spark ships it to an executor."""

    kind: str  # metadata | licence | docstring | jsonl | parquet | text
    package: str | None  # normalised distribution name; None for user files
    licence: str | None  # the distribution's licence string
    path: str  # absolute file path
    name: str  # module name (docstring), path as in dist.files (licence/metadata), id path (text)
    origin: str  # file as shown in `origin`: site-packages/<rel> or the user file's path
    exclude_private: bool = True  # docstrings only: skip `_private` names
    # Docstrings only: read just these top-level names (a private module's public names that
    # a public package re-exports); empty = every name.
    only_names: tuple[str, ...] = ()


# ---------------------------------------------------------------- listing (driver) --------


def normalise_dist_name(name: str) -> str:
    """PEP 503 normalisation, so `Great_Expectations` and `great-expectations` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def list_work_items(config: CorpusConfig) -> list[WorkItem]:
    """Every file the corpus reads, validated up front: a bad input raises before any output."""
    if config.paths:
        return _user_work_items(config.paths)
    items: list[WorkItem] = []
    claimed: set[str] = set()  # mlflow, mlflow-skinny and mlflow-tracing ship the same files
    for dist in selected_distributions(config):
        items.extend(_package_work_items(dist, config, claimed))
    return items


def selected_distributions(config: CorpusConfig) -> list[importlib.metadata.Distribution]:
    """Installed distributions after the filter, one per normalised name, sorted by name."""
    by_name: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = normalise_dist_name(dist.metadata["Name"] or "")
        # distributions() follows sys.path order; the first one is the one `import` would use
        if name and name != PROJECT_DIST and name not in by_name:
            by_name[name] = dist
    if config.packages is not None:
        wanted = [normalise_dist_name(p) for p in config.packages]
        missing = [p for p, n in zip(config.packages, wanted, strict=False) if n not in by_name]
        if missing:
            raise InputFileError(
                f"package(s) {', '.join(map(repr, missing))} not installed"
                f" (or excluded: {PROJECT_DIST} is this project)"
            )
        by_name = {n: by_name[n] for n in wanted}
    return [by_name[n] for n in sorted(by_name)]


def licence_of(metadata) -> str | None:
    """License-Expression, else a short License field, else licence classifiers joined."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    field = (metadata.get("License") or "").strip()
    if field and "\n" not in field and len(field) <= MAX_LICENCE_FIELD_CHARS:
        return field
    classifiers = [
        c.split("::")[-1].strip()
        for c in metadata.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    if classifiers:
        return "; ".join(classifiers)
    # A whole licence pasted into the field: its first line is the best short name we have.
    first_line = next((line.strip() for line in field.splitlines() if line.strip()), "")
    return first_line[:MAX_LICENCE_FIELD_CHARS] or None


def _package_work_items(dist, config: CorpusConfig, claimed: set[str]) -> list[WorkItem]:
    name = normalise_dist_name(dist.metadata["Name"])
    licence = licence_of(dist.metadata)
    root = Path(dist.locate_file("")).resolve()
    items = []
    metadata_path = _metadata_file(dist)
    if "metadata" in config.sources and metadata_path is not None:
        items.append(
            WorkItem(
                "metadata",
                name,
                licence,
                str(metadata_path),
                name,
                _site_origin(root, metadata_path),
            )
        )
    reexported = _reexported_private_names(dist, root, config)
    for file in dist.files or []:
        path = Path(dist.locate_file(file)).resolve()
        if not path.is_relative_to(root) or str(path) in claimed:
            continue  # scripts in ../../bin, or a file a sibling distribution already read
        kind = _package_file_kind(file, root, path, config)
        module = _module_name(path.relative_to(root)) if file.suffix == ".py" else None
        only_names = ()
        if kind is None and module in reexported:
            kind, only_names = "docstring", tuple(sorted(reexported[module]))
        if kind is None or not path.is_file():
            continue
        claimed.add(str(path))
        name_in_item = str(file) if kind == "licence" else module
        items.append(
            WorkItem(
                kind,
                name,
                licence,
                str(path),
                name_in_item,
                _site_origin(root, path),
                config.exclude_private,
                only_names,
            )
        )
    return items


def _reexported_private_names(dist, root: Path, config: CorpusConfig) -> dict[str, set[str]]:
    """Private module -> the public names a public package's ``__init__`` imports from it
    (``mlflow.set_tracking_uri`` is defined in ``mlflow.tracking._tracking_service.utils``):
    what users call, documented where it is defined."""
    if not config.exclude_private or "docstring" not in config.sources:
        return {}
    found: dict[str, set[str]] = {}
    for file in dist.files or []:
        if file.name != "__init__.py":
            continue
        path = Path(dist.locate_file(file)).resolve()
        package = _module_name(path.relative_to(root)) if path.is_relative_to(root) else None
        if not package or not _module_wanted(package, path.relative_to(root), config):
            continue
        tree = parse_module(path)
        for name in imported_names(tree, package) if tree else ():
            if (
                name.module
                and is_private_module(name.module)
                and not _is_private(name.original)
                and name.module.split(".")[0] == package.split(".")[0]
            ):
                found.setdefault(name.module, set()).add(name.original)
    return found


def _metadata_file(dist) -> Path | None:
    for file in dist.files or []:
        if file.name == "METADATA" and file.parent.name.endswith(".dist-info"):
            return Path(dist.locate_file(file)).resolve()
    base = getattr(dist, "_path", None)  # egg-info installs list no files
    for candidate in ("METADATA", "PKG-INFO"):
        if base is not None and (Path(base) / candidate).is_file():
            return Path(base, candidate).resolve()
    return None


def _package_file_kind(file, root: Path, path: Path, config: CorpusConfig) -> str | None:
    """'licence', 'docstring' or None (not read) for one file of a distribution."""
    if "licence" in config.sources and _is_licence_file(file):
        return "licence"
    if "docstring" in config.sources and file.suffix == ".py":
        module = _module_name(path.relative_to(root))
        if module and _module_wanted(module, path.relative_to(root), config):
            return "docstring"
    return None


def _is_licence_file(file) -> bool:
    if Path(file.name).suffix.lower() in NOT_LICENCE_SUFFIXES:
        return False
    in_licenses_dir = (
        any(part.endswith(".dist-info") for part in file.parts[:-1])
        and "licenses" in file.parts[:-1]
    )
    return in_licenses_dir or file.name.upper().startswith(LICENCE_PREFIXES)


def _module_name(rel: Path) -> str | None:
    """Dotted module for a .py path under site-packages; None when it is not importable."""
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None  # data folders, `foo-1.0.data/...`: not a module anyone imports
    return ".".join(parts)


def _module_wanted(module: str, rel: Path, config: CorpusConfig) -> bool:
    if config.exclude_private and any(p.startswith("_") for p in module.split(".")):
        return False
    return not (config.exclude_tests and any(p in ("tests", "test") for p in rel.parts[:-1]))


def _site_origin(root: Path, path: Path) -> str:
    return f"{root.name}/{path.relative_to(root).as_posix()}"


def _user_work_items(paths: list[str]) -> list[WorkItem]:
    items = []
    for given in paths:
        root = Path(given).absolute()
        if not root.exists() and not root.is_symlink():
            raise InputFileError(f"corpus path {given} does not exist")
        # The path the user named is trusted even if it is a symlink; nothing below it is.
        resolved_root = root.resolve()
        if resolved_root.is_file():
            kind = USER_SUFFIXES.get(resolved_root.suffix.lower())
            if kind is None:
                raise InputFileError(
                    f"corpus path {given}: unsupported file type "
                    f"(expected one of {', '.join(sorted(USER_SUFFIXES))})"
                )
            items.append(_user_item(kind, resolved_root, resolved_root.parent))
            continue
        for path in walk_refusing_symlinks(resolved_root):
            kind = USER_SUFFIXES.get(path.suffix.lower())
            if kind is not None:  # other files in a folder (.DS_Store, images) are not corpus
                items.append(_user_item(kind, path, resolved_root))
    return items


def _user_item(kind: str, path: Path, root: Path) -> WorkItem:
    check_readable(kind, path)
    return WorkItem(kind, None, None, str(path), path.relative_to(root).as_posix(), str(path))


# --------------------------------------------------------- extraction (executors) --------


def extract_records(item: WorkItem) -> list[dict]:
    """All records of one work item (a pure function: Spark runs it on executors)."""
    return extract_with_status(item)[0]


def extract_with_status(item: WorkItem) -> tuple[list[dict], bool]:
    """(records, unparseable): the flag marks Python files skipped for a syntax error."""
    if item.kind == "docstring":
        return _docstring_records(item)
    extractor = {
        "metadata": _metadata_records,
        "licence": _licence_records,
        "jsonl": _jsonl_records,
        "parquet": _parquet_records,
        "text": _text_records,
    }[item.kind]
    return extractor(item), False


def _record(
    item: WorkItem,
    id: str | None,
    source: str | None,
    text: str | None,
    origin: str,
    error: str | None = None,
) -> dict:
    return {
        "id": id,
        "source": source,
        "package": item.package,
        "licence": item.licence,
        "text": text,
        "origin": origin,
        "ingest_error": error,
    }


def _read_text(path: str) -> tuple[str, str | None]:
    text, error = decode_utf8(Path(path).read_bytes())
    return text.removeprefix("\ufeff"), error


def _metadata_records(item: WorkItem) -> list[dict]:
    text, error = _read_text(item.path)
    description, line = _metadata_description(text)
    if not description.strip() or description.strip() == "UNKNOWN":
        return []
    return [
        _record(
            item,
            f"pkg:{item.package}:METADATA",
            "metadata",
            description,
            f"{item.origin}:{line}",
            error,
        )
    ]


def _metadata_description(text: str) -> tuple[str, int]:
    """(description, first line): the body after the headers, or an old `Description:` header."""
    message = email.parser.Parser().parsestr(text)
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        header_end = text.find("\n\n")
        return body, text.count("\n", 0, header_end) + 3 if header_end >= 0 else 1
    header = message.get("Description") or ""
    # Metadata 1.x folds the description into a header, continuation lines prefixed "       |"
    lines = header.splitlines()
    unfolded = (
        "\n".join([lines[0]] + [re.sub(r"^ {7,8}\|", "", ln) for ln in lines[1:]]) if lines else ""
    )
    match = re.search(r"^Description:", text, flags=re.MULTILINE)
    return unfolded, text.count("\n", 0, match.start()) + 1 if match else 1


def _licence_records(item: WorkItem) -> list[dict]:
    text, error = _read_text(item.path)
    if not text.strip():
        return []
    return [_record(item, f"pkg:{item.package}:{item.name}", "licence", text, item.origin, error)]


def _docstring_records(item: WorkItem) -> tuple[list[dict], bool]:
    text, error = _read_text(item.path)
    try:
        with warnings.catch_warnings():  # invalid escapes etc. in third-party code: not ours
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=item.path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return [], True  # ValueError: NUL bytes; RecursionError: absurdly nested code
    records = []
    seen: dict[str, int] = {}
    for qualname, line, doc in docstrings(tree, item.exclude_private):
        if item.only_names and qualname.split(".")[0] not in item.only_names:
            continue
        base = f"py:{item.name}.{qualname}" if qualname else f"py:{item.name}"
        seen[base] = seen.get(base, 0) + 1
        doc_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        records.append(_record(item, doc_id, "docstring", doc, f"{item.origin}:{line}", error))
    return records, False


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def docstrings(tree: ast.Module, exclude_private: bool = True) -> Iterator[tuple[str, int, str]]:
    """(qualname, line, docstring) for the module ("" qualname, line 1), its classes and
    functions, and recursively the members of classes — not the insides of functions."""
    doc = ast.get_docstring(tree, clean=True)
    if doc and doc.strip():
        yield "", 1, doc
    yield from _member_docstrings(tree.body, "", exclude_private)


def _member_docstrings(
    body: list[ast.stmt], prefix: str, exclude_private: bool
) -> Iterator[tuple[str, int, str]]:
    for node in body:
        if isinstance(node, _DEFS):
            if exclude_private and _is_private(node.name):
                continue
            qualname = prefix + node.name
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                yield qualname, node.lineno, doc
            if isinstance(node, ast.ClassDef):
                yield from _member_docstrings(node.body, qualname + ".", exclude_private)
        else:  # defs under `if TYPE_CHECKING:`, `try: ... except ImportError:` are real too
            for block in _nested_blocks(node):
                yield from _member_docstrings(block, prefix, exclude_private)


def _nested_blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(node, ast.If):
        return [node.body, node.orelse]
    if isinstance(node, (ast.Try, ast.TryStar)):
        return [node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [node.body]
    return []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _jsonl_records(item: WorkItem) -> list[dict]:
    records = []
    offset = 0
    with open(item.path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line_offset, offset = offset, offset + len(raw)
            if not raw.strip():
                continue  # blank lines (a trailing newline) separate nothing
            text, error = decode_utf8(raw)
            if error:  # report the byte offset in the file, not in the line
                error = f"undecodable UTF-8 at byte {line_offset + int(error.rsplit(' ', 1)[1])}"
            records.append(_json_line_record(item, text, f"{item.origin}:{line_no}", error))
    return records


def _json_line_record(item: WorkItem, line: str, origin: str, error: str | None) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return _record(item, None, "user", None, origin, _join(error, f"invalid JSON: {exc}"))
    if not isinstance(obj, dict):
        return _record(
            item,
            None,
            "user",
            None,
            origin,
            _join(error, f"expected a JSON object, got {_type_name(obj)}"),
        )
    return user_record(obj, origin, error)


def _parquet_records(item: WorkItem) -> list[dict]:
    import pyarrow.parquet as pq

    records = []
    row = 0
    for batch in pq.ParquetFile(item.path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for obj in batch.to_pylist():
            records.append(user_record(obj, f"{item.origin}#{row}"))
            row += 1
    return records


def _text_records(item: WorkItem) -> list[dict]:
    text, error = _read_text(item.path)
    return [_record(item, f"file:{item.name}", "user", text, item.origin, error)]


def user_record(obj: dict, origin: str, error: str | None = None) -> dict:
    """A record from a user's JSON object or Parquet row: fields of the wrong type become None
    and every problem is named in ``ingest_error``."""
    problems = [error] if error else []
    record = dict.fromkeys(FIELDS)
    record["origin"] = origin
    for field in ("id", "text", "source", "package", "licence"):
        required = field in ("id", "text")
        if field not in obj or (obj[field] is None and not required):
            if required:
                problems.append(f"missing field '{field}'")
        elif not isinstance(obj[field], str):
            problems.append(f"field '{field}' is {_type_name(obj[field])}, expected string")
        else:
            record[field] = obj[field]
    record["source"] = record["source"] or "user"
    record["ingest_error"] = "; ".join(problems) or None
    return record


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def iter_records(config: CorpusConfig, stats: dict | None = None) -> Iterator[dict]:
    """The corpus in-process, no Spark: the same records ``build_corpus_raw`` produces.
    Inputs are all validated before the first record is yielded; ``stats`` (if given) is
    filled as the generator runs."""
    items = list_work_items(config)
    counts = stats if stats is not None else {}
    counts.update(listing_stats(config, items))
    for item in items:
        records, unparseable = extract_with_status(item)
        counts["syntax_error_files"] += unparseable
        counts["records"] += len(records)
        yield from records


def listing_stats(config: CorpusConfig, items: list[WorkItem]) -> dict:
    return {
        "distributions": len({i.package for i in items if i.package}),
        "files": len(items),
        "syntax_error_files": 0,
        "records": 0,
        "mode": "paths" if config.paths else "packages",
    }
