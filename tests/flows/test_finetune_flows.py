"""finetune-sweep end to end on the tiny fixture model (2 steps per cell), then pairwise-eval's
prepare → fill → score round on the model it registered."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from statistics import fmean

import pytest

from flows.finetune_sweep import SweepConfig, finetune_sweep
from flows.pairwise_eval import PairwiseConfig, pairwise_eval
from infra import registry, tracking
from pipelines.evaluation.text_metrics import rouge_l
from pipelines.finetune.lora import lora_parameter_count, resolve_targets
from pipelines.shared.tabledoc_format import ddl_columns, format_valid, response_part
from pipelines.training.models import build_model, model_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep(spark, prefect_server, long_tiny_model):
    # 1,024 positions: the held-out prompts (~600 tiny-tokenizer tokens) fit, as on the demo
    # models; a 128-position base gets empty answers for them (tests/unit/test_llm.py)
    config = SweepConfig(
        synth={"n_examples": 60, "test_fraction": 0.2},
        train={
            "max_steps": 2,
            "micro_batch": 4,
            "warmup_steps": 1,
            "max_len": 192,
            "zero_stage": 0,
            "checkpoint_every": 2,
            "eval_every": 2,
            "eval_batches": 1,
        },
        ranks=[4],
        targets=["attention", "all-linear"],
        base_bits=[32, 4],
        max_cells=2,
        eval_examples=3,
        max_new_tokens=24,
        model_name="genai-test-tabledoc",
        structured=True,
    )
    state = finetune_sweep(config, base=str(long_tiny_model), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def test_a_two_step_sweep_trains_each_cell_and_registers_the_best(sweep):
    cells = sweep["cells"]
    assert [c["target_modules"] for c in cells] == ["attention", "all-linear"]
    base = build_model(model_config("tiny", vocab_size=512), seed=0)
    for cell in cells:
        targets = resolve_targets(base, cell["target_modules"])
        assert cell["parameters_updated"] == lora_parameter_count(base, targets, 4)
        assert 0 <= cell["rouge_l"] <= 1 and 0 <= cell["format_validity"] <= 1
    assert sum(c["best"] for c in cells) == 1
    assert set(sweep["reference"]) == {"base", "copy-column-names"}
    assert sweep["reference"]["copy-column-names"]["format_validity"] == 1.0

    registered = sweep["registered"]
    assert registered["version"] == "1" and registered["champion"] is True
    assert str(registry.alias_version("genai-test-tabledoc").version) == "1"
    client = tracking.client()
    run = client.get_run(sweep["best"]["mlflow_run_id"])
    for metric in (
        "loss",
        "eval_loss",
        "trainable_parameters",
        "wall_s",
        "rouge_l",
        "column_coverage",
        "format_validity",
    ):
        assert metric in run.data.metrics, metric
    assert "silver/tabledoc_examples" in [i.dataset.name for i in run.inputs.dataset_inputs]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "fixed_prompt_generations.json", "loss_curve.png"} <= artifacts
    version = client.get_model_version("genai-test-tabledoc", "1")
    assert version.tags["adapter"].endswith("/adapter") and version.tags["base"]
    # scored with structured decoding: every column of the CREATE TABLE gets its line, in order
    generations = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "fixed_prompt_generations.json")
        ).read_text()
    )["samples"]
    for sample in generations:
        lines = [line.split(":", 1)[0] for line in sample["generated"].splitlines()]
        assert [line for line in lines if line.startswith("- ")] == [
            f"- {column}" for column in ddl_columns(sample["prompt"])
        ]
        assert lines[0] == "Description"
    # the best cell's scores are its held-out generations' (all 3 items are logged), recomputed;
    # the summary rows round them to 4 places
    answers = [(response_part(s["generated"]), s) for s in generations]
    expected = {
        "rouge_l": fmean(rouge_l(a, s["reference"]) for a, s in answers),
        "format_validity": fmean(format_valid(a, ddl_columns(s["prompt"])) for a, s in answers),
    }
    best_row = next(c for c in cells if c["best"])
    for metric, value in expected.items():
        assert sweep["best"][metric] == pytest.approx(value)
        assert best_row[metric] == round(value, 4)


def test_pairwise_prepare_then_score_logs_win_rates(sweep, prefect_server, tmp_path):
    config = PairwiseConfig(
        model_a="models:/genai-test-tabledoc@champion",
        model_b=sweep["registered"]["model_dir"],
        items=4,
        max_new_tokens=16,
        out_dir=str(tmp_path / "sheet"),
    )
    sheet = pairwise_eval(config, pairs=sweep["pairs"])
    key = json.loads(open(sheet["key"]).read())
    assert "genai-test-tabledoc" not in open(sheet["sheet_csv"]).read()
    filled = []
    for rater in range(4):  # every rater prefers model A, whichever side it is on
        rows = list(csv.DictReader(open(sheet["sheet_csv"], encoding="utf-8-sig")))
        for row in rows:
            row["vote"] = "L" if key_side_of_a(key, row["item_id"]) == "left" else "R"
        path = tmp_path / f"rater{rater}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        filled.append(str(path))
    summary = pairwise_eval(config, sheets=filled, key=sheet["key"])
    assert summary["a_win_rate"]["rate"] == 1.0 and summary["a_win_rate"]["n"] == 16


def test_finetune_task_turns_an_instruction_dataset_into_a_registered_task_model(
    prefect_server, tiny_model_dir, tmp_path
):
    from prefect import flow
    from transformers import AutoModelForCausalLM

    from pipelines.finetune.lora import FinetuneConfig
    from tasks.finetune import finetune_task

    data = tmp_path / "products.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"Describe product {i}.",
                    "response": f"Product {i} is a sturdy item.",
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    config = FinetuneConfig(
        max_steps=2,
        micro_batch=4,
        warmup_steps=1,
        max_len=64,
        zero_stage=0,
        checkpoint_every=2,
        eval_every=2,
        eval_batches=1,
    )

    @flow
    def make_task_model():
        return finetune_task(str(data), str(tiny_model_dir), config, "genai-test-products")

    first = make_task_model()
    assert first["version"] == "1" and first["champion"] is True
    AutoModelForCausalLM.from_pretrained(
        str(registry.model_dir("models:/genai-test-products@champion"))
    )
    again = make_task_model()  # cached tasks, same model: no second version
    assert again["version"] == "1"
    assert len(tracking.client().search_model_versions("name='genai-test-products'")) == 1


def key_side_of_a(key: dict, item_id: str) -> str:
    """Which side model A sits on for an item, by the key."""
    return "left" if key["items"][item_id]["left"] == key["model_a"] else "right"
