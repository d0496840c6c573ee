"""Cache keys: config, upstream table versions, input file content and reached code are in;
run ids are not."""

import os
import time

from infra import fingerprints
from infra.fingerprints import (
    code_fingerprint,
    data_files,
    function_roots,
    path_fingerprint,
    reached_sources,
)
from tasks.common import task_key

MANIFEST = {"table": "/lake/bronze/t", "table_id": "abc", "version": 3, "rows": 10}


def mix_key(parameters: dict) -> str:
    from tasks.corpus import mix_corpus

    return task_key("mix", mix_corpus.fn, parameters)


def test_code_fingerprint_covers_the_project_modules_a_step_imports():
    names = set(reached_sources(["pipelines.corpus.mix"]))
    assert {"pipelines.corpus.mix", "infra.lake", "infra.gate"} <= names
    assert not any(name.startswith(("pyspark", "pydantic")) for name in names)
    assert code_fingerprint("pipelines.corpus.mix") != code_fingerprint("pipelines.corpus.ingest")


def test_imports_inside_functions_and_module_strings_are_followed(tmp_path):
    import ast

    tree = ast.parse(
        "def f():\n    from pipelines.shared import templates\n"
        "CHAIN = 'pipelines.rag.chain:make_chain'\nOTHER = 'pipelines are fun'\n"
    )
    assert set(fingerprints.referenced_modules(tree)) == {
        "pipelines.shared",
        "pipelines.shared.templates",
        "pipelines.rag.chain",
    }


def test_a_task_reaches_what_its_function_calls_not_its_whole_module():
    from tasks.finetune import export_pairs, make_tabledoc_examples

    roots = function_roots(export_pairs.fn)
    assert "pipelines.finetune.pairs.write_pair_files" in roots
    assert not any(r.startswith("pipelines.finetune.examples") for r in roots)
    reached = set(reached_sources(roots))
    assert "pipelines.shared.templates" in reached  # the Alpaca template the pairs render
    assert "pipelines.finetune.lora" not in reached
    assert "pipelines.finetune.examples" in set(
        reached_sources(function_roots(make_tabledoc_examples.fn))
    )


def test_data_files_are_those_the_reached_modules_name():
    names = {p.name for p in data_files(["pipelines.finetune.industries"])}
    assert "naics_2022.csv" in names and "coarse_words.txt" not in names
    training = {p.name for p in data_files(["pipelines.training.engine"])}
    assert {"zero1_cpu.json", "zero3_cpu.json"} <= training  # read by a name built at run time


def test_task_key_changes_with_config_and_upstream_version_only():
    base = mix_key({"deduped": MANIFEST, "config": {"seed": 1}})
    assert base == mix_key({"deduped": MANIFEST, "config": {"seed": 1}, "parent_run": "r1"})
    assert base != mix_key({"deduped": {**MANIFEST, "version": 4}, "config": {"seed": 1}})
    assert base != mix_key({"deduped": MANIFEST, "config": {"seed": 2}})


def test_an_input_file_is_keyed_by_content_even_with_its_size_and_mtime_restored(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"instruction": "a", "response": "b"}\n')
    old = time.time() - 60
    os.utime(data, (old, old))
    first = mix_key({"dataset": str(data)})
    assert mix_key({"dataset": str(data)}) == first  # recorded hash reused: unchanged file
    data.write_text('{"instruction": "a", "response": "c"}\n')  # same size
    os.utime(data, (old, old))  # and the same mtime
    assert mix_key({"dataset": str(data)}) != first
    out = tmp_path / "out"
    out.mkdir()
    before = mix_key({"config": {"out_dir": str(out)}})
    (out / "result.json").write_text("{}")  # what the task wrote is not an input
    assert mix_key({"config": {"out_dir": str(out)}}) == before
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "part-1.jsonl").write_text("x\n")
    before = path_fingerprint(folder)
    (folder / "part-2.jsonl").write_text("y\n")
    assert path_fingerprint(folder) != before


def test_a_recorded_hash_is_not_trusted_for_a_file_written_just_before_hashing(tmp_path):
    data = tmp_path / "fresh.txt"
    hashes = tmp_path / "hashes.json"
    data.write_text("one")
    first = path_fingerprint(data, hashes)
    stat = data.stat()
    data.write_text("two")  # within the racy window: same size, maybe the same mtime tick
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path_fingerprint(data, hashes) != first


def test_a_module_named_in_a_parameter_is_part_of_the_code_key(monkeypatch):
    from tasks import common

    named = common.named_modules({"chain": {"factory": "pipelines.rag.chain:open_chain"}})
    assert named == ("pipelines.rag.chain",)
    plain = mix_key({"config": {"factory": "none"}})
    assert mix_key({"config": {"factory": "pipelines.rag.chain:open_chain"}}) != plain
    seen = []
    monkeypatch.setattr(common, "code_fingerprint", lambda *roots: seen.append(roots) or "x")
    mix_key({"config": {"factory": "pipelines.rag.chain:open_chain"}})
    assert "pipelines.rag.chain" in seen[-1]
