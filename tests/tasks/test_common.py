"""Cache keys: config, upstream table versions and called code are in; run ids are not."""

from tasks.common import code_fingerprint, project_sources, task_key

MANIFEST = {"table": "/lake/bronze/t", "table_id": "abc", "version": 3, "rows": 10}


def test_code_fingerprint_covers_the_project_modules_a_step_imports():
    names = set(project_sources("pipelines.corpus.mix"))
    assert {"pipelines.corpus.mix", "infra.lake", "infra.gate"} <= names
    assert not any(name.startswith(("pyspark", "pydantic")) for name in names)
    assert code_fingerprint("pipelines.corpus.mix") != code_fingerprint("pipelines.corpus.ingest")


def test_task_key_changes_with_config_and_upstream_version_only():
    base = task_key("mix", "pipelines.corpus.mix", {"deduped": MANIFEST, "config": {"seed": 1}})
    assert base == task_key(
        "mix",
        "pipelines.corpus.mix",
        {"deduped": MANIFEST, "config": {"seed": 1}, "parent_run": "r1"},
    )
    assert base != task_key(
        "mix",
        "pipelines.corpus.mix",
        {"deduped": {**MANIFEST, "version": 4}, "config": {"seed": 1}},
    )
    assert base != task_key(
        "mix", "pipelines.corpus.mix", {"deduped": MANIFEST, "config": {"seed": 2}}
    )
