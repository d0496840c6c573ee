"""Product reviews in: review files by field mapping, or a seeded generator that knows the truth.

Two sources feed one table, ``bronze/reviews``, through the lake's quality gate:

- **Files** (``ReviewsConfig.paths``): JSON lines (``.jsonl``/``.json``/``.ndjson``), ``.csv``
  and ``.parquet``, the text formats optionally gzip'd (``.json.gz``). A :class:`FieldMapping`
  says which source field holds each review field; named presets in :data:`FIELD_MAPPINGS`
  read the Amazon 2018 5-core files and the Kaggle Amazon books CSV as they are. Sources
  without a review id get a stable one: a hash of the fields the mapping names.
- **The generator** (:func:`generate_reviews`, the default): products in a few categories, each
  with aspects (battery life, fit, value for money, ...) of hidden quality; each review praises
  or criticises aspects in proportion to its star rating, some use coarse language, some are
  posted twice. It also returns the *aspect records* — for each review, the aspects it praises
  (+1) or criticises (-1) — which the rule-based teacher summarises and the evaluation scores
  against. Review ``k`` of product ``i`` depends only on ``(seed, i, k)``: same seed,
  byte-identical output.

Bad input never disappears (as in pipelines.corpus): a record that could not be read cleanly —
malformed JSON line, undecodable bytes, missing field, a rating or timestamp that is not one —
is still emitted with ``ingest_error`` naming the problem, and the gate quarantines it with
that reason beside ratings outside 1–5 and blank text.

**Duplicates.** The first copy of a review id wins. A later copy whose fields are all equal (a
re-delivered record: the Amazon 5-core files repeat a review for every product variant) is
dropped before the gate and counted in ``stats["duplicates_dropped"]``. A later copy that
*differs* is kept, and the table's unique key quarantines every copy of that id: nothing says
which one is right.

For the task model (``genai-reviews``, made by ``finetune_task``): :func:`teacher_summary`
answers the seed's four questions from the aspect records; :func:`review_training_pairs` puts
groups and answers in the batch stage's prompt and answer layout (``pipelines.batch_llm`` owns
that layout) and :func:`write_instruction_jsonl` makes the instruction data set.
Beside the LLM: :func:`coarse_language_flag` (a lexicon rule), :func:`keyword_baseline` and
:func:`negative_point_scores` (precision/recall of named criticised aspects).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.lake import TableSpec, expect
from pipelines.corpus import CorpusInputError, check_readable, decode_utf8, walk_refusing_symlinks

COARSE_WORDS_FILE = Path(__file__).resolve().parent / "data" / "coarse_words.txt"

# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

REVIEWS_SCHEMA = ("review_id STRING, product_id STRING, product_name STRING, category STRING, "
                  "price DOUBLE, reviewer_id STRING, rating INT, title STRING, text STRING, "
                  "reviewed_at TIMESTAMP, source STRING, origin STRING, ingest_error STRING")
REVIEW_FIELDS = tuple(column.split()[0] for column in REVIEWS_SCHEMA.split(", "))

REVIEWS = TableSpec(
    layer="bronze", name="reviews", schema=REVIEWS_SCHEMA,
    key=("review_id",),  # implies not null + unique: differing copies of an id are quarantined
    expectations=(
        expect("column_values_to_be_null", column="ingest_error"),  # unreadable line, bad field
        expect("column_values_to_be_between", column="rating", min_value=1, max_value=5),
        expect("column_values_to_not_be_null", column="text"),
        expect("column_values_to_match_regex", column="text", regex=r"\S"),  # not empty/blank
        expect("column_values_to_not_be_null", column="reviewed_at"),
    ),
    description="Product reviews as read: review files by field mapping, or generated ones.",
)

REVIEW_ASPECTS_SCHEMA = "review_id STRING, product_id STRING, aspect STRING, polarity INT"

REVIEW_ASPECTS = TableSpec(
    layer="silver", name="review_aspects", schema=REVIEW_ASPECTS_SCHEMA,
    key=("review_id", "aspect"),
    expectations=(expect("column_values_to_be_in_set", column="polarity", value_set=[-1, 1]),),
    description="The generator's truth: the aspects each generated review praises (+1) or "
                "criticises (-1).",
)

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

TimestampFormat = Literal["auto", "unix", "unix_ms", "iso", "month_day_year"]


class FieldMapping(BaseModel):
    """Which source field (JSON key, CSV header, Parquet column) holds each review field."""

    model_config = ConfigDict(extra="forbid")

    review_id: str | None = "review_id"  # None: derive a stable id by hashing `id_from`
    id_from: list[str] = []  # fields hashed into review_id when the source has no id
    product_id: str = "product_id"
    rating: str = "rating"  # whole stars; "4.0" and 4.0 read as 4
    text: str = "text"
    timestamp: str = "timestamp"
    # Optional fields: None (or a field absent from a record) leaves the column null.
    title: str | None = "title"
    reviewer_id: str | None = "reviewer_id"
    product_name: str | None = "product_name"
    category: str | None = "category"
    price: str | None = "price"
    # auto: numbers are unix seconds (milliseconds above 1e11), strings ISO 8601 or
    # "MM DD, YYYY"; a naive time is taken as UTC
    timestamp_format: TimestampFormat = "auto"

    @model_validator(mode="after")
    def _an_id_source(self) -> FieldMapping:
        if self.review_id is None and not self.id_from:
            raise ValueError("name the review_id field, or the id_from fields to hash into one")
        return self


FIELD_MAPPINGS: dict[str, FieldMapping] = {
    "default": FieldMapping(),
    # Amazon Review Data 2018 (Ni, Li, McAuley), 5-core files: no review id. reviewer + product
    # + day is not unique (the same reviewer writes two reviews of one product on one day), so
    # the title and text join the hash; an identical copy (one per product variant) is dropped.
    "amazon_2018": FieldMapping(
        review_id=None, id_from=["reviewerID", "asin", "unixReviewTime", "summary", "reviewText"],
        product_id="asin", reviewer_id="reviewerID", rating="overall", title="summary",
        text="reviewText", timestamp="unixReviewTime", timestamp_format="unix",
        product_name=None, category=None, price=None),
    # Kaggle "Amazon Books Reviews" Books_rating.csv: no review id, User_id often empty.
    "amazon_books_kaggle": FieldMapping(
        review_id=None, id_from=["Id", "User_id", "profileName", "review/time", "review/text"],
        product_id="Id", product_name="Title", price="Price", reviewer_id="User_id",
        rating="review/score", title="review/summary", text="review/text",
        timestamp="review/time", timestamp_format="unix", category=None),
}


class ReviewsInputError(ValueError):
    """A review input that cannot be read at all: names the path and what was expected."""


class ReviewsConfig(BaseModel):
    """Where reviews come from: files by mapping, or (empty ``paths``) the seeded generator."""

    # Review files or folders (walked recursively, symlinks refused): .jsonl/.json/.ndjson
    # (JSON lines), .csv, .parquet; the text formats may be gzip'd (.json.gz).
    paths: list[str] = []
    mapping: str | FieldMapping = "default"  # a FIELD_MAPPINGS name, or a mapping of your own
    seed: int = 0  # same seed -> byte-identical products, reviews and aspect records
    n_products: int = Field(24, ge=1)  # spread round-robin over the categories
    reviews_per_product: int = Field(30, ge=1)  # mean; each product gets 50-150 % of it
    abusive_rate: float = Field(0.04, ge=0.0, le=1.0)  # share of reviews with coarse language
    duplicate_rate: float = Field(0.03, ge=0.0, le=1.0)  # share posted twice (half exact copies)
    start_date: date = date(2024, 1, 1)  # first day reviews are written
    span_days: int = Field(182, ge=1)  # ~26 weekly / 6 monthly windows for the batch stage
    # Reviews quoted per summary prompt: the demo model reads 256 tokens, and a target may only
    # use what its prompt shows, so bigger groups are cut into several prompts.
    max_reviews_per_prompt: int = Field(3, ge=1)

    @field_validator("mapping")
    @classmethod
    def _known_mapping(cls, value: str | FieldMapping) -> str | FieldMapping:
        if isinstance(value, str) and value not in FIELD_MAPPINGS:
            raise ValueError(f"mapping {value!r}: expected one of {sorted(FIELD_MAPPINGS)} "
                             f"or a field mapping")
        return value

    def field_mapping(self) -> FieldMapping:
        return FIELD_MAPPINGS[self.mapping] if isinstance(self.mapping, str) else self.mapping


# ---------------------------------------------------------------------------------------------
# Files: listing and raw records
# ---------------------------------------------------------------------------------------------

REVIEW_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                   ".parquet": "parquet"}
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
                raise ReviewsInputError(f"reviews path {given}: unsupported file type (expected "
                                        f"{', '.join(sorted(REVIEW_SUFFIXES))}, optionally .gz)")
            files.append(resolved)
            continue
        try:
            files += [p for p in walk_refusing_symlinks(resolved) if review_format(p)]
        except CorpusInputError as exc:
            raise ReviewsInputError(f"reviews input: {exc}") from exc
    for path in files:
        try:
            check_readable(review_format(path), path)
        except CorpusInputError as exc:
            raise ReviewsInputError(f"reviews input: {exc}") from exc
    return files


class RawRecord(NamedTuple):
    origin: str  # file:line (text formats) or file#row (Parquet)
    fields: dict | None  # None when nothing could be parsed
    error: str | None


def raw_records(path: Path) -> Iterator[RawRecord]:
    """The records of one file as the source wrote them, each with any read error."""
    kind = review_format(path)
    reader = {"jsonl": _json_line_records, "csv": _csv_records,
              "parquet": _parquet_records}[kind]
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
                yield RawRecord(origin, None, _join(error, f"invalid JSON: {exc.msg} at column "
                                                           f"{exc.colno}"))
                continue
            if not isinstance(obj, dict):
                yield RawRecord(origin, None, _join(error, f"expected a JSON object, got "
                                                           f"{type(obj).__name__}"))
                continue
            yield RawRecord(origin, obj, error)


def _csv_records(path: Path) -> Iterator[RawRecord]:
    # surrogateescape keeps undecodable bytes visible per row; utf-8-sig drops a BOM
    with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig",
                                                     errors="surrogateescape", newline="") as f:
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
                row = [cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                       for cell in row]
            yield RawRecord(origin, dict(zip(header, row)), error)


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


def parse_timestamp(value: Any, fmt: TimestampFormat = "auto"
                    ) -> tuple[datetime | None, str | None]:
    """A UTC datetime from unix seconds/ms, ISO 8601 or "MM DD, YYYY" (``fmt`` narrows it)."""
    try:
        moment = _parse_timestamp(value, fmt)
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None:
        expected = {"auto": "unix seconds, ISO 8601 or 'MM DD, YYYY'", "unix": "unix seconds",
                    "unix_ms": "unix milliseconds", "iso": "ISO 8601",
                    "month_day_year": "'MM DD, YYYY'"}[fmt]
        return None, f"timestamp {value!r} is not {expected}"
    return moment, None


def _parse_timestamp(value: Any, fmt: TimestampFormat) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = value.strip() if isinstance(value, str) else None
    if (fmt in ("auto", "unix", "unix_ms") and not isinstance(value, bool)
            and (isinstance(value, (int, float)) or (text and _NUMBER.fullmatch(text)))):
        seconds = float(value)
        if fmt == "unix_ms" or (fmt == "auto" and abs(seconds) > MILLISECONDS_ABOVE):
            seconds /= 1000
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if text is None:
        return None
    if fmt in ("auto", "month_day_year") and (match := _MONTH_DAY_YEAR.fullmatch(text)):
        month, day, year = map(int, match.groups())
        return datetime(year, month, day, tzinfo=timezone.utc)
    if fmt in ("auto", "iso"):
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def parse_price(value: Any) -> tuple[float | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        price = float(value.strip().lstrip("$") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, f"price {value!r} is not a number"
    return (price, None) if math.isfinite(price) and price >= 0 else \
        (None, f"price {value!r} is not a price")


def _as_text(value: Any, name: str) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value), None  # numeric ids and the like
    return None, f"field {name!r} is {type(value).__name__}, expected text"


def derived_review_id(fields: dict, id_from: Sequence[str]) -> str:
    """A stable id from the named fields' values (absent fields count as empty)."""
    values = ["" if fields.get(name) is None else str(fields[name]) for name in id_from]
    return "h" + hashlib.sha256("\x1f".join(values).encode("utf-8", "surrogatepass")
                                ).hexdigest()[:24]


def review_from_fields(fields: dict | None, mapping: FieldMapping, origin: str,
                       error: str | None = None) -> dict:
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
    problems += [f"missing field {getattr(mapping, name)!r} ({name})" for name in required
                 if raw_value(name) is None]

    def take(name: str, convert=None):
        raw = raw_value(name)
        if raw is None:
            return None
        source = getattr(mapping, name)
        value, problem = convert(raw) if convert else _as_text(raw, source)
        if problem:
            problems.append(problem)
        return value

    record["review_id"] = take("review_id") if mapping.review_id else \
        derived_review_id(fields, mapping.id_from)
    for name in ("product_id", "product_name", "category", "reviewer_id", "title", "text"):
        record[name] = take(name)
    record["rating"] = take("rating", parse_rating)
    record["price"] = take("price", parse_price)
    record["reviewed_at"] = take("timestamp",
                                 lambda v: parse_timestamp(v, mapping.timestamp_format))
    record["ingest_error"] = "; ".join(problems) or None
    return record


# ---------------------------------------------------------------------------------------------
# Ingestion
# ---------------------------------------------------------------------------------------------

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


def _records_and_aspects(config: ReviewsConfig, counts: dict
                         ) -> tuple[Iterator[dict], list[dict] | None]:
    if config.paths:
        files = list_review_files(config.paths)
        counts.update(mode="files", files=len(files))
        source, aspects = file_records(files, config.field_mapping()), None
    else:
        reviews, aspects = generate_reviews(config)
        counts.update(mode="generator", files=0)
        source = generated_records(reviews)
    counts.update(records_read=0, duplicates_dropped=0, ingest_errors=0)
    return _counting_errors(drop_exact_duplicates(source, counts), counts), aspects


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
    df = spark.createDataFrame([tuple(r[f] for f in REVIEW_FIELDS) for r in records],
                               REVIEWS.schema)
    # MERGE on review_id: reviews accumulate across runs, and re-ingesting the same reviews
    # changes nothing, so the Change Data Feed shows the batch stage only what is new
    manifest = write_table(spark, REVIEWS, df, txn_id=txn_id, mode="merge", root=root)
    manifest["stats"] = stats
    manifest["aspects"] = None if aspects is None else write_review_aspects(
        spark, aspects, txn_id, root)
    return manifest


def write_review_aspects(spark, aspects: Sequence[dict], txn_id: str,
                         root: Path | None = None) -> dict:
    from infra.lake import write_table

    columns = [c.split()[0] for c in REVIEW_ASPECTS_SCHEMA.split(", ")]
    df = spark.createDataFrame([tuple(a[c] for c in columns) for a in aspects],
                               REVIEW_ASPECTS.schema)
    return write_table(spark, REVIEW_ASPECTS, df, txn_id=txn_id, mode="merge", root=root)


# ---------------------------------------------------------------------------------------------
# The catalogue: categories, aspects and the phrases reviews are written from
# ---------------------------------------------------------------------------------------------
# Placeholders: {item} (the product noun), {brand}, {price}, {n} (a small count). Keywords are
# word starts ("durab" finds durable and durability); each aspect's sentences use its own
# keywords and no other aspect's, so text and aspect records agree.


@dataclass(frozen=True)
class Aspect:
    name: str  # as aspect records, scores and the teacher name it
    keywords: tuple[str, ...]  # word starts a reader (or the keyword baseline) spots it by
    liked: str  # short phrase for "features liked best"
    complaint: str  # short phrase for "points of negative feedback"
    praise: tuple[str, ...]
    criticism: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    items: tuple[str, ...]  # product nouns that read after "this"
    price_range: tuple[float, float]  # dollars
    aspects: tuple[Aspect, ...]  # every product of the category has these


VALUE = Aspect(
    "value for money", ("price", "value", "money", "worth", "overpriced", "penny"),
    "great value for money", "overpriced for what it is",
    ("For the price, you really cannot beat it.", "Excellent value for money.",
     "Worth every penny at ${price}.", "Half the price of the big brands and just as good."),
    ("Way overpriced for what you get.", "Not worth ${price}, not even close.",
     "Poor value for money.", "You can get better for half the price."))

COMMON_ASPECTS = (
    Aspect("customer service", ("customer service", "support", "seller", "refund"),
           "helpful customer service", "unhelpful customer service",
           ("Customer service was quick and friendly when I had a question.",
            "The seller's support team sorted out a problem within a day.",
            "Great customer service, they replaced a faulty part for free.",
            "Support answered my email the same afternoon."),
           ("Customer service never answered my emails.",
            "Support was useless and kept me waiting for {n} days.",
            "The seller refused a refund and stopped replying.",
            "I spent {n} hours on hold with customer service.")),
    Aspect("delivery", ("delivery", "shipping", "arrived", "courier"),
           "fast delivery", "slow or botched delivery",
           ("Delivery was fast, it arrived in {n} days.",
            "Shipping was quick and the box arrived in perfect condition.",
            "Arrived a day earlier than promised.", "Speedy delivery, well boxed."),
           ("Delivery took {n} weeks.", "It arrived late and the box was crushed.",
            "Shipping was a mess, the courier left it in the rain.",
            "It arrived with parts missing.")),
    Aspect("durability", ("durab", "broke", "breaks", "falling apart", "fell apart", "wear",
                          "worn", "held up", "holds up", "stopped working"),
           "durable, holds up well", "breaks or wears out quickly",
           ("After {n} months of daily use it has held up perfectly.",
            "Very durable, it survived a few drops without a scratch.",
            "Durable and well made, nothing has worn or come loose.",
            "It holds up to heavy daily use."),
           ("It broke after {n} weeks.", "Stopped working after a month.",
            "Started falling apart within {n} weeks.", "Parts wear out in no time.")),
    Aspect("ease of use", ("easy to use", "ease of use", "intuitive", "confusing",
                           "instructions", "setup", "set up"),
           "easy to use", "confusing to use",
           ("Really easy to use straight out of the box.",
            "Setup took two minutes and the controls are intuitive.",
            "The instructions are clear and it is easy to use.",
            "Even my parents found it easy to use."),
           ("The controls are confusing and the instructions make no sense.",
            "Setup was a nightmare.",
            "Not easy to use at all, I had to watch {n} videos to figure it out.",
            "Confusing buttons, I still cannot work it out.")),
)

CATEGORIES: tuple[Category, ...] = (
    Category("audio", ("wireless headset", "wireless speaker", "portable radio",
                       "pair of earbuds"), (19.0, 149.0), (
        Aspect("battery life", ("battery", "batteries"), "long battery life",
               "short battery life",
               ("The battery easily lasts {n} days between charges.", "Battery life is superb.",
                "I only need to top up the battery once a week.",
                "Battery life is even better than advertised."),
               ("The battery dies after {n} hours.", "Battery life is terrible.",
                "The battery barely makes it through a morning.",
                "The battery drains even when it is switched off.")),
        Aspect("sound quality", ("sound", "audio", "bass", "volume"), "great sound quality",
               "poor sound quality",
               ("The sound is crisp with deep bass.",
                "Sound quality is fantastic for something so little.",
                "Clear audio even at full volume.", "Rich, balanced sound."),
               ("The sound is tinny and the bass is muddy.",
                "Audio crackles at anything above half volume.",
                "Sound quality is flat and lifeless.", "There is a constant hiss in the audio.")),
        Aspect("connectivity", ("bluetooth", "pairing", "pairs with", "connect", "disconnect"),
               "reliable bluetooth connection", "bluetooth keeps disconnecting",
               ("Pairs with my phone instantly.",
                "The bluetooth connection is rock solid, even two rooms away.",
                "Connects to my laptop and phone without any fuss.",
                "Never once dropped the connection."),
               ("The bluetooth connection drops every few minutes.",
                "Pairing fails half the time.", "It keeps disconnecting from my phone.",
                "Could not get it to connect to my laptop at all.")),
        Aspect("charging", ("charging", "charger", "cable", "usb"), "fast charging",
               "slow or faulty charging",
               ("Charging is quick, full in about an hour.", "USB-C charging is a nice touch.",
                "Tops up fast from any USB charger.", "The charging cable is long and sturdy."),
               ("Charging takes forever.",
                "The charging socket is loose and the cable falls out.",
                "It stopped charging after {n} weeks.",
                "It only charges with the original cable.")),
    )),
    Category("kitchen", ("blender", "coffee maker", "kettle", "toaster", "air fryer"),
             (24.0, 199.0), (
        Aspect("noise", ("noise", "noisy", "loud", "quiet"), "quiet operation", "too noisy",
               ("It is surprisingly quiet.", "Quiet enough to use while the baby sleeps.",
                "Much less noise than my old one.", "Runs quietly, no rattling."),
               ("It is incredibly loud.", "The noise is unbearable, like a jet engine.",
                "Far too noisy for early mornings.", "It rattles and whines loudly.")),
        Aspect("cleaning", ("clean", "dishwasher"), "easy to clean", "hard to clean",
               ("Easy to clean, the parts go in the dishwasher.", "Cleaning takes seconds.",
                "Wipes clean in no time.", "Nothing gets stuck, so cleaning is painless."),
               ("A pain to clean, food gets stuck everywhere.", "Impossible to clean properly.",
                "The parts are not dishwasher safe and cleaning takes ages.",
                "Gunk builds up in corners you cannot clean.")),
        Aspect("capacity", ("capacity", "servings", "batches", "big enough"),
               "generous capacity", "too small capacity",
               ("Plenty of capacity for a family of {n}.",
                "The large capacity saves me doing two batches.",
                "Big enough for a week of meal prep.", "Generous capacity for the footprint."),
               ("The capacity is tiny, barely enough for one.",
                "Not big enough for more than {n} servings.",
                "Capacity is much smaller than the listing suggests.",
                "I have to do three batches because the capacity is so small.")),
        Aspect("performance", ("performance", "power", "underpowered", "heat", "weak"),
               "powerful performance", "weak performance",
               ("Powerful motor, it gets the job done in seconds.",
                "Heats up fast and cooks evenly.",
                "Performance is excellent, even with tough jobs.",
                "Plenty of power for everything I throw at it."),
               ("The motor is weak and struggles with anything tough.",
                "It takes forever to heat up.", "Performance is underwhelming.",
                "Underpowered, it barely copes with the basics.")),
    )),
    Category("apparel", ("rain jacket", "hoodie", "fleece", "t-shirt", "pair of jeans"),
             (15.0, 129.0), (
        Aspect("fit", ("fit", "sizing", "size", "tight", "baggy"), "great fit",
               "poor fit, sizing is off",
               ("Fits perfectly, true to size.", "The fit is spot on.",
                "Great fit, not too tight and not baggy.",
                "Sizing is accurate, I ordered my usual size."),
               ("Runs at least {n} sizes small.",
                "The fit is awful, tight in the shoulders and baggy at the waist.",
                "Sizing is way off.", "It does not fit like the size chart says.")),
        Aspect("comfort", ("comfort", "uncomfortable", "itchy", "soft"), "very comfortable",
               "uncomfortable",  # not "... to wear": "wear" is a durability keyword
               ("Really comfortable, I could live in it.", "So soft and comfortable.",
                "Comfortable even on long walks.", "The most comfortable {item} I own."),
               ("Uncomfortable after an hour.", "Itchy and scratchy against the skin.",
                "Not comfortable at all, it rubs.", "Stiff and uncomfortable.")),
        Aspect("material", ("material", "fabric", "stitching", "thread"), "quality material",
               "cheap, thin material",
               ("The fabric feels premium and thick.", "Quality material with neat stitching.",
                "The material is thick and well finished.",
                "Excellent fabric that has not pilled at all."),
               ("The fabric is thin and see-through.", "Cheap material that pilled in days.",
                "Loose threads and sloppy stitching everywhere.",
                "The material feels like plastic.")),
        Aspect("colour and style", ("colour", "color", "styl", "faded", "fade", "looks"),
               "looks great", "colour fades or looks cheap",
               ("The colour is exactly as pictured.",
                "Looks stylish, I get compliments every time.",
                "Lovely rich colour that has not faded.", "Great style, very flattering."),
               ("The colour is nothing like the photos.", "Faded badly within a couple of weeks.",
                "Looks cheap in person.", "The colour bled onto my other clothes.")),
    )),
    Category("beauty", ("face cream", "shampoo", "sunscreen", "body lotion", "lip balm"),
             (6.0, 69.0), (
        Aspect("scent", ("scent", "smell", "fragrance", "perfume"), "pleasant scent",
               "unpleasant scent",
               ("Lovely light scent.", "Smells amazing, not overpowering.",
                "The fragrance is subtle and fresh.", "I love the scent."),
               ("The smell is overpowering and chemical.", "Smells awful, like cheap perfume.",
                "The scent gave me a headache.", "Horrible fragrance that lingers all day.")),
        Aspect("texture", ("texture", "greasy", "sticky", "absorb", "consisten"), "nice texture",
               "greasy or sticky texture",
               ("Light texture that absorbs quickly.", "Lovely silky texture.",
                "Not greasy or sticky at all.", "The consistency is just right."),
               ("Greasy and sticky, it never absorbs.", "The texture is gloopy and clumps.",
                "Leaves a sticky film.", "Strange watery consistency.")),
        Aspect("effectiveness", ("effective", "results", "difference", "irritat", "breakout"),
               "visible results", "no results or irritation",
               ("Noticeable results within a week.",
                "It made a real difference to my dry skin.",
                "Very effective, exactly as promised.", "After {n} days I could see results."),
               ("No difference at all after {n} weeks.", "No visible results whatsoever.",
                "It caused irritation and redness.", "Gave me breakouts within days.")),
        Aspect("packaging", ("packaging", "pump", "bottle", "tube", "lid", "leak"),
               "practical packaging", "leaky or awkward packaging",
               ("The pump dispenses just the right amount.",
                "Sturdy packaging that travels well.",
                "The tube is easy to squeeze to the last drop.",
                "Nice packaging, the lid clicks shut."),
               ("The pump jams constantly.", "The bottle leaked all over my bag.",
                "The lid cracked on day one.",
                "Impossible to get the last third out of the tube.")),
    )),
)

ASPECTS: dict[str, Aspect] = {a.name: a for a in
                              (VALUE, *COMMON_ASPECTS, *(a for c in CATEGORIES for a in c.aspects))}
COMMON_PER_PRODUCT = 2  # common aspects a product has besides value for money

BRANDS = ("Acme", "Nordlys", "Kestrel", "Volta", "Brio", "Lumen", "Tandem", "Orla", "Pico",
          "Rowan", "Sable", "Juniper")
MODELS = ("X2", "Pro", "Lite", "Go", "Max", "Air", "One", "Plus", "S", "Mini")

# Star ratings -> openers, titles and closers; none of them mentions an aspect.
_TITLES = {5: ("Love it", "Exactly what I needed", "Highly recommend", "Five stars"),
           4: ("Very good", "Happy with it", "Solid choice", "Almost perfect"),
           3: ("It's okay", "Mixed feelings", "Average at best", "Does the job, mostly"),
           2: ("Disappointed", "Not great", "Expected better", "Meh"),
           1: ("Avoid", "Terrible", "Returned it", "Do not buy")}
_OPENERS = {5: ("Absolutely love this {item}.", "Best {item} I have owned.",
                "Really impressed with this {item}."),
            4: ("Pretty happy with this {item} overall.", "Good {item} for the most part.",
                "A solid {item}."),
            3: ("This {item} is okay, nothing special.", "Mixed feelings about this {item}.",
                "An average {item}."),
            2: ("Not impressed with this {item}.", "I expected more from {brand}.",
                "A rather disappointing {item}."),
            1: ("The worst {item} I have ever bought.", "Do not buy this {item}.",
                "Save yourself the trouble and skip this {item}.")}
_CLOSERS = {"high": ("Would buy again.", "Recommended.", "Very happy."),
            "mid": ("Might keep it, might not.", "Not sure I would buy it again."),
            "low": ("Returning it.", "Would not recommend.", "Avoid.")}
# Coarse language (every line trips coarse_language_flag): insults for unhappy reviewers,
# swearing-as-emphasis for happy ones — the flag is about language, not sentiment.
_COARSE_NEGATIVE = ("What a piece of crap.", "Total sh*t, avoid.",
                    "Whoever designed this is a complete idiot.", "F***ing useless {item}.",
                    "This is total bullshit.", "Damn thing is a joke.",
                    "The people who sell this are morons.")
_COARSE_POSITIVE = ("This {item} is f*cking brilliant.", "Damn good {item}.",
                    "Holy sh*t, this is good.", "Kicks ass.")
_NEAR_DUPLICATE_EDITS = ("append", "lower", "exclaim", "update")

# (criticisms, praises) a review of each star rating makes: {count: weight}
_MENTIONS = {1: ({1: 3, 2: 4, 3: 3}, {0: 1}),
             2: ({1: 5, 2: 5}, {0: 7, 1: 3}),
             3: ({1: 3, 2: 1}, {1: 3, 2: 1}),
             4: ({0: 6, 1: 4}, {1: 5, 2: 5}),
             5: ({0: 19, 1: 1}, {1: 3, 2: 4, 3: 3})}
RATING_SPREAD = 1.2  # stars: std of a product's rating distribution
ANGRY_SHARE = 0.05  # 1-star reviews whatever the product: real ratings are J-shaped
RANT_CRITICISMS = 3  # a 1-star review criticising this many aspects is "especially negative"


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    item: str
    brand: str
    price: float
    quality: dict[str, float]  # aspect name -> hidden quality in [-1, 1]: the product's aspects


def generate_products(config: ReviewsConfig) -> list[Product]:
    """Products round-robin over the categories; product i depends only on (seed, i)."""
    return [_product(config.seed, i) for i in range(config.n_products)]


def _product(seed: int, index: int) -> Product:
    rng = random.Random(f"{seed}:product:{index}")
    category = CATEGORIES[index % len(CATEGORIES)]
    item, brand, model = rng.choice(category.items), rng.choice(BRANDS), rng.choice(MODELS)
    low, high = category.price_range
    price = math.floor(rng.uniform(low, high)) + 0.99
    commons = rng.sample(COMMON_ASPECTS, COMMON_PER_PRODUCT)
    aspects = [*category.aspects, VALUE, *sorted(commons, key=COMMON_ASPECTS.index)]
    quality = {a.name: round(rng.uniform(-1, 1), 3) for a in aspects}
    # dear products are judged harder on value
    dearness = (price - low) / (high - low)
    quality[VALUE.name] = round(max(-1.0, min(1.0, quality[VALUE.name] - (dearness - 0.5))), 3)
    return Product(f"P{seed}-{index:04d}", f"{brand} {model} {item}", category.name, item,
                   brand, price, quality)


def generate_reviews(config: ReviewsConfig) -> tuple[list[dict], list[dict]]:
    """(reviews, aspect_records). Reviews carry the bronze/reviews fields plus the truth
    ``abusive`` (has coarse language) and ``duplicate_of`` (None, or the id it re-posts; an
    exact re-delivery has the same id). Aspect records: review_id, product_id, aspect,
    polarity (+1 praised, -1 criticised), one per (review id, aspect)."""
    reviews: list[dict] = []
    aspects: list[dict] = []
    for product_index, product in enumerate(generate_products(config)):
        rng = random.Random(f"{config.seed}:count:{product_index}")
        count = rng.randint(max(1, config.reviews_per_product // 2),
                            max(1, config.reviews_per_product * 3 // 2))
        for k in range(count):
            review, mentions, copies = _review(config, product, product_index, k)
            reviews += [review, *copies]
            # an exact re-delivery shares its original's id, and so its records
            for review_id in dict.fromkeys(r["review_id"] for r in [review, *copies]):
                aspects += [{"review_id": review_id, "product_id": product.product_id,
                             "aspect": name, "polarity": polarity}
                            for name, polarity in mentions]
    reviews.sort(key=lambda r: (r["reviewed_at"], r["review_id"]))  # stable: copies stay after
    aspects.sort(key=lambda a: (a["review_id"], a["aspect"]))
    return reviews, aspects


def _review(config: ReviewsConfig, product: Product, product_index: int, k: int
            ) -> tuple[dict, list[tuple[str, int]], list[dict]]:
    """(review, [(aspect, polarity)], duplicate copies) for review k of a product."""
    rng = random.Random(f"{config.seed}:review:{product_index}:{k}")
    rating = _draw_rating(product, rng)
    criticised, praised = _pick_aspects(product, rating, rng)
    values = {"item": product.item, "brand": product.brand, "price": f"{product.price:.2f}"}
    abusive = rng.random() < config.abusive_rate
    text = _compose_text(rating, criticised, praised, values, abusive, rng)
    start = datetime.combine(config.start_date, time(), tzinfo=timezone.utc)
    review = {
        "review_id": f"r{config.seed}-{product_index}-{k}",  # short: prompts quote it
        "product_id": product.product_id, "product_name": product.name,
        "category": product.category, "price": product.price,
        "reviewer_id": f"u{config.seed}-{rng.randrange(max(1, config.n_products * 10)):05d}",
        "rating": rating, "title": rng.choice(_TITLES[rating]), "text": text,
        "reviewed_at": start + timedelta(seconds=rng.randrange(config.span_days * 86400)),
        "source": "generator", "origin": f"generator:seed={config.seed}",
        "ingest_error": None, "abusive": abusive, "duplicate_of": None,
    }
    mentions = [(a, -1) for a in criticised] + [(a, 1) for a in praised]
    copies = []
    if rng.random() < config.duplicate_rate:
        copies.append(dict(review) if rng.random() < 0.5 else _near_duplicate(review, rng))
    return review, mentions, copies


def _draw_rating(product: Product, rng: random.Random) -> int:
    if rng.random() < ANGRY_SHARE:
        return 1
    mean_quality = sum(product.quality.values()) / len(product.quality)
    centre = 4.0 + 2.0 * mean_quality  # stars: better products draw better ratings
    weights = [math.exp(-((r - centre) ** 2) / (2 * RATING_SPREAD ** 2)) for r in range(1, 6)]
    return rng.choices(range(1, 6), weights)[0]


def _pick_aspects(product: Product, rating: int, rng: random.Random
                  ) -> tuple[list[str], list[str]]:
    """Criticised aspects lean to the product's worst, praised ones to its best."""
    n_bad, n_good = (_weighted_count(table, rng) for table in _MENTIONS[rating])
    names = list(product.quality)
    criticised = _weighted_sample(names, [math.exp(-2 * product.quality[a]) for a in names],
                                  n_bad, rng)
    rest = [a for a in names if a not in criticised]
    praised = _weighted_sample(rest, [math.exp(2 * product.quality[a]) for a in rest], n_good,
                               rng)
    return criticised, praised


def _weighted_count(table: dict[int, int], rng: random.Random) -> int:
    return rng.choices(list(table), list(table.values()))[0]


def _weighted_sample(items: list[str], weights: list[float], n: int,
                     rng: random.Random) -> list[str]:
    items, weights, chosen = list(items), list(weights), []
    for _ in range(min(n, len(items))):
        i = rng.choices(range(len(items)), weights)[0]
        chosen.append(items.pop(i))
        weights.pop(i)
    return chosen


def _compose_text(rating: int, criticised: list[str], praised: list[str], values: dict,
                  abusive: bool, rng: random.Random) -> str:
    def say(name: str, good: bool) -> str:
        aspect = ASPECTS[name]
        return rng.choice(aspect.praise if good else aspect.criticism).format(
            n=rng.randint(2, 9), **values)

    bad = [say(a, False) for a in criticised]
    good = [say(a, True) for a in praised]
    if rating >= 4:  # happy: praise first, then the niggle
        body = good + [_after("My only complaint: ", s) for s in bad[:1]] + bad[1:]
    elif rating == 3:
        body = good + [_after("However, ", s) for s in bad[:1]] + bad[1:]
    else:  # unhappy: complaints first, a grudging plus at the end
        body = bad + [_after("On the plus side, ", s) for s in good[:1]] + good[1:]
    sentences = [rng.choice(_OPENERS[rating]).format(**values), *body]
    if rng.random() < 0.5:
        sentences.append(rng.choice(_CLOSERS[rating_band(rating)]))
    if abusive:
        pool = _COARSE_POSITIVE if rating >= 4 else _COARSE_NEGATIVE
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(pool).format(**values))
    return " ".join(sentences)


def _after(connector: str, sentence: str) -> str:
    """connector + sentence, its first letter lowered unless it is "I" or an acronym."""
    first = sentence.split()[0]
    if first == "I" or first.split("-")[0].isupper():
        return connector + sentence
    return connector + sentence[0].lower() + sentence[1:]


def _near_duplicate(review: dict, rng: random.Random) -> dict:
    """The same reviewer posting (nearly) the same review again, a day or three later."""
    edit = rng.choice(_NEAR_DUPLICATE_EDITS)
    text = review["text"]
    text = {"append": text + " Still feel the same.", "lower": text.lower(),
            "exclaim": text[:-1] + "!" if text.endswith(".") else text + "!",
            "update": "Update: " + text}[edit]
    return {**review, "review_id": review["review_id"] + "d", "text": text,
            "reviewed_at": review["reviewed_at"] + timedelta(days=rng.randint(1, 3)),
            "duplicate_of": review["review_id"]}


# ---------------------------------------------------------------------------------------------
# Groups and the summary prompt (the instruction genai-reviews learns)
# ---------------------------------------------------------------------------------------------

RATING_BANDS = {"low": (1, 2), "mid": (3, 3), "high": (4, 5)}
def rating_band(rating: int) -> str:
    """low (1-2 stars) | mid (3) | high (4-5): the seed asks its questions per band."""
    for band, (lo, hi) in RATING_BANDS.items():
        if lo <= rating <= hi:
            return band
    raise ValueError(f"rating {rating!r} is not 1-5 stars")


# ---------------------------------------------------------------------------------------------
# The rule-based teacher and the summary's fields
# ---------------------------------------------------------------------------------------------

NONE = "none"  # what an answer says for an empty list
TOP_POINTS = 3  # the seed asks for the top three points


def teacher_summary(reviews: Sequence[dict], aspect_records: Iterable[dict]) -> dict:
    """The seed's four answers for a group of reviews, from the generator's aspect records:
    negative_points (the most criticised aspects, most first, at most three), liked_features
    (the most praised), value_for_money (a sentence from the price aspect's polarity), and
    flagged_review_ids (coarse language, or a 1-star review criticising three aspects or more).
    Ties go to the aspect named first in the catalogue."""
    ids = {r["review_id"] for r in reviews}
    mine = [a for a in aspect_records if a["review_id"] in ids]
    criticised = Counter(a["aspect"] for a in mine if a["polarity"] < 0)
    praised = Counter(a["aspect"] for a in mine if a["polarity"] > 0)
    seen = _first_mentions(reviews, mine)
    criticisms_of = Counter(a["review_id"] for a in mine if a["polarity"] < 0)
    flagged = [r["review_id"] for r in reviews
               if coarse_language_flag(f"{r.get('title') or ''} {r['text']}")
               or (r["rating"] == 1 and criticisms_of[r["review_id"]] >= RANT_CRITICISMS)]
    return {
        "negative_points": [_phrase(a, "complaint") for a in _most_common(criticised, seen)],
        "liked_features": [_phrase(a, "liked") for a in _most_common(praised, seen)],
        "value_for_money": _value_sentence(praised[VALUE.name], criticised[VALUE.name],
                                           reviews[0].get("price") if reviews else None),
        "flagged_review_ids": flagged,
    }


def _most_common(counts: Counter, first_seen: dict[str, tuple] | None = None) -> list[str]:
    """The TOP_POINTS most counted; ties in the order the reviews first mention them
    (``first_seen``), then in catalogue order."""
    order = list(ASPECTS)
    rank = {name: order.index(name) if name in ASPECTS else len(order) for name in counts}
    seen = first_seen or {}
    never = (math.inf, math.inf)
    return sorted(counts, key=lambda a: (-counts[a], seen.get(a, never), rank[a], a)
                  )[:TOP_POINTS]


def _first_mentions(reviews: Sequence[dict], records: Iterable[dict]) -> dict[str, tuple]:
    """aspect -> (review index, character offset) of its first mention in the reviews' text:
    a summary that lists tied points in reading order is one a small model can learn."""
    by_review: dict[str, list[str]] = {}
    for record in records:
        by_review.setdefault(record["review_id"], []).append(record["aspect"])
    first: dict[str, tuple] = {}
    for index, review in enumerate(reviews):
        text = normalise_phrase(f"{review.get('title') or ''} {review['text'] or ''}")
        for aspect in by_review.get(review["review_id"], []):
            if aspect in first or aspect not in ASPECTS:
                continue
            match = _aspect_pattern(aspect).search(text)
            first[aspect] = (index, match.start() if match else math.inf)
    return first


def _phrase(aspect: str, kind: Literal["complaint", "liked"]) -> str:
    return getattr(ASPECTS[aspect], kind) if aspect in ASPECTS else aspect


def _value_sentence(praised: int, criticised: int, price: float | None) -> str:
    at = f" at ${price:.2f}" if price is not None else ""
    if praised > criticised:
        return f"Yes, reviewers who mention the price find it good value{at}."
    if criticised > praised:
        return f"No, reviewers who mention the price find it overpriced{at}."
    if praised:
        return f"Mixed, reviewers disagree on whether it is worth the price{at}."
    return "Not mentioned, no reviewer comments on the price."


def review_training_pairs(config: ReviewsConfig, window: str = "week"
                          ) -> list[tuple[str, str]]:
    """(instruction, response) pairs for finetune_task, in the batch stage's own prompt and
    answer layout (pipelines.batch_llm): every (product, band, window) group of the generated
    reviews, in slices of ``max_reviews_per_prompt``, answered by the teacher. Exact
    re-deliveries are left out, as ingestion drops them."""
    from pipelines import batch_llm

    reviews, aspects = generate_reviews(config)
    seen: set[str] = set()
    unique = [r for r in reviews if not (r["review_id"] in seen or seen.add(r["review_id"]))]
    pairs = []
    for group in batch_llm.groups_in_memory(unique, window):
        for start in range(0, len(group.reviews), config.max_reviews_per_prompt):
            chunk = group.reviews[start:start + config.max_reviews_per_prompt]
            pairs.append((batch_llm.group_instruction(group, chunk),
                          batch_llm.answer_text(teacher_summary(chunk, aspects), chunk)))
    return pairs


def write_instruction_jsonl(pairs: Iterable[tuple[str, str]], path: Path | str) -> Path:
    """An instruction data set (``{"instruction", "response"}`` per line) that
    ``pipelines.synth.load_instruction_dataset`` and ``finetune_task`` read; written atomically."""
    from infra.files import write_text_atomic

    path = Path(path)
    text = "".join(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


# ---------------------------------------------------------------------------------------------
# Coarse language: a lexicon rule beside the LLM flag
# ---------------------------------------------------------------------------------------------
# A lexicon word matches only as a whole word (letters or digits on neither side: Scunthorpe
# and class pass), with a common ending (-s, -ed, -ing, -er, -y, -ic, -hole, -head, ...). Each
# letter may repeat (shiiit) or be a look-alike (sh1t, a$$, @ss); letters after the first may
# be masked with * # % (f*ck, f**k, f***ing). Not caught: spaced or dotted spellings
# (f u c k), coarse meaning in innocent words; names like Dick are false positives.

_LOOK_ALIKES = {"a": "@4", "e": "3", "i": "1!", "l": "1", "o": "0", "s": "$5", "t": "7"}
_MASKS = "*#%"
_ENDINGS = ("s", "es", "ed", "er", "ers", "ing", "in", "y", "ies", "ic", "hole", "holes",
            "head", "heads", "face", "bag")


def _letter_class(letter: str, maskable: bool) -> str:
    chars = letter + _LOOK_ALIKES.get(letter, "") + (_MASKS if maskable else "")
    return f"[{re.escape(chars)}]+"


def _word_pattern(word: str) -> str:
    return "".join(_letter_class(c, i > 0) for i, c in enumerate(word))


@lru_cache(maxsize=1)
def coarse_pattern() -> re.Pattern:
    words = [line.split("#")[0].strip().lower()
             for line in COARSE_WORDS_FILE.read_text(encoding="utf-8").splitlines()]
    words = sorted({w for w in words if w}, key=len, reverse=True)
    endings = "|".join(sorted(_ENDINGS, key=len, reverse=True))
    body = "|".join(_word_pattern(w) for w in words)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?:{endings})?(?![a-z0-9])", re.IGNORECASE)


def coarse_language_flag(text: str | None) -> bool:
    """True when the text uses a word of the coarse-language lexicon (see above)."""
    return bool(text) and coarse_pattern().search(text) is not None


# ---------------------------------------------------------------------------------------------
# Evaluation helpers
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _aspect_pattern(name: str) -> re.Pattern:
    aspect = ASPECTS[name]
    starts = sorted({*aspect.keywords, name}, key=len, reverse=True)
    return re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, starts)) + ")")


def normalise_phrase(text: str) -> str:
    """Lower case, punctuation to spaces, one space between words."""
    return " ".join(re.sub(r"[^a-z0-9$]+", " ", text.lower()).split())


def aspect_of_phrase(phrase: str) -> str | None:
    """The catalogue aspect a free-text point names: the one whose name and keywords it hits
    most (catalogue order breaks ties); None when it names none."""
    text = normalise_phrase(phrase)
    best, best_hits = None, 0
    for name in ASPECTS:
        hits = len(set(_aspect_pattern(name).findall(text)))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def negative_point_scores(predicted_points: Sequence[str], aspect_records_of_group:
                          Iterable[dict], k: int = TOP_POINTS) -> tuple[float, float]:
    """(precision, recall) of predicted negative points against the aspects the group's
    reviews criticise. Precision: the share of points that name a criticised aspect, each
    aspect credited once (a repeat dilutes). Recall: criticised aspects named, over
    min(criticised aspects, k) — a summary of k points can at best name k. Nothing predicted
    and nothing criticised scores (1, 1); "none" counts as nothing predicted."""
    truth = {a["aspect"] for a in aspect_records_of_group if a["polarity"] < 0}
    points = [p for p in predicted_points if normalise_phrase(p) not in ("", NONE)]
    if not points:
        return (1.0, 1.0) if not truth else (0.0, 0.0)
    named = {aspect_of_phrase(p) for p in points} & truth
    precision = len(named) / len(points)
    recall = len(named) / min(len(truth), k) if truth else 1.0
    return precision, recall


def keyword_baseline(reviews: Sequence[dict], k: int = TOP_POINTS) -> list[str]:
    """Negative points without a model: the aspects whose keywords the most low-rated
    reviews mention (1-2 stars; a group without any uses its lowest-rated reviews), named
    as the catalogue names them. Blind to polarity — which is what a model must beat."""
    if not reviews:
        return []
    cutoff = max(2, min(r["rating"] for r in reviews))
    mentions: Counter = Counter()
    for review in reviews:
        if review["rating"] <= cutoff:
            text = normalise_phrase(f"{review.get('title') or ''} {review['text'] or ''}")
            mentions.update(name for name in ASPECTS if _aspect_pattern(name).search(text))
    return _most_common(mentions)[:k]
