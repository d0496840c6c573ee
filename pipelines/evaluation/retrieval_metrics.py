"""One retriever scored on an eval set: ``retrieve(question, k) -> source ids`` (rank order)
asked every question, the ranked ids deduplicated and scored with MLflow's precision, recall
and nDCG at each k (infra/retriever_eval.py), never with formulas of our own; per-question
scores and means come back JSON-able, so a grid cell can be cached as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from infra.retriever_eval import EXPERIMENT, mlflow_retriever_scores
from infra.retriever_eval import METRIC_FAMILIES as METRICS
from pipelines.evaluation.retrieval_sets import EvalSet, EvalSetError

KS = tuple(range(1, 11))  # precision/recall/nDCG at every k from 1 to 10


def dedup_source_ids(source_ids: Iterable, k: int | None = None) -> list[str]:
    """Source ids in rank order, each once (several chunks of one document count once),
    cut to ``k``. Items may be ids or hits with a ``source_id``."""
    unique = list(dict.fromkeys(_source_id(item) for item in source_ids))
    return unique if k is None else unique[:k]


def _source_id(item) -> str:
    source_id = item if isinstance(item, str) else getattr(item, "source_id", None)
    if not isinstance(source_id, str):
        raise TypeError(
            f"retriever returned {item!r}: expected a source id string or a hit with a source_id"
        )
    return source_id


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    values = tuple(sorted(set(ks)))
    if not values or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in values):
        raise ValueError(f"ks must be positive integers, got {list(ks)!r}")
    return values


def evaluate_retriever(
    retrieve: Callable[[str, int], Sequence],
    eval_set: EvalSet,
    ks: Iterable[int] = KS,
    run=None,
    *,
    run_name: str = "retriever",
    experiment: str = EXPERIMENT,
    params: dict | None = None,
) -> dict:
    """Ask ``retrieve(question, max(ks))`` every question, then score the ranked source ids
    with MLflow's retriever evaluation in an MLflow run of its own: a child of ``run`` (an
    infra.tracking.Run or a run id) when given, else a top-level run in ``experiment``.

    ``retrieve`` should give ``k`` distinct source ids when the corpus has them (fetch more
    chunks than k, then dedup): MLflow's precision@k divides by min(k, ids retrieved), so a
    short list would flatter precision. Ids are deduplicated here too, keeping rank order.

    Returns ``{"metrics": {"precision_at_1": mean, ...}, "per_question": [{question,
    expected, retrieved, hit_rank, precision_at_k..., recall_at_k..., ndcg_at_k...}],
    "run_id", "eval_set", "ks"}`` — JSON-able, so a grid cell can be cached as is."""
    ks = check_ks(ks)
    if not len(eval_set):
        raise EvalSetError(f"eval set {eval_set.name!r} has no questions")
    depth = max(ks)
    retrieved = []
    for index, q in enumerate(eval_set, start=1):
        try:
            retrieved.append(dedup_source_ids(retrieve(q.question, depth), depth))
        except Exception as exc:
            raise RuntimeError(
                f"retriever failed on question {index} of {eval_set.name!r} "
                f"({q.question!r}): {exc}"
            ) from exc
    expected = [list(q.expected_source_ids) for q in eval_set]
    run_params = {"eval_set": eval_set.describe(), "ks": list(ks), **(params or {})}
    scores, means, run_id = mlflow_retriever_scores(
        [q.question for q in eval_set],
        expected,
        retrieved,
        ks,
        run,
        run_name,
        experiment,
        run_params,
    )
    per_question = []
    for i, q in enumerate(eval_set):
        row = {
            "question": q.question,
            "eval_set": q.part or eval_set.name,
            "expected": expected[i],
            "retrieved": retrieved[i],
            "hit_rank": hit_rank(expected[i], retrieved[i]),
        }
        row.update({name: values[i] for name, values in scores.items()})
        per_question.append(row)
    return {
        "metrics": means,
        "per_question": per_question,
        "run_id": run_id,
        "eval_set": eval_set.describe(),
        "ks": list(ks),
    }


def hit_rank(expected: Sequence[str], retrieved: Sequence[str]) -> int | None:
    """1-based rank of the first expected id among the retrieved ones; None for a miss."""
    wanted = set(expected)
    return next((rank for rank, s in enumerate(retrieved, start=1) if s in wanted), None)


def metric_names(ks: Iterable[int]) -> list[str]:
    return [f"{family}_at_{k}" for k in check_ks(ks) for family in METRICS]
