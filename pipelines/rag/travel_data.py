"""The travel assistant's structured data, generated from a seed: users (budget per night,
preferred hotel type and city, party size, loyalty tier) and hotels (city, neighbourhood, type,
stars, rooms, amenities, base price, occupancy), plus each hotel's free-text description for
the vector index (source id ``hotel:<hotel_id>``). Row ``i`` depends only on ``(seed, i,
revision)``; each revision re-prices (and re-books) ``update_share`` of the hotels and
re-budgets as many users, a day after the previous one. Prices stay out of the descriptions:
they change, and the current one comes from the feature lookup.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.rag.documents import Document

HOTEL_TYPES = ("boutique", "business", "resort", "budget", "family")
LOYALTY_TIERS = ("none", "silver", "gold", "platinum")
MAX_PARTY = 8  # people per booking the generator and the gate accept

# Neighbourhoods the descriptions place hotels in, with a phrase about each.
CITY_NEIGHBOURHOODS: dict[str, dict[str, str]] = {
    "Lisbon": {
        "Alfama": "steep lanes, tiled facades and fado bars",
        "Chiado": "old cafes, bookshops and theatres",
        "Belem": "riverside monuments and the famous custard tarts",
    },
    "Barcelona": {
        "Gothic Quarter": "medieval alleys around the cathedral",
        "Eixample": "wide avenues and modernist architecture",
        "Barceloneta": "the city beach and seafood restaurants",
    },
    "Amsterdam": {
        "Jordaan": "quiet canals, galleries and brown cafes",
        "De Pijp": "the Albert Cuyp market and lively bars",
        "Museum Quarter": "the Rijksmuseum and Vondelpark close by",
    },
    "Berlin": {
        "Mitte": "the museums and Brandenburg Gate within walking distance",
        "Kreuzberg": "street food, clubs and the canal",
        "Prenzlauer Berg": "leafy squares, playgrounds and weekend markets",
    },
    "Prague": {
        "Old Town": "the astronomical clock and cobbled squares",
        "Mala Strana": "baroque palaces below the castle",
        "Vinohrady": "residential streets, wine bars and parks",
    },
    "Vienna": {
        "Innere Stadt": "the opera, the cathedral and grand cafes",
        "Neubau": "design shops and small theatres",
        "Leopoldstadt": "the Prater park and the Danube canal",
    },
    "Copenhagen": {
        "Nyhavn": "the colourful harbour front",
        "Vesterbro": "the meatpacking district's restaurants",
        "Norrebro": "multicultural streets and lakes",
    },
    "Edinburgh": {
        "Old Town": "the Royal Mile and the castle",
        "New Town": "Georgian terraces and shopping streets",
        "Leith": "the waterfront and its seafood bistros",
    },
}
GENERIC_NEIGHBOURHOODS = {
    "the city centre": "the main sights within walking distance",
    "the old town": "historic streets and small shops",
    "the waterfront": "promenades and restaurants by the water",
}
# Relative price level of a city (1.0: the average European city); unknown cities: 1.0.
CITY_PRICE_LEVEL = {
    "Lisbon": 0.85,
    "Barcelona": 1.05,
    "Amsterdam": 1.3,
    "Berlin": 0.95,
    "Prague": 0.75,
    "Vienna": 1.0,
    "Copenhagen": 1.35,
    "Edinburgh": 1.1,
}


class FeaturesConfig(BaseModel):
    """What the seeded generator makes: users, hotels and the hotels' descriptions."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0  # same seed and revision -> identical rows and descriptions
    n_users: int = Field(200, ge=1)  # ids u0001, u0002, ...
    n_hotels: int = Field(60, ge=1)  # ids h001, h002, ...; spread round-robin over the cities
    cities: list[str] = Field(default_factory=lambda: list(CITY_NEIGHBOURHOODS), min_length=1)
    as_of: datetime = datetime(2024, 6, 1, tzinfo=UTC)  # updated_at of revision 0
    revision: int = Field(0, ge=0)  # 0: as generated; each revision updates a share of rows
    update_share: float = Field(0.1, ge=0.0, le=1.0)  # rows each revision changes (per table)


# Per hotel type: stars range, rooms range, base price per night at price level 1.0 (EUR),
# amenities every such hotel has, and the noun its name ends with.
_TYPE_FACTS = {
    "boutique": ((3, 5), (12, 45), 150.0, ("wifi", "bar"), ("House", "Rooms", "Casa")),
    "business": (
        (3, 4),
        (120, 320),
        140.0,
        ("wifi", "meeting_rooms", "gym"),
        ("Business Hotel", "Plaza", "Centre Hotel"),
    ),
    "resort": (
        (4, 5),
        (150, 420),
        230.0,
        ("wifi", "pool", "spa", "restaurant"),
        ("Resort & Spa", "Resort", "Palace"),
    ),
    "budget": ((1, 3), (30, 160), 70.0, ("wifi",), ("Inn", "Hostel", "Lodge")),
    "family": (
        (3, 4),
        (60, 220),
        130.0,
        ("wifi", "family_rooms", "kids_club"),
        ("Family Hotel", "Garden Hotel", "Apartments"),
    ),
}
_EXTRA_AMENITIES = (
    "breakfast",
    "parking",
    "airport_shuttle",
    "rooftop_bar",
    "pet_friendly",
    "laundry",
    "bike_rental",
    "air_conditioning",
    "sauna",
    "terrace",
)
AMENITY_PHRASES = {
    "wifi": "free wifi",
    "bar": "a cocktail bar",
    "meeting_rooms": "meeting rooms",
    "gym": "a fitness room",
    "pool": "an outdoor pool",
    "spa": "a spa",
    "restaurant": "a restaurant",
    "family_rooms": "family rooms",
    "kids_club": "a kids' club",
    "breakfast": "breakfast included",
    "parking": "on-site parking",
    "airport_shuttle": "an airport shuttle",
    "rooftop_bar": "a rooftop bar",
    "pet_friendly": "rooms for guests with pets",
    "laundry": "a laundry service",
    "bike_rental": "bikes to rent",
    "air_conditioning": "air conditioning",
    "sauna": "a sauna",
    "terrace": "a sunny terrace",
}
_NAME_WORDS = (
    "Aurora",
    "Linden",
    "Harbour",
    "Meridian",
    "Juniper",
    "Atlas",
    "Cedar",
    "Lumen",
    "Marlow",
    "Solstice",
    "Willow",
    "Beacon",
    "Corvina",
    "Fennel",
    "Halcyon",
    "Ivory",
)
# Budget per night at price level 1.0 (EUR) of a user who prefers each type: (low, high).
_BUDGET_RANGE = {
    "boutique": (120, 260),
    "business": (130, 220),
    "resort": (180, 380),
    "budget": (55, 110),
    "family": (110, 220),
}
_PARTY_RANGE = {
    "boutique": (1, 2),
    "business": (1, 1),
    "resort": (2, 4),
    "budget": (1, 3),
    "family": (3, 5),
}
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
    row = {
        "user_id": user_id(i),
        "avg_budget": _budget(rng.uniform(low, high) * _price_level(city)),
        "hotel_preference": preference,
        "preferred_city": city,
        "party_size": rng.randint(*_PARTY_RANGE[preference]),
        "loyalty_tier": rng.choices(LOYALTY_TIERS, _TIER_WEIGHTS)[0],
        "updated_at": config.as_of,
    }
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
    row = {
        "hotel_id": hotel_id(i),
        "name": f"{rng.choice(_NAME_WORDS)} {rng.choice(nouns)}",
        "city": city,
        "neighbourhood": rng.choice(sorted(_neighbourhoods(city))),
        "hotel_type": kind,
        "stars": stars,
        "rooms": rng.randint(*rooms),
        "amenities": amenities,
        "base_price": round(base, 2),
        "occupancy": round(rng.uniform(0.3, 0.95), 2),
        "updated_at": config.as_of,
    }
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


_OPENINGS = (
    "{name} is a {stars}-star {kind} hotel in {neighbourhood}, {city}, with {rooms} rooms.",
    "In {city}'s {neighbourhood} district, {name} offers {rooms} rooms as a {stars}-star "
    "{kind} hotel.",
    "{name}, a {kind} hotel rated {stars} stars, has {rooms} rooms in {neighbourhood} ({city}).",
)
_CHARACTER = {
    "boutique": (
        "Every room is individually designed, and the staff know guests by name.",
        "It is small and personal, furnished with local art and vintage pieces.",
    ),
    "business": (
        "It is built for work trips: quiet rooms, fast check-in and desks in every room.",
        "Conference guests and consultants fill it on weekdays.",
    ),
    "resort": (
        "It is a place to stay put: long breakfasts, the pool and the spa.",
        "Its grounds are generous, with loungers, gardens and evening entertainment.",
    ),
    "budget": (
        "Rooms are simple and clean, and the price is the point.",
        "It keeps things basic so that the money goes on the city instead.",
    ),
    "family": (
        "Children are welcome everywhere, with cots and connecting rooms on request.",
        "It is organised around families: early dinners, games and space to play.",
    ),
}
_AMENITY_SENTENCES = (
    "Guests can use {amenities}.",
    "Facilities include {amenities}.",
    "On site there is {amenities}.",
)
_AREA_SENTENCES = (
    "The neighbourhood is known for {area}.",
    "Around it: {area}.",
    "Staying in {neighbourhood} means {area}.",
)
_SUITS = {
    "boutique": "couples and travellers who want character",
    "business": "business travellers",
    "resort": "relaxed holidays",
    "budget": "backpackers and travellers on a budget",
    "family": "families with children",
}


def describe_hotel(hotel: Mapping[str, Any], seed: int = 0) -> str:
    """A hotel's free-text description from its facts; the sentence choice depends only on
    ``(seed, hotel_id)``, so the same hotel reads the same way every time."""
    rng = random.Random(f"{seed}:description:{hotel['hotel_id']}")
    area = _neighbourhoods(hotel["city"]).get(hotel["neighbourhood"], "its local character")
    values = {
        "name": hotel["name"],
        "stars": hotel["stars"],
        "kind": hotel["hotel_type"],
        "neighbourhood": hotel["neighbourhood"],
        "city": hotel["city"],
        "rooms": hotel["rooms"],
        "area": area,
        "amenities": _join_phrases(
            [AMENITY_PHRASES.get(a, a.replace("_", " ")) for a in hotel["amenities"]]
        ),
    }
    sentences = [
        rng.choice(_OPENINGS),
        rng.choice(_CHARACTER[hotel["hotel_type"]]),
        rng.choice(_AMENITY_SENTENCES),
        rng.choice(_AREA_SENTENCES),
        f"It suits {_SUITS[hotel['hotel_type']]}.",
    ]
    return " ".join(s.format(**values) for s in sentences)


def _join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


HOTEL_SOURCE_PREFIX = "hotel:"


def hotel_descriptions(config: FeaturesConfig | None = None) -> list[tuple[str, str]]:
    """(source id ``hotel:<hotel_id>``, description) for every generated hotel."""
    config = config or FeaturesConfig()
    return [
        (f"{HOTEL_SOURCE_PREFIX}{h['hotel_id']}", describe_hotel(h, config.seed))
        for h in generate_hotels(config)
    ]


def hotel_documents(config: FeaturesConfig | None = None) -> list[Document]:
    """The hotel descriptions as RAG documents for the vector index."""
    config = config or FeaturesConfig()
    origin = f"generator:hotels:seed={config.seed}"
    return [Document(source_id, text, origin) for source_id, text in hotel_descriptions(config)]


def hotel_ids_from_sources(source_ids: Iterable[str]) -> list[str]:
    """The hotel ids among retrieved source ids (``hotel:<id>``), in rank order, once each."""
    ids: list[str] = []
    for source_id in source_ids:
        if source_id.startswith(HOTEL_SOURCE_PREFIX):
            hotel = source_id[len(HOTEL_SOURCE_PREFIX) :]
            if hotel not in ids:
                ids.append(hotel)
    return ids
