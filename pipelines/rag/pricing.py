"""The price calculator, an on-demand feature function: a stay's price per night from the
hotel's base price, the season (a name or a check-in date) and the demand (occupancy), its total
for the nights asked, and whether it is within the user's budget.
"""

from __future__ import annotations

from datetime import date

SEASON_FACTORS = {"low": 0.85, "shoulder": 1.0, "high": 1.25}  # x base price
SEASON_OF_MONTH = {
    1: "low",
    2: "low",
    3: "low",
    4: "shoulder",
    5: "shoulder",
    6: "high",
    7: "high",
    8: "high",
    9: "shoulder",
    10: "shoulder",
    11: "low",
    12: "high",
}
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
    raise PriceInputError(
        f"season {season!r}: expected one of {sorted(SEASON_FACTORS)} or a date (YYYY-MM-DD)"
    )


def price_quote(
    base_price: float,
    season: str | date = "shoulder",
    demand: float = 0.5,
    nights: int = 1,
    avg_budget: float | None = None,
) -> dict:
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
    return {
        "season": name,
        "nights": stay,
        "price_per_night": per_night,
        "total_price": round(per_night * stay, 2),
        "budget_per_night": budget,
        "within_budget": None if budget is None else per_night <= budget,
    }


def _number(field_name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceInputError(f"{field_name} {value!r}: expected a number")
    return float(value)


def _nights(value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NIGHTS:
        raise PriceInputError(f"nights {value!r}: expected a whole number from 1 to {MAX_NIGHTS}")
    return value
