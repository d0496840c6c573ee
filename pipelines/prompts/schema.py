"""The review stage's tables and input settings: bronze/reviews with its quality gate, the
generator's truth table silver/review_aspects, the field mappings that read review files, and
:class:`ReviewsConfig` (files by mapping, or the seeded generator)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.lake import TableSpec, expect

# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

REVIEWS_SCHEMA = (
    "review_id STRING, product_id STRING, product_name STRING, category STRING, "
    "price DOUBLE, reviewer_id STRING, rating INT, title STRING, text STRING, "
    "reviewed_at TIMESTAMP, source STRING, origin STRING, ingest_error STRING"
)
REVIEW_FIELDS = tuple(column.split()[0] for column in REVIEWS_SCHEMA.split(", "))

# Far above any real review (the longest Amazon reviews run to ~30k characters), far below
# what would stall a batch: a longer text is quarantined with this expectation as its reason.
MAX_REVIEW_CHARS = 50_000

REVIEWS = TableSpec(
    layer="bronze",
    name="reviews",
    schema=REVIEWS_SCHEMA,
    key=("review_id",),  # implies not null + unique: differing copies of an id are quarantined
    expectations=(
        expect("column_values_to_be_null", column="ingest_error"),  # unreadable line, bad field
        expect("column_values_to_be_between", column="rating", min_value=1, max_value=5),
        expect("column_values_to_not_be_null", column="text"),
        expect("column_values_to_match_regex", column="text", regex=r"\S"),  # not empty/blank
        expect("column_value_lengths_to_be_between", column="text", max_value=MAX_REVIEW_CHARS),
        expect("column_values_to_not_be_null", column="reviewed_at"),
    ),
    description="Product reviews as read: review files by field mapping, or generated ones.",
)

REVIEW_ASPECTS_SCHEMA = "review_id STRING, product_id STRING, aspect STRING, polarity INT"

REVIEW_ASPECTS = TableSpec(
    layer="silver",
    name="review_aspects",
    schema=REVIEW_ASPECTS_SCHEMA,
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
        review_id=None,
        id_from=["reviewerID", "asin", "unixReviewTime", "summary", "reviewText"],
        product_id="asin",
        reviewer_id="reviewerID",
        rating="overall",
        title="summary",
        text="reviewText",
        timestamp="unixReviewTime",
        timestamp_format="unix",
        product_name=None,
        category=None,
        price=None,
    ),
    # Kaggle "Amazon Books Reviews" Books_rating.csv: no review id, User_id often empty.
    "amazon_books_kaggle": FieldMapping(
        review_id=None,
        id_from=["Id", "User_id", "profileName", "review/time", "review/text"],
        product_id="Id",
        product_name="Title",
        price="Price",
        reviewer_id="User_id",
        rating="review/score",
        title="review/summary",
        text="review/text",
        timestamp="review/time",
        timestamp_format="unix",
        category=None,
    ),
}


class ReviewsInputError(ValueError):
    """A review input that cannot be read at all: names the path and what was expected."""


class ProductsFile(BaseModel):
    """A product metadata file (JSON lines, CSV or Parquet, maybe gzip'd) joined to the
    reviews by product id, for the products' names (Amazon's meta_<Category>.json.gz)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    id: str = "asin"  # the field holding the product id the reviews name
    title: str = "title"  # the field holding the product's name


class ReviewsConfig(BaseModel):
    """Where reviews come from: files by mapping, or (empty ``paths``) the seeded generator."""

    model_config = ConfigDict(extra="forbid")

    # Review files or folders (walked recursively, symlinks refused): .jsonl/.json/.ndjson
    # (JSON lines), .csv, .parquet; the text formats may be gzip'd (.json.gz).
    paths: list[str] = []
    mapping: str | FieldMapping = "default"  # a FIELD_MAPPINGS name, or a mapping of your own
    products: ProductsFile | None = None  # names for reviews whose files carry none
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
            raise ValueError(
                f"mapping {value!r}: expected one of {sorted(FIELD_MAPPINGS)} or a field mapping"
            )
        return value

    def field_mapping(self) -> FieldMapping:
        return FIELD_MAPPINGS[self.mapping] if isinstance(self.mapping, str) else self.mapping
