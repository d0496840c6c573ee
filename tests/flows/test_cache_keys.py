"""Cache keys through real flow runs: synthetic examples, pairs from a user's dataset file and
a LoRA fine-tune on them, rerun after each kind of change. Same inputs: every task Cached;
an edited dataset, template, data file: exactly the tasks that read it run again.

The project files this test edits are restored byte for byte (and their caches forgotten,
as a new process would) when each edit's block ends."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from workspace_size import assert_rerun_adds_little, workspace_bytes

from infra.fingerprints import clear_caches

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TASKS = ("make-tabledoc-examples", "export-pairs", "finetune-model")


@contextlib.contextmanager
def edited(path: Path, addition: str):
    """``addition`` appended to a project file for the block; the file restored after."""
    original = path.read_bytes()
    try:
        path.write_bytes(original + addition.encode())
        clear_caches()
        yield
    finally:
        path.write_bytes(original)
        clear_caches()


@pytest.fixture(scope="module")
def run_flow(spark, prefect_server, tiny_model_dir, tmp_path_factory):
    from prefect import flow

    from pipelines.finetune.examples import SynthConfig
    from pipelines.finetune.lora import FinetuneConfig
    from tasks.finetune import export_pairs, finetune_model, make_tabledoc_examples

    data = tmp_path_factory.mktemp("user-data") / "products.jsonl"
    write_dataset(data, "sturdy")
    synth = SynthConfig(n_examples=12, test_fraction=0.2, seed=7)
    config = FinetuneConfig(
        max_steps=1,
        micro_batch=4,
        warmup_steps=0,
        max_len=48,
        zero_stage=0,
        checkpoint_every=1,
        eval_every=1,
        eval_batches=1,
    )

    @flow
    def examples_pairs_and_model() -> dict:
        states = {
            "make-tabledoc-examples": make_tabledoc_examples(synth, return_state=True),
            "export-pairs": (pairs := export_pairs(str(data), 0.1, return_state=True)),
        }
        states["finetune-model"] = finetune_model(
            pairs.result(), str(tiny_model_dir), config, return_state=True
        )
        return {name: state.name for name, state in states.items()}

    def run() -> dict:
        return examples_pairs_and_model()

    run.data = data
    return run


def write_dataset(path: Path, adjective: str) -> None:
    path.write_text(
        "".join(
            json.dumps(
                {"instruction": f"Describe product {i}.", "response": f"It is {adjective}."}
            )
            + "\n"
            for i in range(24)
        )
    )


def states(*cached: str) -> dict:
    """The expected states: the named tasks Cached, the others Completed."""
    return {name: "Cached" if name in cached else "Completed" for name in TASKS}


def test_reruns_follow_exactly_what_changed(run_flow, settings):
    before = workspace_bytes(settings.home)
    assert run_flow() == states()  # the first run computes everything
    after_first = workspace_bytes(settings.home)
    assert run_flow() == states(*TASKS)  # nothing changed
    assert_rerun_adds_little(after_first - before, workspace_bytes(settings.home) - after_first)

    # a module none of the three reaches: nothing reruns
    with edited(REPO / "pipelines" / "rag" / "pricing.py", "\n# touched by a test\n"):
        assert run_flow() == states(*TASKS)

    # the user's dataset edited in place, same file name and size
    write_dataset(run_flow.data, "stable")
    assert run_flow() == states("make-tabledoc-examples")
    assert run_flow() == states(*TASKS)

    # the shared prompt template: every task that renders it reruns
    with edited(REPO / "pipelines" / "shared" / "templates.py", "\n# edited by a test\n"):
        assert run_flow() == states()

    # a data file of the fine-tuning stage: the examples read it, the others do not
    naics = REPO / "pipelines" / "finetune" / "data" / "naics_2022.csv"
    with edited(naics, '99,"Edited by a test"\n'):
        assert run_flow() == states("export-pairs", "finetune-model")
