"""Product reviews in: review files read by field mapping (JSON lines, CSV, Parquet; the text
formats optionally gzip'd), or the seeded generator, into bronze/reviews through the lake's
quality gate; generated reviews also write their aspect records to silver/review_aspects. Bad
input never disappears: a record that could not be read cleanly (malformed JSON line,
undecodable bytes, missing field, a rating or timestamp that is not one) is still emitted with
``ingest_error`` naming the problem, for the gate to quarantine beside ratings outside 1–5 and
blank text."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pipelines.prompts.generator import generate_reviews
from pipelines.prompts.schema import (
    REVIEW_ASPECTS,
    REVIEW_ASPECTS_SCHEMA,
    REVIEW_FIELDS,
    REVIEWS,
    FieldMapping,
    ProductsFile,
    ReviewsConfig,
    ReviewsInputError,
    TimestampFormat,
)
from pipelines.shared.input_files import (
    InputFileError,
    check_readable,
    decode_utf8,
    walk_refusing_symlinks,
)

# ---------------------------------------------------------------------------------------------
# Files: listing and raw records
# ---------------------------------------------------------------------------------------------

REVIEW_SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
PARQUET_BATCH_ROWS = 4096  # rows per Arrow batch: bounded memory for big files
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes surrogateescape kept for us to report


def review_format(path: Path) -> str | None:
    """jsonl | csv | parquet from the file name (a .gz suffix is looked through), else None."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    kind = REVIEW_SUFFIXES.get(Path(name.removesuffix(".gz")).suffix)
    return None if kind == "parquet" and gzipped else kind  # Parquet compresses itself


def list_review_files(paths: Sequence[str]) -> list[Path]:
    """Every review file the paths name, validated before anything is read."""
    files: list[Path] = []
    for given in paths:
        root = Path(given).absolute()
        if not root.exists() and not root.is_symlink():
            raise ReviewsInputError(f"reviews path {given} does not exist")
        resolved = root.resolve()  # the path the user named is trusted; nothing below it is
        if resolved.is_file():
            if review_format(resolved) is None:
                raise ReviewsInputError(
                    f"reviews path {given}: unsupported file type (expected "
                    f"{', '.join(sorted(REVIEW_SUFFIXES))}, optionally .gz)"
                )
            files.append(resolved)
            continue
        try:
            files += [p for p in walk_refusing_symlinks(resolved) if review_format(p)]
        except InputFileError as exc:
            raise ReviewsInputError(f"reviews input: {exc}") from exc
    for path in files:
        try:
            check_readable(review_format(path), path)
        except InputFileError as exc:
            raise ReviewsInputError(f"reviews input: {exc}") from exc
    return files


class RawRecord(NamedTuple):
    origin: str  # file:line (text formats) or file#row (Parquet)
    fields: dict | None  # None when nothing could be parsed
    error: str | None


def raw_records(path: Path) -> Iterator[RawRecord]:
    """The records of one file as the source wrote them, each with any read error."""
    kind = review_format(path)
    reader = {"jsonl": _json_line_records, "csv": _csv_records, "parquet": _parquet_records}[kind]
    try:
        yield from reader(path)
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        # a truncated .gz or a broken CSV quote: what was read stands, the rest is one error
        yield RawRecord(str(path), None, f"file unreadable from here on: {exc}")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _json_line_records(path: Path) -> Iterator[RawRecord]:
    with _open_binary(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue  # blank lines (a trailing newline) separate nothing
            origin = f"{path}:{line_no}"
            text, error = decode_utf8(raw)
            error = f"{error} of line {line_no}" if error else None
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRecord(
                    origin, None, _join(error, f"invalid JSON: {exc.msg} at column {exc.colno}")
                )
                continue
            if not isinstance(obj, dict):
                yield RawRecord(
                    origin, None, _join(error, f"expected a JSON object, got {type(obj).__name__}")
                )
                continue
            yield RawRecord(origin, obj, error)


def _csv_records(path: Path) -> Iterator[RawRecord]:
    # surrogateescape keeps undecodable bytes visible per row; utf-8-sig drops a BOM
    with (
        _open_binary(path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as f,
    ):
        reader = csv.reader(f)
        header = next(reader, None)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            origin = f"{path}:{reader.line_num}"
            error = None
            if len(row) != len(header):
                error = f"row has {len(row)} fields, the header {len(header)}"
            if any(_UNDECODED.search(cell) for cell in row):
                error = _join(error, "undecodable UTF-8 bytes")
                row = [
                    cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    for cell in row
                ]
            yield RawRecord(origin, dict(zip(header, row, strict=False)), error)


def _parquet_records(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for obj in batch.to_pylist():
            yield RawRecord(f"{path}#{row}", obj, None)
            row += 1


def _join(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


# ---------------------------------------------------------------------------------------------
# Field conversion: (value, problem) pairs, so a record collects every problem it has
# ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MONTH_DAY_YEAR = re.compile(r"(\d{1,2}) (\d{1,2}), (\d{4})")  # Amazon's "09 4, 2015"
MILLISECONDS_ABOVE = 1e11  # auto: a unix time this large is in ms (1e11 s is the year 5138)


def parse_rating(value: Any) -> tuple[int | None, str | None]:
    """Whole stars from a number or numeric string; range is the gate's job (7 passes here)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"rating {value!r} is not a number"
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None, f"rating {value!r} is not a number"
    if not math.isfinite(number) or number != int(number):
        return None, f"rating {value!r} is not a whole number of stars"
    return int(number), None


def parse_timestamp(
    value: Any, fmt: TimestampFormat = "auto"
) -> tuple[datetime | None, str | None]:
    """A UTC datetime from unix seconds/ms, ISO 8601 or "MM DD, YYYY" (``fmt`` narrows it)."""
    try:
        moment = _parse_timestamp(value, fmt)
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None:
        expected = {
            "auto": "unix seconds, ISO 8601 or 'MM DD, YYYY'",
            "unix": "unix seconds",
            "unix_ms": "unix milliseconds",
            "iso": "ISO 8601",
            "month_day_year": "'MM DD, YYYY'",
        }[fmt]
        return None, f"timestamp {value!r} is not {expected}"
    return moment, None


def _parse_timestamp(value: Any, fmt: TimestampFormat) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strip() if isinstance(value, str) else None
    if (
        fmt in ("auto", "unix", "unix_ms")
        and not isinstance(value, bool)
        and (isinstance(value, (int, float)) or (text and _NUMBER.fullmatch(text)))
    ):
        seconds = float(value)
        if fmt == "unix_ms" or (fmt == "auto" and abs(seconds) > MILLISECONDS_ABOVE):
            seconds /= 1000
        return datetime.fromtimestamp(seconds, tz=UTC)
    if text is None:
        return None
    if fmt in ("auto", "month_day_year") and (match := _MONTH_DAY_YEAR.fullmatch(text)):
        month, day, year = map(int, match.groups())
        return datetime(year, month, day, tzinfo=UTC)
    if fmt in ("auto", "iso"):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def parse_price(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        price = float(value.strip().lstrip("$") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, f"price {value!r} is not a number"
    return (
        (price, None)
        if math.isfinite(price) and price >= 0
        else (None, f"price {value!r} is not a price")
    )


def _as_text(value: Any, name: str) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value), None  # numeric ids and the like
    return None, f"field {name!r} is {type(value).__name__}, expected text"


def derived_review_id(fields: dict, id_from: Sequence[str]) -> str:
    """A stable id from the named fields' values (absent fields count as empty)."""
    values = ["" if fields.get(name) is None else str(fields[name]) for name in id_from]
    return (
        "h" + hashlib.sha256("\x1f".join(values).encode("utf-8", "surrogatepass")).hexdigest()[:24]
    )


def review_from_fields(
    fields: dict | None, mapping: FieldMapping, origin: str, error: str | None = None
) -> dict:
    """One bronze/reviews record from a source record; every problem goes into ingest_error."""
    record = dict.fromkeys(REVIEW_FIELDS)
    record.update(source="file", origin=origin)
    if fields is None:
        record["ingest_error"] = error or "no fields could be read"
        return record
    problems = [error] if error else []

    def raw_value(name: str):
        source = getattr(mapping, name)
        raw = fields.get(source) if source else None
        # an empty CSV cell is an absent value; blank text is kept for the gate to quarantine
        return None if isinstance(raw, str) and not raw.strip() and name != "text" else raw

    required = ["product_id", "rating", "text", "timestamp"]
    required += ["review_id"] if mapping.review_id else []
    problems += [
        f"missing field {getattr(mapping, name)!r} ({name})"
        for name in required
        if raw_value(name) is None
    ]

    def take(name: str, convert=None):
        raw = raw_value(name)
        if raw is None:
            return None
        source = getattr(mapping, name)
        value, problem = convert(raw) if convert else _as_text(raw, source)
        if problem:
            problems.append(problem)
        return value

    record["review_id"] = (
        take("review_id") if mapping.review_id else derived_review_id(fields, mapping.id_from)
    )
    for name in ("product_id", "product_name", "category", "reviewer_id", "title", "text"):
        record[name] = take(name)
    record["rating"] = take("rating", parse_rating)
    record["price"] = take("price", parse_price)
    record["reviewed_at"] = take(
        "timestamp", lambda v: parse_timestamp(v, mapping.timestamp_format)
    )
    record["ingest_error"] = "; ".join(problems) or None
    return record


# ---------------------------------------------------------------------------------------------
# Ingestion
# ---------------------------------------------------------------------------------------------
# The first copy of a review id wins. A later copy whose fields are all equal (a re-delivered
# record: the Amazon 5-core files repeat a review for every product variant) is dropped before
# the gate and counted. A later copy that differs is kept, and the table's unique key
# quarantines every copy of that id: nothing says which one is right.

_CONTENT_FIELDS = tuple(f for f in REVIEW_FIELDS if f != "origin")


def _fingerprint(record: dict) -> bytes:
    content = json.dumps([record[f] for f in _CONTENT_FIELDS], default=str)
    return hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def drop_exact_duplicates(records: Iterable[dict], stats: dict) -> Iterator[dict]:
    """Records minus later exact copies (same id, same fields), counted in
    ``stats["duplicates_dropped"]``. Copies that differ pass: the table's key quarantines them."""
    seen: set[bytes] = set()  # 16 bytes a review: millions fit
    stats.setdefault("records_read", 0)
    stats.setdefault("duplicates_dropped", 0)
    for record in records:
        stats["records_read"] += 1
        if record["review_id"] is not None:
            fingerprint = _fingerprint(record)
            if fingerprint in seen:
                stats["duplicates_dropped"] += 1
                continue
            seen.add(fingerprint)
        yield record


def file_records(files: Sequence[Path], mapping: FieldMapping) -> Iterator[dict]:
    for path in files:
        for raw in raw_records(path):
            yield review_from_fields(raw.fields, mapping, raw.origin, raw.error)


def generated_records(reviews: Iterable[dict]) -> Iterator[dict]:
    """Generated reviews as bronze records (their truth fields are left behind)."""
    for review in reviews:
        yield {f: review[f] for f in REVIEW_FIELDS}


def read_review_records(config: ReviewsConfig, stats: dict | None = None) -> Iterator[dict]:
    """The records ``write_reviews`` writes, in-process and without Spark. Files are listed
    and checked before this returns; ``stats`` (if given) fills as the iterator runs:
    files, records_read, duplicates_dropped, ingest_errors."""
    return _records_and_aspects(config, stats if stats is not None else {})[0]


def _records_and_aspects(
    config: ReviewsConfig, counts: dict
) -> tuple[Iterator[dict], list[dict] | None]:
    if config.paths:
        files = list_review_files(config.paths)
        counts.update(mode="files", files=len(files))
        source, aspects = file_records(files, config.field_mapping()), None
        if config.products:
            titles = product_titles(config.products, counts)
            source = with_product_names(source, titles)
    else:
        reviews, aspects = generate_reviews(config)
        counts.update(mode="generator", files=0)
        source = generated_records(reviews)
    counts.update(records_read=0, duplicates_dropped=0, ingest_errors=0)
    return _counting_errors(drop_exact_duplicates(source, counts), counts), aspects


def product_titles(products: ProductsFile, counts: dict) -> dict[str, str]:
    """product id -> name from a metadata file; records without both fields are counted in
    ``product_metadata_skipped``, a file that cannot be read raises naming it."""
    path = Path(products.path)
    if not path.is_file() or review_format(path) is None:
        raise ReviewsInputError(
            f"reviews.products.path {path}: expected a .jsonl/.json/.csv/.parquet file "
            "(gzip allowed) of product metadata"
        )
    titles: dict[str, str] = {}
    skipped = 0
    for record in raw_records(path):
        fields = record.fields or {}
        pid, title = fields.get(products.id), fields.get(products.title)
        if record.error or not pid or not isinstance(title, str) or not title.strip():
            skipped += 1
            continue
        titles.setdefault(str(pid), " ".join(title.split()))
    counts.update(product_titles=len(titles), product_metadata_skipped=skipped)
    return titles


def with_product_names(records: Iterator[dict], titles: dict[str, str]) -> Iterator[dict]:
    """Each record with its product's name from ``titles`` where it has none of its own."""
    for record in records:
        if record.get("product_name") is None and record.get("product_id") in titles:
            record = {**record, "product_name": titles[record["product_id"]]}
        yield record


def _counting_errors(records: Iterator[dict], counts: dict) -> Iterator[dict]:
    for record in records:
        counts["ingest_errors"] += record["ingest_error"] is not None
        yield record


def write_reviews(spark, config: ReviewsConfig, txn_id: str, root: Path | None = None) -> dict:
    """Step: reviews into bronze/reviews through the quality gate (and, for generated reviews,
    their aspect records into silver/review_aspects); the reviews table's manifest, with
    ``stats`` and ``aspects`` (the aspect table's manifest, or None)."""
    from infra.lake import write_table

    stats: dict = {}
    records, aspects = _records_and_aspects(config, stats)
    df = spark.createDataFrame(
        [tuple(r[f] for f in REVIEW_FIELDS) for r in records], REVIEWS.schema
    )
    # MERGE on review_id: reviews accumulate across runs, and re-ingesting the same reviews
    # changes nothing, so the Change Data Feed shows the batch stage only what is new
    manifest = write_table(spark, REVIEWS, df, txn_id=txn_id, mode="merge", root=root)
    manifest["stats"] = stats
    manifest["aspects"] = (
        None if aspects is None else write_review_aspects(spark, aspects, txn_id, root)
    )
    return manifest


def write_review_aspects(
    spark, aspects: Sequence[dict], txn_id: str, root: Path | None = None
) -> dict:
    from infra.lake import write_table

    columns = [c.split()[0] for c in REVIEW_ASPECTS_SCHEMA.split(", ")]
    df = spark.createDataFrame(
        [tuple(a[c] for c in columns) for a in aspects], REVIEW_ASPECTS.schema
    )
    return write_table(spark, REVIEW_ASPECTS, df, txn_id=txn_id, mode="merge", root=root)
