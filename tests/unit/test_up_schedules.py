"""`make up` says which schedules now run and how to pause them: every deployment schedule
of prefect.yaml, with its state and the commands that pause one or all."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.prefect.services import schedule_report

REPO = Path(__file__).resolve().parents[2]


def test_the_report_lists_every_schedule_with_its_state_and_how_to_pause_it():
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    rows = [
        {
            "deployment": f"{d['entrypoint'].rsplit(':', 1)[1].replace('_', '-')}/{d['name']}",
            "schedule": f"cron {s['cron']} (UTC)",
            "active": n != 0,
            "id": f"id-{n}",
        }
        for n, d in enumerate(deployments)
        for s in d.get("schedules") or []
    ]
    assert any("*/15" in r["schedule"] for r in rows)  # the frequent one is among them
    report = schedule_report(rows)
    lines = report.splitlines()
    assert lines[0] == f"{len(rows)} schedules ({len(rows) - 1} active):"
    for row in rows:
        [line] = [x for x in lines if x.strip().startswith(row["deployment"] + " ")]
        assert row["schedule"] in line and row["id"] in line
        assert line.split()[-2] == ("active" if row["active"] else "paused")
    assert "deployment schedule pause <deployment> <id>" in report
    assert "deployment schedule pause --all" in report
