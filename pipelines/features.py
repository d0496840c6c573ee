"""Structured data of the RAG stage: who the user is, what the hotels are, kept fresh in a
low-latency online store, and the features one request needs, computed when it arrives.

- **Tables** (:data:`USER_PREFERENCES`, :data:`HOTELS`): ``gold/user_preferences`` (key
  ``user_id``) and ``gold/hotels`` (key ``hotel_id``) from a seeded generator, written through
  the lake's quality gate and MERGEd on their keys, so a regenerate or an update changes rows
  in place and the Change Data Feed shows exactly the rows that changed. Row ``i`` depends only
  on ``(seed, i, revision)``; each revision re-prices (and re-books) ``update_share`` of the
  hotels and re-budgets as many users, a day after the previous one — what a scheduled sync
  has to carry over.
- **Hotel descriptions** (:func:`hotel_documents`): free text written from the same facts
  (type, stars, neighbourhood, city, amenities, rooms) for the vector index, one document per
  hotel with source id ``hotel:<hotel_id>``. Prices stay out of the text: they change, and the
  current one comes from the feature lookup.
- **Online store** (:class:`OnlineStore`): SQLite at ``$GENAI_HOME/online/features.sqlite``, one
  table per feature table keyed (PRIMARY KEY) by the Delta table's key, and ``_sync_state``
  recording the Delta table id, version and schema each table was last synced from.
  :func:`sync_online` copies only the rows changed since that version (Change Data Feed: the
  last change of each key wins; deletes propagate), or the whole table the first time, when
  the table was recreated, its schema changed or the feed cannot cover the range. One SQLite
  transaction per table: a crash leaves the previous state, whole.
- **Feature spec** (:class:`FeatureSpec`): the seed's FeatureLookup / FeatureFunction —
  lookups by key and on-demand Python functions over looked-up features and request fields,
  evaluated at request time. :func:`price_quote` is the price calculator (season, demand,
  nights → price per night, total, within-budget flag); :func:`default_feature_spec` is what the
  RAG chain asks for: the user's preferences, the retrieved hotels' facts and a price for each.
"""
from __future__ import annotations

import inspect
import json
import random
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from infra.lake import TableSpec, expect

if TYPE_CHECKING:
    from pipelines.rag import Document

# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

HOTEL_TYPES = ("boutique", "business", "resort", "budget", "family")
LOYALTY_TIERS = ("none", "silver", "gold", "platinum")
MAX_PARTY = 8  # people per booking the generator and the gate accept

USER_PREFERENCES_SCHEMA = ("user_id STRING, avg_budget DOUBLE, hotel_preference STRING, "
                           "preferred_city STRING, party_size INT, loyalty_tier STRING, "
                           "updated_at TIMESTAMP")

USER_PREFERENCES = TableSpec(
    layer="gold", name="user_preferences", schema=USER_PREFERENCES_SCHEMA,
    key=("user_id",),  # implies not null + unique
    expectations=(
        # per night, in the hotels' currency (EUR); 0 would make every hotel over budget
        expect("column_values_to_be_between", column="avg_budget", min_value=0, strict_min=True),
        expect("column_values_to_not_be_null", column="avg_budget"),
        expect("column_values_to_be_in_set", column="hotel_preference",
               value_set=list(HOTEL_TYPES)),
        expect("column_values_to_not_be_null", column="preferred_city"),
        expect("column_values_to_match_regex", column="preferred_city", regex=r"\S"),
        expect("column_values_to_be_between", column="party_size", min_value=1,
               max_value=MAX_PARTY),
        expect("column_values_to_be_in_set", column="loyalty_tier", value_set=list(LOYALTY_TIERS)),
        expect("column_values_to_not_be_null", column="updated_at"),
    ),
    description="Per user: budget per night, preferred hotel type and city, party size, "
                "loyalty tier (the RAG chain's structured user context).",
)

HOTELS_SCHEMA = ("hotel_id STRING, name STRING, city STRING, neighbourhood STRING, "
                 "hotel_type STRING, stars INT, rooms INT, amenities ARRAY<STRING>, "
                 "base_price DOUBLE, occupancy DOUBLE, updated_at TIMESTAMP")

HOTELS = TableSpec(
    layer="gold", name="hotels", schema=HOTELS_SCHEMA,
    key=("hotel_id",),
    expectations=(
        expect("column_values_to_not_be_null", column="name"),
        expect("column_values_to_not_be_null", column="city"),
        expect("column_values_to_match_regex", column="city", regex=r"\S"),
        expect("column_values_to_be_in_set", column="hotel_type", value_set=list(HOTEL_TYPES)),
        expect("column_values_to_be_between", column="stars", min_value=1, max_value=5),
        expect("column_values_to_be_between", column="rooms", min_value=1),
        expect("column_values_to_not_be_null", column="amenities"),
        # per night for the room, EUR, before season and demand
        expect("column_values_to_be_between", column="base_price", min_value=0, strict_min=True),
        expect("column_values_to_not_be_null", column="base_price"),
        # share of rooms booked for the coming nights: the price calculator's demand
        expect("column_values_to_be_between", column="occupancy", min_value=0, max_value=1),
        expect("column_values_to_not_be_null", column="occupancy"),
        expect("column_values_to_not_be_null", column="updated_at"),
    ),
    description="Per hotel: city, neighbourhood, type, stars, rooms, amenities, base price "
                "per night and current occupancy (what the price calculator reads).",
)

FEATURE_TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (USER_PREFERENCES, HOTELS)}

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

# Neighbourhoods the descriptions place hotels in, with a phrase about each.
CITY_NEIGHBOURHOODS: dict[str, dict[str, str]] = {
    "Lisbon": {"Alfama": "steep lanes, tiled facades and fado bars",
               "Chiado": "old cafes, bookshops and theatres",
               "Belem": "riverside monuments and the famous custard tarts"},
    "Barcelona": {"Gothic Quarter": "medieval alleys around the cathedral",
                  "Eixample": "wide avenues and modernist architecture",
                  "Barceloneta": "the city beach and seafood restaurants"},
    "Amsterdam": {"Jordaan": "quiet canals, galleries and brown cafes",
                  "De Pijp": "the Albert Cuyp market and lively bars",
                  "Museum Quarter": "the Rijksmuseum and Vondelpark close by"},
    "Berlin": {"Mitte": "the museums and Brandenburg Gate within walking distance",
               "Kreuzberg": "street food, clubs and the canal",
               "Prenzlauer Berg": "leafy squares, playgrounds and weekend markets"},
    "Prague": {"Old Town": "the astronomical clock and cobbled squares",
               "Mala Strana": "baroque palaces below the castle",
               "Vinohrady": "residential streets, wine bars and parks"},
    "Vienna": {"Innere Stadt": "the opera, the cathedral and grand cafes",
               "Neubau": "design shops and small theatres",
               "Leopoldstadt": "the Prater park and the Danube canal"},
    "Copenhagen": {"Nyhavn": "the colourful harbour front",
                   "Vesterbro": "the meatpacking district's restaurants",
                   "Norrebro": "multicultural streets and lakes"},
    "Edinburgh": {"Old Town": "the Royal Mile and the castle",
                  "New Town": "Georgian terraces and shopping streets",
                  "Leith": "the waterfront and its seafood bistros"},
}
GENERIC_NEIGHBOURHOODS = {"the city centre": "the main sights within walking distance",
                          "the old town": "historic streets and small shops",
                          "the waterfront": "promenades and restaurants by the water"}
# Relative price level of a city (1.0: the average European city); unknown cities: 1.0.
CITY_PRICE_LEVEL = {"Lisbon": 0.85, "Barcelona": 1.05, "Amsterdam": 1.3, "Berlin": 0.95,
                    "Prague": 0.75, "Vienna": 1.0, "Copenhagen": 1.35, "Edinburgh": 1.1}


class FeaturesConfig(BaseModel):
    """What the seeded generator makes: users, hotels and the hotels' descriptions."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0  # same seed and revision -> identical rows and descriptions
    n_users: int = Field(200, ge=1)  # ids u0001, u0002, ...
    n_hotels: int = Field(60, ge=1)  # ids h001, h002, ...; spread round-robin over the cities
    cities: list[str] = Field(default_factory=lambda: list(CITY_NEIGHBOURHOODS), min_length=1)
    as_of: datetime = datetime(2024, 6, 1, tzinfo=timezone.utc)  # updated_at of revision 0
    revision: int = Field(0, ge=0)  # 0: as generated; each revision updates a share of rows
    update_share: float = Field(0.1, ge=0.0, le=1.0)  # rows each revision changes (per table)


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------

# Per hotel type: stars range, rooms range, base price per night at price level 1.0 (EUR),
# amenities every such hotel has, and the noun its name ends with.
_TYPE_FACTS = {
    "boutique": ((3, 5), (12, 45), 150.0, ("wifi", "bar"), ("House", "Rooms", "Casa")),
    "business": ((3, 4), (120, 320), 140.0, ("wifi", "meeting_rooms", "gym"),
                 ("Business Hotel", "Plaza", "Centre Hotel")),
    "resort": ((4, 5), (150, 420), 230.0, ("wifi", "pool", "spa", "restaurant"),
               ("Resort & Spa", "Resort", "Palace")),
    "budget": ((1, 3), (30, 160), 70.0, ("wifi",), ("Inn", "Hostel", "Lodge")),
    "family": ((3, 4), (60, 220), 130.0, ("wifi", "family_rooms", "kids_club"),
               ("Family Hotel", "Garden Hotel", "Apartments")),
}
_EXTRA_AMENITIES = ("breakfast", "parking", "airport_shuttle", "rooftop_bar", "pet_friendly",
                    "laundry", "bike_rental", "air_conditioning", "sauna", "terrace")
AMENITY_PHRASES = {
    "wifi": "free wifi", "bar": "a cocktail bar", "meeting_rooms": "meeting rooms",
    "gym": "a fitness room", "pool": "an outdoor pool", "spa": "a spa",
    "restaurant": "a restaurant", "family_rooms": "family rooms", "kids_club": "a kids' club",
    "breakfast": "breakfast included", "parking": "on-site parking",
    "airport_shuttle": "an airport shuttle", "rooftop_bar": "a rooftop bar",
    "pet_friendly": "rooms for guests with pets", "laundry": "a laundry service",
    "bike_rental": "bikes to rent", "air_conditioning": "air conditioning",
    "sauna": "a sauna", "terrace": "a sunny terrace",
}
_NAME_WORDS = ("Aurora", "Linden", "Harbour", "Meridian", "Juniper", "Atlas", "Cedar", "Lumen",
               "Marlow", "Solstice", "Willow", "Beacon", "Corvina", "Fennel", "Halcyon", "Ivory")
# Budget per night at price level 1.0 (EUR) of a user who prefers each type: (low, high).
_BUDGET_RANGE = {"boutique": (120, 260), "business": (130, 220), "resort": (180, 380),
                 "budget": (55, 110), "family": (110, 220)}
_PARTY_RANGE = {"boutique": (1, 2), "business": (1, 1), "resort": (2, 4), "budget": (1, 3),
                "family": (3, 5)}
_TIER_WEIGHTS = (0.5, 0.3, 0.15, 0.05)  # none, silver, gold, platinum


def user_id(index: int) -> str:
    return f"u{index + 1:04d}"


def hotel_id(index: int) -> str:
    return f"h{index + 1:03d}"


def generate_user_preferences(config: FeaturesConfig) -> list[dict]:
    """gold/user_preferences rows (timestamps UTC-aware), ``n_users`` of them."""
    return [_user(config, i) for i in range(config.n_users)]


def generate_hotels(config: FeaturesConfig) -> list[dict]:
    """gold/hotels rows (timestamps UTC-aware), ``n_hotels`` of them."""
    return [_hotel(config, i) for i in range(config.n_hotels)]


def _price_level(city: str) -> float:
    return CITY_PRICE_LEVEL.get(city, 1.0)


def _user(config: FeaturesConfig, i: int) -> dict:
    rng = random.Random(f"{config.seed}:user:{i}")
    preference = rng.choice(HOTEL_TYPES)
    city = rng.choice(config.cities)
    low, high = _BUDGET_RANGE[preference]
    row = {"user_id": user_id(i),
           "avg_budget": _budget(rng.uniform(low, high) * _price_level(city)),
           "hotel_preference": preference, "preferred_city": city,
           "party_size": rng.randint(*_PARTY_RANGE[preference]),
           "loyalty_tier": rng.choices(LOYALTY_TIERS, _TIER_WEIGHTS)[0],
           "updated_at": config.as_of}
    for revision, rng in _revisions(config, "user", i):
        row["avg_budget"] = _budget(row["avg_budget"] * rng.uniform(0.8, 1.25))
        row["updated_at"] = config.as_of + timedelta(days=revision)
    return row


def _budget(value: float) -> float:
    return float(max(5, round(value / 5) * 5))  # people think of budgets in steps of 5 EUR


def _hotel(config: FeaturesConfig, i: int) -> dict:
    rng = random.Random(f"{config.seed}:hotel:{i}")
    city = config.cities[i % len(config.cities)]
    kind = rng.choice(HOTEL_TYPES)
    (lo_star, hi_star), rooms, price, core, nouns = _TYPE_FACTS[kind]
    stars = rng.randint(lo_star, hi_star)
    extras = rng.sample(_EXTRA_AMENITIES, rng.randint(1, 4))
    amenities = [a for a in AMENITY_PHRASES if a in core or a in extras]  # catalogue order
    base = price * _price_level(city) * (0.7 + 0.1 * stars) * rng.uniform(0.85, 1.15)
    row = {"hotel_id": hotel_id(i), "name": f"{rng.choice(_NAME_WORDS)} {rng.choice(nouns)}",
           "city": city, "neighbourhood": rng.choice(sorted(_neighbourhoods(city))),
           "hotel_type": kind, "stars": stars, "rooms": rng.randint(*rooms),
           "amenities": amenities, "base_price": round(base, 2),
           "occupancy": round(rng.uniform(0.3, 0.95), 2), "updated_at": config.as_of}
    for revision, rng in _revisions(config, "hotel", i):
        row["base_price"] = round(row["base_price"] * rng.uniform(0.9, 1.15), 2)
        row["occupancy"] = round(rng.uniform(0.2, 1.0), 2)
        row["updated_at"] = config.as_of + timedelta(days=revision)
    return row


def _revisions(config: FeaturesConfig, kind: str, i: int) -> Iterator[tuple[int, random.Random]]:
    """(revision, its generator) for each revision that changes row i: a draw per revision,
    so revision r+1 keeps every change revision r made."""
    for revision in range(1, config.revision + 1):
        rng = random.Random(f"{config.seed}:{kind}:{i}:revision:{revision}")
        if rng.random() < config.update_share:
            yield revision, rng


def _neighbourhoods(city: str) -> dict[str, str]:
    return CITY_NEIGHBOURHOODS.get(city, GENERIC_NEIGHBOURHOODS)


# ---------------------------------------------------------------------------------------------
# Hotel descriptions (documents for the vector index)
# ---------------------------------------------------------------------------------------------

_OPENINGS = (
    "{name} is a {stars}-star {kind} hotel in {neighbourhood}, {city}, with {rooms} rooms.",
    "In {city}'s {neighbourhood} district, {name} offers {rooms} rooms as a {stars}-star "
    "{kind} hotel.",
    "{name}, a {kind} hotel rated {stars} stars, has {rooms} rooms in {neighbourhood} "
    "({city}).",
)
_CHARACTER = {
    "boutique": ("Every room is individually designed, and the staff know guests by name.",
                 "It is small and personal, furnished with local art and vintage pieces."),
    "business": ("It is built for work trips: quiet rooms, fast check-in and desks in every "
                 "room.",
                 "Conference guests and consultants fill it on weekdays."),
    "resort": ("It is a place to stay put: long breakfasts, the pool and the spa.",
               "Its grounds are generous, with loungers, gardens and evening entertainment."),
    "budget": ("Rooms are simple and clean, and the price is the point.",
               "It keeps things basic so that the money goes on the city instead."),
    "family": ("Children are welcome everywhere, with cots and connecting rooms on request.",
               "It is organised around families: early dinners, games and space to play."),
}
_AMENITY_SENTENCES = ("Guests can use {amenities}.", "Facilities include {amenities}.",
                      "On site there is {amenities}.")
_AREA_SENTENCES = ("The neighbourhood is known for {area}.", "Around it: {area}.",
                   "Staying in {neighbourhood} means {area}.")
_SUITS = {"boutique": "couples and travellers who want character",
          "business": "business travellers", "resort": "relaxed holidays",
          "budget": "backpackers and travellers on a budget", "family": "families with children"}


def describe_hotel(hotel: Mapping[str, Any], seed: int = 0) -> str:
    """A hotel's free-text description from its facts; the sentence choice depends only on
    ``(seed, hotel_id)``, so the same hotel reads the same way every time."""
    rng = random.Random(f"{seed}:description:{hotel['hotel_id']}")
    area = _neighbourhoods(hotel["city"]).get(hotel["neighbourhood"], "its local character")
    values = {"name": hotel["name"], "stars": hotel["stars"], "kind": hotel["hotel_type"],
              "neighbourhood": hotel["neighbourhood"], "city": hotel["city"],
              "rooms": hotel["rooms"], "area": area,
              "amenities": _join_phrases([AMENITY_PHRASES.get(a, a.replace("_", " "))
                                          for a in hotel["amenities"]])}
    sentences = [rng.choice(_OPENINGS), rng.choice(_CHARACTER[hotel["hotel_type"]]),
                 rng.choice(_AMENITY_SENTENCES), rng.choice(_AREA_SENTENCES),
                 f"It suits {_SUITS[hotel['hotel_type']]}."]
    return " ".join(s.format(**values) for s in sentences)


def _join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


HOTEL_SOURCE_PREFIX = "hotel:"


def hotel_descriptions(config: FeaturesConfig | None = None) -> list[tuple[str, str]]:
    """(source id ``hotel:<hotel_id>``, description) for every generated hotel."""
    config = config or FeaturesConfig()
    return [(f"{HOTEL_SOURCE_PREFIX}{h['hotel_id']}", describe_hotel(h, config.seed))
            for h in generate_hotels(config)]


def hotel_documents(config: FeaturesConfig | None = None) -> list[Document]:
    """The hotel descriptions as ``pipelines.rag.Document`` s for the vector index."""
    from pipelines.rag import Document  # the RAG stage's document type; imported when used

    config = config or FeaturesConfig()
    origin = f"generator:hotels:seed={config.seed}"
    return [Document(source_id, text, origin) for source_id, text in hotel_descriptions(config)]


def hotel_ids_from_sources(source_ids: Iterable[str]) -> list[str]:
    """The hotel ids among retrieved source ids (``hotel:<id>``), in rank order, once each."""
    ids: list[str] = []
    for source_id in source_ids:
        if source_id.startswith(HOTEL_SOURCE_PREFIX):
            hotel = source_id[len(HOTEL_SOURCE_PREFIX):]
            if hotel not in ids:
                ids.append(hotel)
    return ids


# ---------------------------------------------------------------------------------------------
# Writing the Delta tables
# ---------------------------------------------------------------------------------------------

def _rows_frame(spark, spec: TableSpec, rows: Sequence[dict]):
    columns = [name for name, _ in parse_schema(spec.schema)]
    return spark.createDataFrame([tuple(row[c] for c in columns) for row in rows], spec.schema)


def upsert_rows(spark, spec: TableSpec, rows: Sequence[dict], txn_id: str,
                root: Path | None = None) -> dict:
    """MERGE whole rows into a feature table on its key, through the quality gate; the
    table's manifest. Rows equal to the stored ones change nothing (no Change Data Feed
    entry), so a sync after re-writing the same data copies nothing."""
    from infra.lake import write_table

    return write_table(spark, spec, _rows_frame(spark, spec, rows), txn_id=txn_id,
                       mode="merge", root=root)


def write_feature_tables(spark, config: FeaturesConfig, txn_id: str,
                         root: Path | None = None) -> dict[str, dict]:
    """Step: the generated users and hotels MERGEd into gold/user_preferences and gold/hotels;
    each table's manifest, by table name."""
    return {USER_PREFERENCES.name: upsert_rows(spark, USER_PREFERENCES,
                                               generate_user_preferences(config), txn_id, root),
            HOTELS.name: upsert_rows(spark, HOTELS, generate_hotels(config), txn_id, root)}


def delete_rows(spark, spec: TableSpec, keys: Iterable, root: Path | None = None) -> dict:
    """Delete rows by key (a user who left, a hotel delisted); the table's manifest. Deletes
    bypass the quality gate (nothing is written to check) and are idempotent: deleting a
    missing key changes nothing. One-column keys only."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from infra.lake import table_ref

    if len(spec.key) != 1:
        raise ValueError(f"{spec.qualified_name}: delete_rows needs a one-column key, "
                         f"not {spec.key}")
    keys = list(keys)
    path = spec.path(root)
    if keys:
        table = DeltaTable.forPath(spark, str(path))
        table.delete(F.col(spec.key[0]).isin(keys))
    return table_ref(spark, path)


# ---------------------------------------------------------------------------------------------
# Online store (SQLite)
# ---------------------------------------------------------------------------------------------

class FeatureStoreError(RuntimeError):
    """The online store cannot answer: a table never synced, a feature it does not hold."""


class UnknownKeyError(LookupError):
    """A key the online table does not hold: names the table, the key column and the values."""

    def __init__(self, table: str, key: str, missing: Sequence, synced: str = ""):
        self.table, self.key, self.missing = table, key, list(missing)
        shown = ", ".join(repr(v) for v in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"unknown {key} {shown}{more}: not in online table {table!r}{synced}")


class Change(NamedTuple):
    row: dict  # the full row (a delete needs only the key columns)
    deleted: bool = False


@dataclass(frozen=True)
class SyncState:
    table: str
    source: str  # the Delta table's path
    table_id: str  # Delta's table id: a recreated table gets a new one
    version: int  # last Delta version copied
    schema: str  # the TableSpec schema the online table was created from
    rows: int
    synced_at: str


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQLITE_TYPES = {"STRING": "TEXT", "DOUBLE": "REAL", "FLOAT": "REAL", "INT": "INTEGER",
                 "INTEGER": "INTEGER", "BIGINT": "INTEGER", "LONG": "INTEGER",
                 "SMALLINT": "INTEGER", "TINYINT": "INTEGER", "BOOLEAN": "INTEGER",
                 "DATE": "TEXT", "TIMESTAMP": "TEXT"}
INSERT_BATCH = 1000  # rows per executemany: bounded memory for a full copy of a big table


def parse_schema(ddl: str) -> list[tuple[str, str]]:
    """(column, upper-cased Spark type) pairs of a DDL string; commas inside <> or () are
    part of a type (ARRAY<STRING>, DECIMAL(10,2))."""
    columns, depth, start = [], 0, 0
    for i, char in enumerate(ddl + ","):
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == "," and depth == 0:
            name, _, kind = ddl[start:i].strip().partition(" ")
            columns.append((name.strip("`"), kind.strip().upper()))
            start = i + 1
    return columns


def _sqlite_type(kind: str) -> str:
    if kind.startswith("DECIMAL"):
        return "REAL"
    return _SQLITE_TYPES.get(kind, "TEXT")  # arrays, maps, structs: JSON text


def _encode(kind: str, value):
    if value is None:
        return None
    if kind == "TIMESTAMP":  # PySpark hands back naive local time; store ISO 8601 UTC
        return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) \
            else str(value)
    if kind == "DATE":
        return value.isoformat() if isinstance(value, date) else str(value)
    if kind == "BOOLEAN":
        return int(bool(value))
    if kind.startswith(("ARRAY", "MAP", "STRUCT")):
        return json.dumps(value, default=str)
    if kind.startswith("DECIMAL"):
        return float(value)
    return value


def _decoder(kind: str) -> Callable[[Any], Any] | None:
    if kind == "BOOLEAN":
        return bool
    if kind.startswith(("ARRAY", "MAP", "STRUCT")):
        return json.loads
    return None  # stored as read; timestamps and dates stay ISO text (JSON-ready)


def default_store_path() -> Path:
    from infra.settings import load_settings

    return load_settings().home / "online" / "features.sqlite"


class OnlineStore:
    """Feature tables in SQLite for keyed lookups at request time (well under a millisecond:
    each table's key is its PRIMARY KEY, rows clustered on it). WAL journal: lookups in other
    processes keep reading the previous state while a sync writes. One connection per store,
    shared by threads under a lock."""

    STATE_TABLE = "_sync_state"

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions, sync() opens its own
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30)
        self._lock = threading.RLock()
        self._tables: dict[str, tuple[str, list[tuple[str, str]], tuple[str, ...]]] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps commits atomic anyway
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.STATE_TABLE} (table_name TEXT "
                             "PRIMARY KEY, source TEXT, table_id TEXT, version INTEGER, "
                             "schema TEXT, key TEXT, rows INTEGER, synced_at TEXT)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------

    def sync_state(self, table: str) -> SyncState | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT table_name, source, table_id, version, schema, rows, synced_at "
                f"FROM {self.STATE_TABLE} WHERE table_name = ?", (table,)).fetchone()
        return SyncState(*row) if row else None

    def tables(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT table_name FROM {self.STATE_TABLE} ORDER BY table_name")]

    def count(self, table: str) -> int:
        self._meta(table)
        with self._lock:
            return self._db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]

    # -- writing ----------------------------------------------------------------------------

    def apply(self, spec: TableSpec, changes: Iterable[Change], *, source: str, table_id: str,
              version: int, full: bool) -> dict:
        """Apply changes to the online copy of ``spec`` and record the Delta version they
        bring it to — all in one transaction. ``full``: the changes are the whole table (the
        online table is rebuilt from them). Returns {upserted, deleted, rows}."""
        from infra.faults import fault_point

        _check_name(spec.name)
        columns = parse_schema(spec.schema)
        names = [c for c, _ in columns]
        key = list(spec.key)
        if not key:
            raise ValueError(f"{spec.qualified_name} has no key: the online store needs one")
        upsert = (f'INSERT INTO "{spec.name}" ({", ".join(names)}) VALUES '
                  f'({", ".join("?" * len(names))}) ON CONFLICT ({", ".join(key)}) DO UPDATE '
                  f'SET {", ".join(f"{c} = excluded.{c}" for c in names if c not in key)}')
        delete = f'DELETE FROM "{spec.name}" WHERE ' + " AND ".join(f"{k} = ?" for k in key)
        counts = {"upserted": 0, "deleted": 0}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one writer; readers see the old state
            try:
                if full:
                    self._db.execute(f'DROP TABLE IF EXISTS "{spec.name}"')
                self._db.execute(_create_table(spec.name, columns, key))
                for batch in _batches(changes, INSERT_BATCH):
                    ups = [tuple(_encode(t, c.row.get(n)) for n, t in columns)
                           for c in batch if not c.deleted]
                    gone = [tuple(c.row[k] for k in key) for c in batch if c.deleted]
                    if ups:
                        self._db.executemany(upsert, ups)
                        counts["upserted"] += len(ups)
                    for values in gone:
                        counts["deleted"] += self._db.execute(delete, values).rowcount
                fault_point("features.sync_mid")  # tests: a crash before the version is recorded
                rows = self._db.execute(f'SELECT COUNT(*) FROM "{spec.name}"').fetchone()[0]
                self._db.execute(
                    f"INSERT OR REPLACE INTO {self.STATE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (spec.name, source, table_id, int(version), spec.schema, ",".join(key),
                     rows, datetime.now(timezone.utc).isoformat()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._tables.pop(spec.name, None)
        return {**counts, "rows": rows}

    # -- reading ----------------------------------------------------------------------------

    def _meta(self, table: str) -> tuple[str, list[tuple[str, str]], tuple[str, ...]]:
        """(source, columns, key) of a synced table, cached until the next sync here."""
        meta = self._tables.get(table)
        if meta is None:
            with self._lock:
                row = self._db.execute(f"SELECT source, schema, key FROM {self.STATE_TABLE} "
                                       f"WHERE table_name = ?", (table,)).fetchone()
            if row is None:
                raise FeatureStoreError(
                    f"online table {table!r} has never been synced into {self.path}: run the "
                    f"sync-online-features flow first")
            meta = (row[0], parse_schema(row[1]), tuple(row[2].split(",")))
            self._tables[table] = meta
        return meta

    def get(self, table: str, key) -> dict | None:
        """The row with this key (a tuple for a composite key), or None."""
        found = self.get_many(table, [key])
        return found.get(key)

    def get_many(self, table: str, keys: Sequence) -> dict:
        """Rows by key, {key: row} for the keys present (absent keys are left out)."""
        try:
            return self._select(table, keys)
        except sqlite3.OperationalError:  # another process rebuilt the table: read it afresh
            self._tables.pop(table, None)
            return self._select(table, keys)

    def _select(self, table: str, keys: Sequence) -> dict:
        _, columns, key = self._meta(table)
        names = ", ".join(c for c, _ in columns)
        where = " AND ".join(f"{k} = ?" for k in key)
        sql = f'SELECT {names} FROM "{table}" WHERE {where}'
        decoders = [(c, _decoder(t)) for c, t in columns]
        found = {}
        with self._lock:
            for value in dict.fromkeys(keys):
                params = value if isinstance(value, tuple) else (value,)
                row = self._db.execute(sql, params).fetchone()
                if row is not None:
                    found[value] = {c: (d(v) if d and v is not None else v)
                                    for (c, d), v in zip(decoders, row)}
        return found

    def require(self, table: str, key_column: str, keys: Sequence) -> dict:
        """Like get_many, but every key must be there: else UnknownKeyError naming them."""
        found = self.get_many(table, keys)
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            state = self.sync_state(table)
            synced = f" (synced from {state.source} version {state.version})" if state else ""
            raise UnknownKeyError(table, key_column, missing, synced)
        return found


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"online table name {name!r}: expected letters, digits and _")


def _create_table(name: str, columns: list[tuple[str, str]], key: list[str]) -> str:
    for column, _ in columns:
        _check_name(column)
    body = ", ".join(f"{c} {_sqlite_type(t)}" for c, t in columns)
    return (f'CREATE TABLE IF NOT EXISTS "{name}" ({body}, PRIMARY KEY ({", ".join(key)})) '
            f"WITHOUT ROWID")


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# Sync: Delta -> online store
# ---------------------------------------------------------------------------------------------

def sync_online(spark, table_path: Path | str, spec: TableSpec, store: OnlineStore,
                version: int | None = None) -> dict:
    """Bring the online copy of a Delta table to ``version`` (default: the latest).

    Incremental when the store last synced this same table (same Delta table id and schema)
    at an earlier version: the Change Data Feed of the versions since then, reduced to the
    last change of each key (inserted/updated rows upserted, deleted rows deleted). A full
    copy otherwise — the first time, a recreated table, a changed schema, or a feed that
    cannot cover the range (e.g. vacuumed). Never moves the store backwards. Returns a
    manifest: table, table_id, version, mode (full | incremental | up_to_date),
    from_version, upserted, deleted, rows (online), store."""
    from infra.lake import read_table, table_ref

    path = Path(table_path)
    if not (path / "_delta_log").is_dir():
        raise FileNotFoundError(f"no Delta table at {path}: write {spec.qualified_name} first "
                                f"(the write-feature-tables task)")
    ref = table_ref(spark, path)
    target = ref["version"] if version is None else int(version)
    state = store.sync_state(spec.name)
    same_table = state is not None and state.table_id == ref["table_id"] \
        and state.schema == spec.schema
    manifest = {**ref, "version": target, "online_table": spec.name, "store": str(store.path),
                "from_version": state.version if same_table else None}
    if same_table and state.version >= target:
        return {**manifest, "version": state.version, "mode": "up_to_date", "upserted": 0,
                "deleted": 0, "rows": store.count(spec.name)}
    mode, reason = "full", _full_copy_reason(state, ref, spec)
    if same_table:
        try:
            changes = _latest_changes(spark, path, spec, state.version + 1, target)
            mode = "incremental"
        except _spark_errors() as exc:  # e.g. the feed was off for, or vacuumed out of, the range
            reason = (f"change data feed unreadable for versions {state.version + 1}.."
                      f"{target}: {str(exc).splitlines()[0][:200]}")
    if mode == "full":
        snapshot = read_table(spark, path, version=target)
        changes = (Change(row.asDict(recursive=True)) for row in snapshot.toLocalIterator())
    counts = store.apply(spec, changes, source=str(path), table_id=ref["table_id"],
                         version=target, full=mode == "full")
    return {**manifest, "mode": mode, **counts, "full_copy_reason": reason}


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return PySparkException, Py4JJavaError


def _full_copy_reason(state: SyncState | None, ref: dict, spec: TableSpec) -> str | None:
    if state is None:
        return "first sync"
    if state.table_id != ref["table_id"]:
        return f"table recreated (id {state.table_id} -> {ref['table_id']})"
    if state.schema != spec.schema:
        return "schema changed"
    return None


CHANGE_TYPES = ("insert", "update_postimage", "delete")  # update_preimage: the old row, unused


def _latest_changes(spark, path: Path, spec: TableSpec, start: int, end: int) -> list[Change]:
    """The last change of each key in versions start..end of the table's Change Data Feed."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    feed = (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", start).option("endingVersion", end).load(str(path))
            .where(F.col("_change_type").isin(*CHANGE_TYPES)))
    # within one commit a key can be both deleted and inserted (an overwrite): the row wins
    written_last = F.when(F.col("_change_type") == "delete", 0).otherwise(1)
    order = Window.partitionBy(*spec.key).orderBy(F.desc("_commit_version"), F.desc(written_last))
    latest = (feed.withColumn("_n", F.row_number().over(order)).where("_n = 1")
              .select(*[c for c, _ in parse_schema(spec.schema)], "_change_type"))
    changes = []
    for row in latest.collect():  # changed rows only: small next to the table
        values = row.asDict(recursive=True)
        deleted = values.pop("_change_type") == "delete"
        changes.append(Change(values, deleted))
    return changes


# ---------------------------------------------------------------------------------------------
# The price calculator (an on-demand feature function)
# ---------------------------------------------------------------------------------------------

SEASON_FACTORS = {"low": 0.85, "shoulder": 1.0, "high": 1.25}  # x base price
SEASON_OF_MONTH = {1: "low", 2: "low", 3: "low", 4: "shoulder", 5: "shoulder", 6: "high",
                   7: "high", 8: "high", 9: "shoulder", 10: "shoulder", 11: "low", 12: "high"}
DEMAND_FLOOR = 0.9  # x base price in an empty hotel: a small discount to fill rooms
DEMAND_SPAN = 0.35  # added at full occupancy: a full hotel charges 1.25x base
MAX_NIGHTS = 365


class PriceInputError(ValueError):
    """An input of the price calculator out of range: names the field and what was expected."""


def season_of(season: str | date) -> str:
    """low | shoulder | high, from a season's name, a date or an ISO date string (its month)."""
    if isinstance(season, date):
        return SEASON_OF_MONTH[season.month]
    if isinstance(season, str):
        name = season.strip().lower()
        if name in SEASON_FACTORS:
            return name
        try:
            return SEASON_OF_MONTH[date.fromisoformat(name[:10]).month]
        except ValueError:
            pass
    raise PriceInputError(f"season {season!r}: expected one of {sorted(SEASON_FACTORS)} or a "
                          f"date (YYYY-MM-DD)")


def price_quote(base_price: float, season: str | date = "shoulder", demand: float = 0.5,
                nights: int = 1, avg_budget: float | None = None) -> dict:
    """The price of a stay: per night = base price x season factor x demand factor
    (``DEMAND_FLOOR + DEMAND_SPAN * demand``), rounded to the cent; total = per night x nights.
    Per night does not depend on the length of the stay; higher season or demand never
    lowers it. ``within_budget``: price per night <= ``avg_budget`` (None without a budget).

    base_price: EUR per night (> 0); season: low | shoulder | high or a check-in date
    (default shoulder: the factor 1); demand: occupancy 0..1 (default 0.5, a typical night);
    nights: 1..365."""
    base = _number("base_price", base_price)
    if not base > 0:
        raise PriceInputError(f"base_price {base_price!r}: expected a price per night > 0")
    occupancy = _number("demand", demand)
    if not 0 <= occupancy <= 1:
        raise PriceInputError(f"demand {demand!r}: expected an occupancy between 0 and 1")
    stay = _nights(nights)
    name = season_of(season)
    per_night = round(base * SEASON_FACTORS[name] * (DEMAND_FLOOR + DEMAND_SPAN * occupancy), 2)
    budget = None if avg_budget is None else _number("avg_budget", avg_budget)
    return {"season": name, "nights": stay, "price_per_night": per_night,
            "total_price": round(per_night * stay, 2), "budget_per_night": budget,
            "within_budget": None if budget is None else per_night <= budget}


def _number(field_name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceInputError(f"{field_name} {value!r}: expected a number")
    return float(value)


def _nights(value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NIGHTS:
        raise PriceInputError(f"nights {value!r}: expected a whole number from 1 to "
                              f"{MAX_NIGHTS}")
    return value


# ---------------------------------------------------------------------------------------------
# Declarative feature spec: lookups + on-demand functions, evaluated per request
# ---------------------------------------------------------------------------------------------

class FeatureInputError(ValueError):
    """A request that does not carry what the feature spec needs (a key, a request field)."""


REQUEST = "request"  # the input prefix of request fields: "request.nights"


@dataclass(frozen=True)
class FeatureLookup:
    """Features of the online table ``table``'s row(s) whose key ``key`` the request names.
    A request key given as a list looks up one row per value (in order)."""

    table: str  # online table = the Delta table's name, e.g. "hotels"
    key: str  # the request key, which is also the table's key column
    features: tuple[str, ...]  # columns returned, beside the key
    name: str | None = None  # where the result goes in the output; default: the table

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))

    @property
    def output(self) -> str:
        return self.name or self.table


@dataclass(frozen=True)
class FeatureFunction:
    """An on-demand feature: ``fn`` called at request time with each argument read from a
    looked-up feature (``"<lookup output>.<feature>"``) or a request field
    (``"request.<field>"``). An argument from a list lookup makes it run once per row, its
    result stored in that row under ``output``; otherwise the result is top-level."""

    name: str
    fn: Callable[..., Any]
    inputs: Mapping[str, str] = field(default_factory=dict)  # argument -> where it comes from
    output: str = ""  # result name; default: the function's name

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "output", self.output or self.name)


@dataclass(frozen=True)
class FeatureSpec:
    lookups: tuple[FeatureLookup, ...] = ()
    functions: tuple[FeatureFunction, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lookups", tuple(self.lookups))
        object.__setattr__(self, "functions", tuple(self.functions))
        outputs = {lookup.output: lookup for lookup in self.lookups}
        if len(outputs) != len(self.lookups):
            raise ValueError("feature lookups must have distinct outputs (set name=)")
        for function in self.functions:
            for argument, source in function.inputs.items():
                prefix, _, feature = source.partition(".")
                if prefix == REQUEST and feature:
                    continue
                lookup = outputs.get(prefix)
                if lookup is None or feature not in (lookup.key, *lookup.features):
                    raise ValueError(
                        f"feature function {function.name}: input {argument}={source!r} names "
                        f"no looked-up feature or request field (expected "
                        f"'<lookup>.<feature>' of {sorted(outputs)} or 'request.<field>')")

    def evaluate(self, store: OnlineStore, keys: Mapping[str, Any],
                 request: Mapping[str, Any] | None = None) -> dict:
        """Every lookup, then every function, for one request: a JSON-ready dict with one
        entry per lookup (a dict, or a list of dicts for a list of keys) and the top-level
        function results. Unknown keys raise UnknownKeyError naming the table and key."""
        request = dict(request or {})
        result: dict[str, Any] = {}
        for lookup in self.lookups:
            if keys.get(lookup.key) is None:
                raise FeatureInputError(f"feature lookup {lookup.output!r} needs the request "
                                        f"key {lookup.key!r}")
            result[lookup.output] = _look_up(store, lookup, keys[lookup.key])
        for function in self.functions:
            _apply_function(function, result, request)
        return result


def _look_up(store: OnlineStore, lookup: FeatureLookup, value):
    many = isinstance(value, (list, tuple))
    values = list(value) if many else [value]
    found = store.require(lookup.table, lookup.key, values)
    columns = (lookup.key, *(f for f in lookup.features if f != lookup.key))
    try:
        rows = [{c: found[v][c] for c in columns} for v in values]
    except KeyError as exc:
        raise FeatureStoreError(f"feature lookup {lookup.output!r}: online table "
                                f"{lookup.table!r} has no feature {exc.args[0]!r}") from None
    return rows if many else rows[0]


def _apply_function(function: FeatureFunction, result: dict, request: dict) -> None:
    defaults = {name: p.default for name, p in inspect.signature(function.fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    per_row = {src.partition(".")[0] for src in function.inputs.values()
               if isinstance(result.get(src.partition(".")[0]), list)}
    if len(per_row) > 1:
        raise FeatureInputError(f"feature function {function.name}: reads from several list "
                                f"lookups {sorted(per_row)}; it can iterate over one")

    def arguments(row_of: dict) -> dict:
        args = {}
        for argument, source in function.inputs.items():
            prefix, _, feature = source.partition(".")
            if prefix == REQUEST:
                if feature in request and request[feature] is not None:
                    args[argument] = request[feature]
                elif argument not in defaults:
                    raise FeatureInputError(f"feature function {function.name} needs the "
                                            f"request field {feature!r}")
            else:
                args[argument] = row_of[prefix][feature]
        return args

    if per_row:
        rows_name = per_row.pop()
        for row in result[rows_name]:
            row[function.output] = function.fn(**arguments({**result, rows_name: row}))
    else:
        result[function.output] = function.fn(**arguments(result))


USER_FEATURES = ("avg_budget", "hotel_preference", "preferred_city", "party_size",
                 "loyalty_tier")
HOTEL_FEATURES = ("name", "city", "neighbourhood", "hotel_type", "stars", "amenities",
                  "base_price", "occupancy")


def default_feature_spec() -> FeatureSpec:
    """What the RAG chain asks for: the user's preferences (key ``user_id``), the retrieved
    hotels' facts (key ``hotel_id``, a list) and a price for each (``price``): season and
    nights from the request (``season`` a name or check-in date, default shoulder; ``nights``
    default 1), demand from the hotel's current occupancy, budget from the user."""
    return FeatureSpec(
        lookups=(FeatureLookup(USER_PREFERENCES.name, "user_id", USER_FEATURES),
                 FeatureLookup(HOTELS.name, "hotel_id", HOTEL_FEATURES)),
        functions=(FeatureFunction(
            "price_quote", price_quote, output="price",
            inputs={"base_price": "hotels.base_price", "demand": "hotels.occupancy",
                    "avg_budget": "user_preferences.avg_budget", "season": "request.season",
                    "nights": "request.nights"}),),
    )


def request_features(store: OnlineStore, user_id: str, hotel_ids: Sequence[str],
                     request: Mapping[str, Any] | None = None,
                     spec: FeatureSpec | None = None) -> dict:
    """The default spec (or ``spec``) evaluated for one user and the retrieved hotels."""
    spec = spec or default_feature_spec()
    return spec.evaluate(store, {"user_id": user_id, "hotel_id": list(hotel_ids)}, request)
