"""sync-online-features end to end on Spark + Delta: the flow writes the feature tables and
copies them into the online store; a MERGEd budget reaches the lookups with only its row
copied; a deleted hotel disappears online. Writes through the quality gate dominate the
time, so there are three (the flow's two tables and the one budget)."""

from __future__ import annotations

import pytest

from flows.sync_online_features import sync_online_features
from infra.lake import logged_head, read_table, table_ref
from infra.online_store import OnlineStore, UnknownKeyError
from pipelines.rag.feature_spec import request_features
from pipelines.rag.feature_tables import (
    HOTELS,
    USER_PREFERENCES,
    SyncOnlineFeaturesConfig,
    delete_rows,
    sync_online,
    upsert_rows,
)
from pipelines.rag.travel_data import FeaturesConfig, generate_hotels, generate_user_preferences

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _online_equals_delta(spark, store: OnlineStore, spec, key: str) -> None:
    delta = {r[key]: r.asDict(recursive=True) for r in read_table(spark, spec).collect()}
    online = store.get_many(spec.name, list(delta))
    assert set(online) == set(delta) and store.count(spec.name) == len(delta)
    for k, row in delta.items():
        for column, value in row.items():
            if column != "updated_at":  # ISO text online
                assert online[k][column] == value, (k, column)


def test_sync_flow_keeps_lookups_at_the_latest_delta_version(
    spark, prefect_server, tmp_path, monkeypatch
):
    data = FeaturesConfig(n_users=12, n_hotels=8, seed=3)
    store_path = tmp_path / "features.sqlite"
    config = SyncOnlineFeaturesConfig(data=data, write_tables="always", store=str(store_path))

    first = sync_online_features(config)
    for name in ("user_preferences", "hotels"):
        assert first["written"]["tables"][name]["quarantined"] == 0
        assert first["synced"]["tables"][name]["mode"] == "full"
    with OnlineStore(store_path) as store:
        _online_equals_delta(spark, store, USER_PREFERENCES, "user_id")
        _online_equals_delta(spark, store, HOTELS, "hotel_id")
        user = generate_user_preferences(data)[2]
        assert store.get("user_preferences", user["user_id"])["avg_budget"] == user["avg_budget"]

    # one user's budget changes in the lake (MERGE): the next sync copies that row only
    changed = {**user, "avg_budget": user["avg_budget"] + 55.0}
    upsert_rows(spark, USER_PREFERENCES, [changed], txn_id="test-budget-1")
    second = sync_online_features(config.model_copy(update={"write_tables": "never"}))
    users = second["synced"]["tables"]["user_preferences"]
    assert (users["mode"], users["upserted"], users["deleted"]) == ("incremental", 1, 0)
    assert users["from_version"] == first["synced"]["tables"]["user_preferences"]["version"]
    assert second["synced"]["tables"]["hotels"]["mode"] == "up_to_date"
    with OnlineStore(store_path) as store:
        hotel_ids = [h["hotel_id"] for h in generate_hotels(data)[:3]]
        features = request_features(store, user["user_id"], hotel_ids, {"nights": 2})
        assert features["user_preferences"]["avg_budget"] == changed["avg_budget"]
        for hotel in features["hotels"]:
            assert hotel["price"]["within_budget"] == (
                hotel["price"]["price_per_night"] <= changed["avg_budget"]
            )

        # a delisted hotel disappears online: lookups name it as unknown
        gone = hotel_ids[1]
        delete_rows(spark, HOTELS, [gone])
        synced = sync_online(spark, HOTELS.path(), HOTELS, store)
        assert (synced["mode"], synced["upserted"], synced["deleted"]) == ("incremental", 0, 1)
        assert store.get("hotels", gone) is None
        with pytest.raises(UnknownKeyError, match=f"hotel_id '{gone}'.*'hotels'"):
            request_features(store, user["user_id"], hotel_ids)

    # The every-15-minutes case: nothing changed since, so the flow decides it from the
    # Delta logs' files alone and no Spark session is asked for (a JVM start, a job)
    for spec in (USER_PREFERENCES, HOTELS):
        assert logged_head(spec.path()) == table_ref(spark, spec.path())

    def no_spark():
        raise AssertionError("an unchanged sync asked for Spark")

    monkeypatch.setattr("infra.spark.get_spark", no_spark)
    idle = sync_online_features(config.model_copy(update={"write_tables": "never"}))
    for name in ("user_preferences", "hotels"):
        assert idle["synced"]["tables"][name]["mode"] == "up_to_date"
    assert idle["synced"]["tables"]["hotels"]["version"] == synced["version"]
