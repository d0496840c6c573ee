"""prepare-corpus end to end on a small package slice: tables, lineage, artifacts, caching."""

import pytest

from flows.prepare_corpus import PrepareCorpusConfig, prepare_corpus
from infra import tracking
from infra.lake import read_table, table_ref
from pipelines.corpus.mix import MixConfig
from pipelines.shared.documents import CorpusConfig

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def small_config(*packages: str) -> PrepareCorpusConfig:
    return PrepareCorpusConfig(
        corpus=CorpusConfig(packages=list(packages)), mix=MixConfig(byte_budget=100_000)
    )


def test_the_flow_writes_every_layer_and_links_mlflow_with_prefect(spark, prefect_server):
    state = prepare_corpus(small_config("click", "idna"), return_state=True)
    assert state.is_completed(), state.message
    mix = state.result()
    assert (
        mix["table"].endswith("gold/pretrain_mix")
        and 0 < mix["rows"] == read_table(spark, mix).count()
    )

    client = tracking.client()
    experiment = client.get_experiment_by_name("prepare-corpus")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert {r.info.run_name for r in children} == {
        "ingest-corpus",
        "clean-corpus",
        "dedup-corpus",
        "mix-corpus",
    }
    mix_run = next(r for r in children if r.info.run_name == "mix-corpus")
    assert mix_run.data.params["input.silver/corpus_dedup.version"].isdigit()
    assert [i.dataset.name for i in mix_run.inputs.dataset_inputs].count("gold/pretrain_mix") == 1

    raw = next(r for r in children if r.info.run_name == "ingest-corpus")
    assert (
        raw.data.metrics["rows"] + raw.data.metrics["quarantined"] == raw.data.metrics["records"]
    )


def test_a_rerun_after_the_third_task_failed_reuses_the_first_two(
    spark, prefect_server, monkeypatch
):
    config = small_config("jinja2")
    monkeypatch.setenv("GENAI_FAULT", "dedup.start")
    monkeypatch.setenv("GENAI_FAULT_MODE", "raise")
    failed = prepare_corpus(config, return_state=True)
    assert failed.is_failed()
    states = task_run_states(failed.state_details.flow_run_id)
    assert states["ingest-corpus"] == "Completed" and states["dedup-corpus"] == "Failed"
    clean_table = config_table_ref(spark, "silver", "corpus_clean")

    monkeypatch.delenv("GENAI_FAULT")
    rerun = prepare_corpus(config, return_state=True)
    assert rerun.is_completed(), rerun.message
    states = task_run_states(rerun.state_details.flow_run_id)
    assert states["ingest-corpus"] == "Cached" and states["clean-corpus"] == "Cached"
    assert states["dedup-corpus"] == "Completed" and states["mix-corpus"] == "Completed"
    assert config_table_ref(spark, "silver", "corpus_clean") == clean_table  # not rewritten


def config_table_ref(spark, layer, name):
    from infra.settings import load_settings

    return table_ref(spark, load_settings().lake / layer / name)


def task_run_states(flow_run_id) -> dict[str, str]:
    """task name -> state name ("Completed", "Cached", "Failed", ...) for one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}
