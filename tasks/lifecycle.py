"""Tasks of the lifecycle flow itself."""

from __future__ import annotations

from prefect import task

from tasks.common import NO_CACHE_POLICY


@task(name="publish-stage-times", timeout_seconds=60, cache_policy=NO_CACHE_POLICY)
def publish_stage_times(stages: dict[str, float], budgets: dict[str, float]) -> list[dict]:
    """A table artifact with each stage's wall time against its budget."""
    from prefect.artifacts import create_table_artifact

    rows = [
        {
            "stage": name,
            "seconds": round(seconds, 1),
            "budget_s": budgets.get(name),
            "within_budget": seconds <= budgets.get(name, float("inf")),
        }
        for name, seconds in stages.items()
    ]
    create_table_artifact(
        key="lifecycle-stage-times", table=rows, description="Wall time per lifecycle stage"
    )
    return rows
