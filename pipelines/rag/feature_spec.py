"""The declarative feature spec (the seed's FeatureLookup / FeatureFunction): lookups by key
in the online store and on-demand Python functions over looked-up features and request fields,
evaluated per request. :func:`default_feature_spec` is what the RAG chain asks for: the user's
preferences, the retrieved hotels' facts and a price for each.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.online_store import FeatureStoreError, OnlineStore
from pipelines.rag.feature_tables import HOTELS, USER_PREFERENCES
from pipelines.rag.pricing import price_quote


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
                        f"'<lookup>.<feature>' of {sorted(outputs)} or 'request.<field>')"
                    )

    def evaluate(
        self, store: OnlineStore, keys: Mapping[str, Any], request: Mapping[str, Any] | None = None
    ) -> dict:
        """Every lookup, then every function, for one request: a JSON-ready dict with one
        entry per lookup (a dict, or a list of dicts for a list of keys) and the top-level
        function results. Unknown keys raise UnknownKeyError naming the table and key."""
        request = dict(request or {})
        result: dict[str, Any] = {}
        for lookup in self.lookups:
            if keys.get(lookup.key) is None:
                raise FeatureInputError(
                    f"feature lookup {lookup.output!r} needs the request key {lookup.key!r}"
                )
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
        raise FeatureStoreError(
            f"feature lookup {lookup.output!r}: online table "
            f"{lookup.table!r} has no feature {exc.args[0]!r}"
        ) from None
    return rows if many else rows[0]


def _apply_function(function: FeatureFunction, result: dict, request: dict) -> None:
    defaults = {
        name: p.default
        for name, p in inspect.signature(function.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    per_row = {
        src.partition(".")[0]
        for src in function.inputs.values()
        if isinstance(result.get(src.partition(".")[0]), list)
    }
    if len(per_row) > 1:
        raise FeatureInputError(
            f"feature function {function.name}: reads from several list "
            f"lookups {sorted(per_row)}; it can iterate over one"
        )

    def arguments(row_of: dict) -> dict:
        args = {}
        for argument, source in function.inputs.items():
            prefix, _, feature = source.partition(".")
            if prefix == REQUEST:
                if feature in request and request[feature] is not None:
                    args[argument] = request[feature]
                elif argument not in defaults:
                    raise FeatureInputError(
                        f"feature function {function.name} needs the request field {feature!r}"
                    )
            else:
                args[argument] = row_of[prefix][feature]
        return args

    if per_row:
        rows_name = per_row.pop()
        for row in result[rows_name]:
            row[function.output] = function.fn(**arguments({**result, rows_name: row}))
    else:
        result[function.output] = function.fn(**arguments(result))


USER_FEATURES = ("avg_budget", "hotel_preference", "preferred_city", "party_size", "loyalty_tier")
HOTEL_FEATURES = (
    "name",
    "city",
    "neighbourhood",
    "hotel_type",
    "stars",
    "amenities",
    "base_price",
    "occupancy",
)


def default_feature_spec() -> FeatureSpec:
    """What the RAG chain asks for: the user's preferences (key ``user_id``), the retrieved
    hotels' facts (key ``hotel_id``, a list) and a price for each (``price``): season and
    nights from the request (``season`` a name or check-in date, default shoulder; ``nights``
    default 1), demand from the hotel's current occupancy, budget from the user."""
    return FeatureSpec(
        lookups=(
            FeatureLookup(USER_PREFERENCES.name, "user_id", USER_FEATURES),
            FeatureLookup(HOTELS.name, "hotel_id", HOTEL_FEATURES),
        ),
        functions=(
            FeatureFunction(
                "price_quote",
                price_quote,
                output="price",
                inputs={
                    "base_price": "hotels.base_price",
                    "demand": "hotels.occupancy",
                    "avg_budget": "user_preferences.avg_budget",
                    "season": "request.season",
                    "nights": "request.nights",
                },
            ),
        ),
    )


def request_features(
    store: OnlineStore,
    user_id: str,
    hotel_ids: Sequence[str],
    request: Mapping[str, Any] | None = None,
    spec: FeatureSpec | None = None,
) -> dict:
    """The default spec (or ``spec``) evaluated for one user and the retrieved hotels."""
    spec = spec or default_feature_spec()
    return spec.evaluate(store, {"user_id": user_id, "hotel_id": list(hotel_ids)}, request)
