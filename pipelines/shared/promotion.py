"""The one champion gate every stage registers models through: a challenger's metrics against
the current champion's, under a rule that names each metric's direction, a noise margin per
metric and their order of precedence (a later metric only breaks a tie on the earlier ones).
Fields that must match for the metrics to be comparable (the same held-out data) are part of
the rule too; a champion scored on other data is no yardstick, so the challenger replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Criterion:
    metric: str
    better: Literal["higher", "lower"]
    margin: float = 0.0  # a difference this small or smaller is noise: a tie on this metric

    def gain(self, challenger: float, champion: float) -> float:
        """How much better the challenger is (negative: worse)."""
        return challenger - champion if self.better == "higher" else champion - challenger


@dataclass(frozen=True)
class PromotionRule:
    criteria: tuple[Criterion, ...]  # in order of precedence
    same: tuple[str, ...] = ()  # fields both sides must share for their metrics to compare

    def __post_init__(self):
        if not self.criteria:
            raise ValueError("a promotion rule needs at least one metric")
        for c in self.criteria:
            if c.better not in ("higher", "lower") or not c.margin >= 0:
                raise ValueError(f"criterion {c}: better is 'higher' or 'lower', margin >= 0")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def one_metric(
    metric: str,
    better: Literal["higher", "lower"],
    margin: float = 0.0,
    same: tuple[str, ...] = (),
) -> PromotionRule:
    """A rule on a single metric."""
    return PromotionRule((Criterion(metric, better, margin),), same)


def decide(challenger: Mapping, champion: Mapping | None, rule: PromotionRule) -> Decision:
    """Promote when there is no champion, when the champion is not comparable (a ``same``
    field differs), or when the first metric that is not a tie favours the challenger.

    A challenger without a metric's value cannot win on it (it loses); a champion without one
    loses to a challenger that has it. NaN on either side compares as a tie, so a run whose
    metric is NaN is never promoted on it. All metrics tied (within margins): no promotion.
    """
    if champion is None:
        return Decision(True, "no champion yet")
    for field in rule.same:
        if challenger.get(field) != champion.get(field):
            return Decision(True, f"the champion is not comparable: its {field} differs")
    for criterion in rule.criteria:
        mine, theirs = challenger.get(criterion.metric), champion.get(criterion.metric)
        if mine is None:
            return Decision(False, f"the challenger has no {criterion.metric}")
        if theirs is None:
            return Decision(True, f"the champion has no {criterion.metric}")
        mine, theirs = float(mine), float(theirs)
        gain = criterion.gain(mine, theirs)
        if math.isnan(gain) or abs(gain) <= criterion.margin:
            continue
        verdict = "better" if gain > 0 else "worse"
        return Decision(
            gain > 0,
            f"{verdict} {criterion.metric} ({mine:.6g} vs the "
            f"champion's {theirs:.6g}, {criterion.better} is better)",
        )
    return Decision(False, "no better than the champion beyond the noise margin")


def register_challenger(
    name: str,
    model_dir,
    run_id: str,
    challenger: Mapping,
    champion: Mapping | None,
    rule: PromotionRule,
    tags: Mapping | None = None,
    description: str = "",
) -> tuple[str, Decision]:
    """Register ``model_dir`` as a new version of ``name`` and move ``champion`` to it only
    when ``rule`` says the challenger beats the champion's metrics: (version, decision)."""
    from infra import registry

    decision = decide(challenger, champion, rule)
    version = registry.register_model_dir(
        name, model_dir, run_id, tags=dict(tags or {}), description=description
    )
    if decision.promote:
        registry.set_alias(name, version)
    return version, decision
