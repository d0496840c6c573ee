"""The time windows reviews are grouped in: ``all`` (all time, one window), calendar
``day`` / ``week`` / ``month`` (Spark's date_trunc; weeks start on Monday), or ``<N>d``
(rolling: the last N days up to the newest review, then the N days before those, and so on
back — the current window is always a full one). A rolling window depends on its anchor,
the newest review's date: its label names it, so a run that finds a newer anchor recomputes
every group instead of merging groups cut another way."""

from __future__ import annotations

import re
from datetime import date, timedelta

WINDOW_PATTERN = r"^(?:all|day|week|month|[1-9][0-9]{0,3}d)$"
ALL_TIME_START = date(1970, 1, 1)  # the one window of ``all``


def rolling_days(window: str) -> int | None:
    """N of an ``<N>d`` window; None for the others."""
    match = re.fullmatch(r"([1-9][0-9]*)d", window)
    return int(match.group(1)) if match else None


def window_label(window: str, anchor: date | None) -> str:
    """What the summaries table records as the window: the unit, and a rolling window's
    anchor (``90d to 2018-10-05``)."""
    if rolling_days(window) and anchor is None:
        raise ValueError(f"window {window!r} is rolling: it needs the newest review's date")
    return f"{window} to {anchor.isoformat()}" if rolling_days(window) else window


def window_start_of(moment, window: str, anchor: date | None = None) -> str:
    """The ISO start date of the window holding ``moment`` (a datetime or a date)."""
    day = moment.date() if hasattr(moment, "date") else moment
    days = rolling_days(window)
    if days:
        back = (anchor - day).days // days  # whole windows between it and the anchor's
        return (anchor - timedelta(days=back * days + days - 1)).isoformat()
    if window == "all":
        return ALL_TIME_START.isoformat()
    if window == "week":
        day = day - timedelta(days=day.weekday())
    elif window == "month":
        day = day.replace(day=1)
    return day.isoformat()


def window_start_column(timestamp, window: str, anchor: date | None = None):
    """Spark's twin of :func:`window_start_of` for a timestamp column (a DATE column)."""
    from pyspark.sql import functions as F

    days = rolling_days(window)
    if days:
        back = F.floor(F.datediff(F.lit(anchor), F.to_date(timestamp)) / days)
        return F.date_sub(F.lit(anchor), (back * days + days - 1).cast("int"))
    if window == "all":
        return F.lit(ALL_TIME_START)
    return F.to_date(F.date_trunc(window, timestamp))


def describe(window: str, start: str) -> str:
    """The window in words, for a prompt or a report."""
    days = rolling_days(window)
    if days:
        return f"in the {days} days starting {start}"
    if window == "all":
        return "over all time"
    return f"in the {window} starting {start}"


def newest_review_date(reviews_df) -> date | None:
    """The anchor of rolling windows: the newest review's date (None: no reviews)."""
    from pyspark.sql import functions as F

    row = reviews_df.agg(F.max(F.to_date("reviewed_at")).alias("newest")).first()
    return row["newest"] if row else None
