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


@task(name="write-lifecycle-report", timeout_seconds=300, cache_policy=NO_CACHE_POLICY)
def write_lifecycle_report(
    outputs: dict[str, dict], stages: dict[str, float], budgets: dict[str, float]
) -> str:
    """``$GENAI_HOME/reports/lifecycle.html`` for this run (``lifecycle_report``); a markdown
    artifact links to it."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    from infra.settings import load_settings
    from pipelines.shared import lifecycle_report as report

    sections = [
        report.stage_report(title, outputs[title], seconds, budgets.get(title))
        for title, seconds in stages.items()
    ]
    url = flow_run.ui_url  # "None/…" when no UI URL is configured (a temporary server)
    page = report.render(
        sections, url if url and url.startswith("http") else None, sum(stages.values())
    )
    path = report.write_report(load_settings().home / "reports" / report.REPORT_NAME, page)
    create_markdown_artifact(
        key="lifecycle-report",
        markdown=f"**What the lifecycle made**: `{path}` (open it in a browser: one page, "
        f"images inside). Stages: {', '.join(stages)}.",
        description="The lifecycle's one-page report",
    )
    return str(path)


def failed_task_names(flow_run_id) -> list[str]:
    """Names of the tasks (and nested flows) that failed or crashed in one flow run, for the
    error that says where a stage stopped."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    failed = TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=failed)),
        )
    return sorted({run.name.rsplit("-", 1)[0] for run in runs})  # run names: <task>-<suffix>
