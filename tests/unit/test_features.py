"""Structured data of the RAG stage without Spark or Prefect: the seeded generator, hotel
descriptions, the price calculator's budget rule, the online store (atomic apply, keyed
lookups), and the declarative feature spec with its errors."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pytest

from infra.online_store import (
    Change,
    FeatureStoreError,
    OnlineStore,
    UnknownKeyError,
    parse_schema,
)
from pipelines.rag.feature_spec import (
    FeatureFunction,
    FeatureInputError,
    FeatureLookup,
    FeatureSpec,
    default_feature_spec,
    request_features,
)
from pipelines.rag.feature_tables import HOTELS, USER_PREFERENCES
from pipelines.rag.pricing import SEASON_FACTORS, PriceInputError, price_quote, season_of
from pipelines.rag.travel_data import (
    AMENITY_PHRASES,
    HOTEL_TYPES,
    LOYALTY_TIERS,
    MAX_PARTY,
    FeaturesConfig,
    generate_hotels,
    generate_user_preferences,
    hotel_descriptions,
    hotel_documents,
    hotel_ids_from_sources,
)

SMALL = FeaturesConfig(n_users=20, n_hotels=12)


# -- the generator ----------------------------------------------------------------------------


def test_generator_is_seeded_and_rows_meet_the_tables_expectations():
    users, hotels = generate_user_preferences(SMALL), generate_hotels(SMALL)
    assert users == generate_user_preferences(SMALL) and hotels == generate_hotels(SMALL)
    other = SMALL.model_copy(update={"seed": 1})
    assert generate_user_preferences(other) != users and generate_hotels(other) != hotels
    # row i depends only on (seed, i): more rows extend, never reshuffle
    assert generate_hotels(SMALL.model_copy(update={"n_hotels": 20}))[:12] == hotels

    columns = lambda spec: [c for c, _ in parse_schema(spec.schema)]  # noqa: E731
    assert [list(u) for u in users] == [columns(USER_PREFERENCES)] * len(users)
    assert [list(h) for h in hotels] == [columns(HOTELS)] * len(hotels)
    assert len({u["user_id"] for u in users}) == 20 and len({h["hotel_id"] for h in hotels}) == 12
    for u in users:
        assert u["avg_budget"] > 0 and u["preferred_city"] in SMALL.cities
        assert u["hotel_preference"] in HOTEL_TYPES and u["loyalty_tier"] in LOYALTY_TIERS
        assert 1 <= u["party_size"] <= MAX_PARTY
    for h in hotels:
        assert h["base_price"] > 0 and 0 <= h["occupancy"] <= 1 and 1 <= h["stars"] <= 5
        assert h["city"].strip() and h["amenities"] and set(h["amenities"]) <= set(AMENITY_PHRASES)
    assert {h["city"] for h in hotels} == set(SMALL.cities)  # round-robin over the cities


def test_revisions_change_a_share_of_rows_in_place():
    base = FeaturesConfig(n_users=200, n_hotels=100)
    one, two = (base.model_copy(update={"revision": r}) for r in (1, 2))
    for generate, key in ((generate_user_preferences, "user_id"), (generate_hotels, "hotel_id")):
        rows0, rows1, rows2 = generate(base), generate(one), generate(two)
        changed = [b for a, b in zip(rows0, rows1, strict=False) if a != b]
        assert 0 < len(changed) < len(rows0) / 4  # update_share 0.1, per table
        assert all(r["updated_at"] == base.as_of + timedelta(days=1) for r in changed)
        for a, b in zip(
            rows1, rows2, strict=False
        ):  # revision 2 keeps revision 1, changes some more
            assert a == b or b["updated_at"] == base.as_of + timedelta(days=2)
        assert [r[key] for r in rows0] == [r[key] for r in rows2]  # same rows, in place


def test_hotel_descriptions_are_written_from_the_facts():
    hotels = {f"hotel:{h['hotel_id']}": h for h in generate_hotels(SMALL)}
    documents = hotel_descriptions(SMALL)
    assert documents == hotel_descriptions(SMALL)
    assert [source for source, _ in documents] == list(hotels)
    openings = set()
    for source, text in documents:
        hotel = hotels[source]
        for fact in (
            hotel["name"],
            hotel["city"],
            hotel["neighbourhood"],
            hotel["hotel_type"],
            f"{hotel['stars']}",
            f"{hotel['rooms']} rooms",
        ):
            assert fact in text, (source, fact)
        for amenity in hotel["amenities"]:
            assert AMENITY_PHRASES[amenity] in text
        assert "EUR" not in text and f"{hotel['base_price']}" not in text  # prices are live
        openings.add(text.split(hotel["name"])[0][:10])
    assert len(openings) > 1  # several sentence templates


def test_hotel_documents_are_rag_documents():
    from pipelines.rag import documents as rag

    documents = hotel_documents(SMALL)
    assert all(isinstance(d, rag.Document) for d in documents)
    assert [d.source_id for d in documents] == [s for s, _ in hotel_descriptions(SMALL)]


def test_hotel_ids_from_retrieved_sources():
    sources = ["hotel:h002", "py:mlflow.start_run", "hotel:h001", "hotel:h002"]
    assert hotel_ids_from_sources(sources) == ["h002", "h001"]


# -- the price calculator -----------------------------------------------------------------------


def test_price_respects_the_budget():
    for base in (40.0, 99.99, 180.0, 333.33):
        for season in SEASON_FACTORS:
            for demand in (0.0, 0.37, 0.8, 1.0):
                for budget in (50.0, 120.0, 200.0, 400.0):
                    quote = price_quote(base, season, demand, 3, avg_budget=budget)
                    assert quote["within_budget"] == (quote["price_per_night"] <= budget)
    # at the boundary: a budget equal to the price per night is within it
    quote = price_quote(100.0, "shoulder", 0.5, 1)
    assert (
        price_quote(100.0, "shoulder", 0.5, 1, avg_budget=quote["price_per_night"])[
            "within_budget"
        ]
        is True
    )
    assert (
        price_quote(100.0, "shoulder", 0.5, 1, avg_budget=quote["price_per_night"] - 0.01)[
            "within_budget"
        ]
        is False
    )
    assert quote["within_budget"] is None  # no budget, no verdict


def test_price_never_cheaper_per_night_with_more_nights_demand_or_season():
    def per_night(**kw):
        return price_quote(
            **{"base_price": 150.0, "season": "shoulder", "demand": 0.5, "nights": 2, **kw}
        )

    nights = [per_night(nights=n) for n in (1, 2, 7, 30)]
    assert len({q["price_per_night"] for q in nights}) == 1
    assert [q["total_price"] for q in nights] == sorted(q["total_price"] for q in nights)
    assert nights[2]["total_price"] == pytest.approx(7 * nights[2]["price_per_night"])
    demand = [per_night(demand=d)["price_per_night"] for d in (0.0, 0.25, 0.5, 0.9, 1.0)]
    assert demand == sorted(demand) and demand[0] < demand[-1]
    seasons = [per_night(season=s)["price_per_night"] for s in ("low", "shoulder", "high")]
    assert seasons == sorted(seasons) and seasons[0] < seasons[-1]


def test_season_from_a_date_or_a_name():
    assert season_of(date(2024, 7, 14)) == "high" and season_of("2024-01-20") == "low"
    assert season_of("2024-10-02T12:00:00") == "shoulder" and season_of(" High ") == "high"
    assert price_quote(100.0, "2024-08-01", 0.5)["season"] == "high"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"base_price": 0}, "base_price"),
        ({"base_price": -5.0}, "base_price"),
        ({"base_price": "cheap"}, "base_price"),
        ({"demand": 1.5}, "demand"),
        ({"demand": -0.1}, "demand"),
        ({"nights": 0}, "nights"),
        ({"nights": 2.5}, "nights"),
        ({"nights": 400}, "nights"),
        ({"season": "monsoon"}, "season"),
        ({"season": "2024-13-01"}, "season"),
        ({"avg_budget": "lots"}, "avg_budget"),
    ],
)
def test_bad_price_inputs_name_their_field(kwargs, field):
    with pytest.raises(PriceInputError, match=rf"^{field} "):
        price_quote(**{"base_price": 100.0, "season": "low", "demand": 0.5, **kwargs})


# -- the online store -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    """An online store holding the SMALL tables, as a first (full) sync leaves it."""
    with OnlineStore(tmp_path / "features.sqlite") as online:
        for spec, rows in (
            (USER_PREFERENCES, generate_user_preferences(SMALL)),
            (HOTELS, generate_hotels(SMALL)),
        ):
            online.apply(
                spec,
                [Change(r) for r in rows],
                source=f"/lake/{spec.name}",
                table_id=f"id-{spec.name}",
                version=1,
                full=True,
            )
        yield online


def test_store_apply_upserts_deletes_and_records_the_version(store):
    state = store.sync_state("hotels")
    assert (state.version, state.rows, state.table_id) == (1, 12, "id-hotels")
    hotel = generate_hotels(SMALL)[0]
    assert store.get("hotels", hotel["hotel_id"]) == {
        **hotel,
        "updated_at": hotel["updated_at"].isoformat(),
    }  # arrays back as lists
    counts = store.apply(
        HOTELS,
        [
            Change({**hotel, "base_price": 1.5}),
            Change({"hotel_id": "h002"}, deleted=True),
            Change({"hotel_id": "h999"}, deleted=True),
        ],
        source="/lake/hotels",
        table_id="id-hotels",
        version=4,
        full=False,
    )
    assert counts == {"upserted": 1, "deleted": 1, "rows": 11}
    assert store.get("hotels", hotel["hotel_id"])["base_price"] == 1.5
    assert store.get("hotels", "h002") is None
    assert store.sync_state("hotels").version == 4 and store.count("hotels") == 11


def test_store_sync_is_atomic(store, monkeypatch):
    """A crash inside a sync (after rows were written) leaves the previous state, whole."""
    monkeypatch.setenv("GENAI_FAULT", "features.sync_mid")
    monkeypatch.setenv("GENAI_FAULT_MODE", "raise")
    user = generate_user_preferences(SMALL)[0]
    with pytest.raises(RuntimeError, match="features.sync_mid"):
        store.apply(
            USER_PREFERENCES,
            [Change({**user, "avg_budget": 1.0}), Change({"user_id": "u0002"}, deleted=True)],
            source="/lake/user_preferences",
            table_id="id-user_preferences",
            version=2,
            full=False,
        )
    with pytest.raises(RuntimeError, match="features.sync_mid"):  # a full rebuild too
        store.apply(
            USER_PREFERENCES,
            [],
            source="/lake/user_preferences",
            table_id="id-new",
            version=1,
            full=True,
        )
    assert store.get("user_preferences", user["user_id"])["avg_budget"] == user["avg_budget"]
    assert store.get("user_preferences", "u0002") is not None
    state = store.sync_state("user_preferences")
    assert (state.version, state.table_id, state.rows) == (1, "id-user_preferences", 20)


def test_keyed_lookups_take_well_under_a_millisecond(store):
    ids = [h["hotel_id"] for h in generate_hotels(SMALL)]
    store.get("hotels", ids[0])  # warm the statement cache
    rounds = 2000
    started = time.perf_counter()
    for i in range(rounds):
        assert store.get("hotels", ids[i % len(ids)]) is not None
    per_lookup_ms = (time.perf_counter() - started) / rounds * 1000
    assert per_lookup_ms < 0.5, per_lookup_ms  # measured ~0.02 ms on 2 busy cores
    plan = store._db.execute(
        'EXPLAIN QUERY PLAN SELECT * FROM "hotels" WHERE hotel_id = ?', ("h001",)
    ).fetchall()
    assert "PRIMARY KEY" in str(plan)  # a keyed search, not a scan


def test_never_synced_table_is_a_clear_error(tmp_path):
    with OnlineStore(tmp_path / "empty.sqlite") as empty:
        with pytest.raises(
            FeatureStoreError, match="'hotels' has never been synced.*sync-online-features"
        ):
            empty.get("hotels", "h001")


# -- the feature spec --------------------------------------------------------------------------


def test_default_spec_evaluates_lookups_and_the_price_per_hotel(store):
    users = {u["user_id"]: u for u in generate_user_preferences(SMALL)}
    hotels = {h["hotel_id"]: h for h in generate_hotels(SMALL)}
    result = default_feature_spec().evaluate(
        store,
        {"user_id": "u0003", "hotel_id": ["h004", "h001"]},
        {"season": "2024-07-20", "nights": 3},
    )
    assert set(result) == {"user_preferences", "hotels"}
    user = result["user_preferences"]
    assert user["user_id"] == "u0003" and user["avg_budget"] == users["u0003"]["avg_budget"]
    assert [h["hotel_id"] for h in result["hotels"]] == ["h004", "h001"]  # rank order kept
    for hotel in result["hotels"]:
        facts = hotels[hotel["hotel_id"]]
        assert hotel["amenities"] == facts["amenities"] and hotel["city"] == facts["city"]
        assert hotel["price"] == price_quote(
            facts["base_price"], "high", facts["occupancy"], 3, user["avg_budget"]
        )
    # request fields default to the function's own defaults (shoulder season, one night)
    plain = request_features(store, "u0003", ["h001"])
    assert plain["hotels"][0]["price"]["season"] == "shoulder"
    assert plain["hotels"][0]["price"]["nights"] == 1
    assert request_features(store, "u0003", [])["hotels"] == []


def test_unknown_ids_and_missing_keys_are_clear_errors(store):
    with pytest.raises(UnknownKeyError) as caught:
        request_features(store, "u9999", ["h001"])
    assert (caught.value.table, caught.value.key, caught.value.missing) == (
        "user_preferences",
        "user_id",
        ["u9999"],
    )
    assert re.search(
        r"unknown user_id 'u9999': not in online table 'user_preferences' "
        r"\(synced from /lake/user_preferences version 1\)",
        str(caught.value),
    )
    with pytest.raises(UnknownKeyError, match=r"unknown hotel_id 'h404', 'h405'.*'hotels'"):
        request_features(store, "u0001", ["h001", "h404", "h405"])
    with pytest.raises(FeatureInputError, match="needs the request key 'user_id'"):
        default_feature_spec().evaluate(store, {"hotel_id": ["h001"]})
    with pytest.raises(PriceInputError, match="^nights"):
        request_features(store, "u0001", ["h001"], {"nights": -1})


def test_custom_spec_with_a_top_level_function_and_validation(store):
    spec = FeatureSpec(
        lookups=[
            FeatureLookup("user_preferences", "user_id", ["avg_budget", "party_size"], name="user")
        ],
        functions=[
            FeatureFunction(
                "party_budget",
                lambda budget, people, factor=1.0: budget * people * factor,
                {
                    "budget": "user.avg_budget",
                    "people": "user.party_size",
                    "factor": "request.factor",
                },
            )
        ],
    )
    user = generate_user_preferences(SMALL)[0]
    result = spec.evaluate(store, {"user_id": user["user_id"]}, {"factor": 2})
    assert result["party_budget"] == user["avg_budget"] * user["party_size"] * 2
    assert set(result["user"]) == {"user_id", "avg_budget", "party_size"}

    with pytest.raises(ValueError, match="input price='hotels.price' names no looked-up"):
        FeatureSpec(
            [FeatureLookup("hotels", "hotel_id", ["base_price"])],
            [FeatureFunction("f", lambda price: price, {"price": "hotels.price"})],
        )
    with pytest.raises(FeatureInputError, match="needs the request field 'nights'"):
        FeatureSpec(
            [], [FeatureFunction("f", lambda nights: nights, {"nights": "request.nights"})]
        ).evaluate(store, {})
    missing = FeatureSpec([FeatureLookup("hotels", "hotel_id", ["no_such_column"])])
    with pytest.raises(FeatureStoreError, match="has no feature 'no_such_column'"):
        missing.evaluate(store, {"hotel_id": "h001"})
