"""Which model calls of a batch run are traced: every call of the first N groups (in key
order: the same groups on every run) plus a fixed share of the rest, chosen by a hash of the
group key (the same groups again on a rerun) — an explicit policy, logged with the run, in
place of whatever a full export queue would drop."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TracePolicy:
    first_groups: int  # every call of this many groups, the first in key order
    sample: float  # and this share of the others

    def describe(self) -> str:
        return f"all calls of the first {self.first_groups} groups + {self.sample:.0%} of the rest"

    def choose(self, calls: Sequence[dict], key: Callable[[dict], tuple]) -> list[dict]:
        """The calls to trace, in key order."""
        ordered = sorted(calls, key=lambda c: tuple(map(str, key(c))))
        head, rest = ordered[: self.first_groups], ordered[self.first_groups :]
        return head + [c for c in rest if _share(key(c)) < self.sample]


def _share(key: tuple) -> float:
    """A stable number in [0, 1) for a group key."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
