"""reports/lifecycle.html: one self-contained page per lifecycle run — per stage its tables,
models with their aliases, quality beside the baseline with a plain sentence, the runs'
images embedded and the links to MLflow and Prefect."""

from __future__ import annotations

import base64
import re

from report_data import pretrain_result, tiny_png  # noqa: E402  (tests/ is on sys.path)

from infra import tracking
from pipelines.shared import lifecycle_report as report


def test_the_page_shows_each_stage_its_tables_models_quality_and_images(settings, tmp_path):
    with tracking.start_run("report-test", "pretrain") as run:
        png = tmp_path / "loss_curve.png"
        png.write_bytes(tiny_png())
        run.log_artifact(png)
    client = tracking.client()
    client.create_registered_model("report-base")
    version = client.create_model_version("report-base", str(tmp_path), run_id=run.run_id)
    client.set_registered_model_alias("report-base", "champion", version.version)
    uri = f"models:/report-base/{version.version}"

    stage = report.stage_report("pretraining", pretrain_result(run.run_id, uri), 250.0, 240)
    assert stage.tables == [{"table": "/lake/gold/tokens", "version": 3, "rows": 1200}]
    assert stage.models == [{"uri": uri, "champion": True, "aliases": ["champion"]}]
    assert "4.900 nats/token, below the unigram baseline's 6.100" in stage.sentence
    page = report.render([stage], "http://127.0.0.1:4200/runs/flow-run/abc", 250.0)
    path = report.write_report(settings.home / "reports" / report.REPORT_NAME, page)

    text = path.read_text()
    assert "over: reported, not a failure" in text
    assert "/lake/gold/tokens" in text and "champion" in text
    assert tracking.run_url(run.run_id) in text and "flow-run/abc" in text
    [image] = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert base64.b64decode(image) == tiny_png()  # embedded whole: the page stands alone
    assert "<script" not in text and "http" not in re.sub(r"href='[^']+'|>http[^<]+<", "", text)


def test_quality_lines_say_what_the_run_reached_and_which_preset_reaches_the_bar():
    rows, sentence = report.reviews_quality(
        {
            "task_model_quality": {
                "task_model": {"precision": 0.18, "recall": 0.13},
                "base": {"precision": 0.0, "recall": 0.0},
                "keyword_baseline": {"precision": 0.47, "recall": 0.76},
            }
        }
    )
    assert rows[1] == ["genai-reviews", "0.180", "0.130"]
    assert rows[-1] == ["keyword baseline", "0.470", "0.760"]
    assert "precision 0.180, below the keyword baseline's 0.470" in sentence
    assert "--preset quality_lora_cpu" in sentence
    rows, sentence = report.finetune_quality(
        {
            "cells": [{"cell": "r4", "format_validity": 1.0, "column_coverage": 0.95}],
            "reference": {"copy baseline": {"format_validity": 1.0, "column_coverage": 1.0}},
        }
    )
    assert [r[0] for r in rows[1:]] == ["r4", "copy baseline"]
    assert "reaches format validity" in sentence and "quality_cpu" in sentence
