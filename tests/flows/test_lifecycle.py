"""The lifecycle's stage choice and failure report, and `genai demo` ending on a failed stage:
the stage, the task and the log named, the full log written, the exit code a known failure's."""

from __future__ import annotations

import logging

import pytest
import yaml
from prefect import flow, task

from flows.cli.demo import format_times, times_report
from flows.lifecycle import StageFailedError, run_stage, stages_to_run
from tasks.lifecycle import failed_task_names


def test_a_chosen_stage_brings_the_stages_it_builds_on_in_run_order():
    assert stages_to_run(None) == ["corpus", "pretrain", "finetune", "reviews", "rag"]
    assert stages_to_run(["rag"]) == ["corpus", "pretrain", "rag"]
    assert stages_to_run(["rag", "corpus", "reviews"]) == ["corpus", "pretrain", "reviews", "rag"]
    with pytest.raises(ValueError, match="no such stage: evaluation; stages: corpus,"):
        stages_to_run(["evaluation"])


def test_a_slow_stage_is_noted_not_failed():
    report = times_report({"pretraining": 300.0, "RAG": 100.0}, total_s=450.0)
    assert report["stages"]["pretraining"] == {"s": 300.0, "budget_s": 240, "over": True}
    assert report["stages"]["RAG"]["over"] is False and report["over"] is False
    lines = format_times(report)
    assert any(line.startswith("pretraining") and line.endswith("over") for line in lines)
    assert (
        lines[-1].startswith("note: slower than DESIGN's budget") and "load average" in lines[-1]
    )
    assert not format_times(times_report({"RAG": 10.0}, 20.0))[-1].startswith("note")


@task(name="always-fails", retries=0)
def always_fails():
    raise ValueError("row 3 has no 'text' field")


@task(name="fine")
def fine():
    return 1


@flow(name="failing-stage")
def failing_stage():
    fine()
    always_fails()


def test_a_failed_stage_names_itself_its_task_and_keeps_the_cause(prefect_server):
    state = failing_stage(return_state=True)
    assert failed_task_names(state.state_details.flow_run_id) == ["always-fails"]
    with pytest.raises(StageFailedError) as raised:
        run_stage("corpus preparation", failing_stage, (), {})
    err = raised.value
    assert err.stage == "corpus preparation" and err.tasks == ["always-fails"]
    assert "stage 'corpus preparation' failed in task always-fails: row 3 has no" in str(err)
    assert isinstance(err.__cause__, ValueError)


@pytest.fixture
def restored_logging():
    """`genai demo` sets the process's logging up (a file, a console filter): undone after."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    filters = {h: list(h.filters) for h in handlers}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler, kept in filters.items():
        handler.filters[:] = kept


def test_the_demo_stopped_by_a_failed_stage_names_it_and_its_log(
    prefect_server, settings, tmp_path, capsys, restored_logging
):
    from flows.cli.main import main

    preset = tmp_path / "corpus.yaml"
    preset.write_text(yaml.safe_dump({"corpus": {"packages": ["no-such-package-here"]}}))
    code = main(["demo", "--stages", "corpus", "--preset", str(preset)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: the demo stopped in stage 'corpus preparation'" in err
    assert "no-such-package-here" in err
    logs = sorted((settings.home / "logs").glob("demo-*.log"))
    assert logs and f"the full log: {logs[-1]}" in err
    assert "no-such-package-here" in logs[-1].read_text()  # the file has the whole story
    assert "Traceback" not in err  # tracebacks only with -v
