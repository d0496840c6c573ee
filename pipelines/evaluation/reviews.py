"""Scores of review summarisers against known truth: each summariser's negative points per
group, scored against the aspects that group's reviews criticise, averaged over the groups
that have criticisms, several summarisers side by side. Generic over what a group is and how
a point is matched: the caller passes the summarisers and the per-group score."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

# points one group's summary names, the group's aspect records -> (precision, recall)
GroupScore = Callable[[Sequence[str], Sequence[dict]], tuple[float, float]]
# the groups -> each group's negative points, in order
NegativePoints = Callable[[Sequence], Sequence[Sequence[str]]]


def negative_point_quality(
    points_per_group: Sequence[Sequence[str]],
    records_per_group: Sequence[Sequence[dict]],
    score: GroupScore,
) -> dict:
    """Mean precision and recall of each group's negative points against the aspect records
    of its reviews (``{"aspect", "polarity"}``, -1 criticised), over groups with criticisms:
    a group nobody criticised says nothing about naming criticism."""
    scores = []
    for points, records in zip(points_per_group, records_per_group, strict=True):
        if any(a["polarity"] < 0 for a in records):
            scores.append(score(points, records))
    n = max(len(scores), 1)
    return {
        "precision": sum(p for p, _ in scores) / n,
        "recall": sum(r for _, r in scores) / n,
        "groups": len(scores),
    }


def compare_negative_points(
    summarisers: Mapping[str, NegativePoints],
    groups: Sequence,
    records_per_group: Sequence[Sequence[dict]],
    score: GroupScore,
) -> dict[str, dict]:
    """Each summariser's :func:`negative_point_quality` on the same groups, in the order
    given; a summariser runs only when its turn comes (one model in memory at a time)."""
    return {
        name: negative_point_quality(points_of(groups), records_per_group, score)
        for name, points_of in summarisers.items()
    }
