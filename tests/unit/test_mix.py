"""Data mixing: byte shares per source, determinism by seed, repeats of small sources."""

import pytest

from pipelines.corpus.mix import MixConfig, build_mix, mix_stats

pytestmark = pytest.mark.spark

SCHEMA = "id STRING, source STRING, package STRING, licence STRING, text STRING"


@pytest.fixture(scope="module")
def corpus(spark):
    rows = [(f"doc{i:03d}", "docstring", "p", None, "x" * 100) for i in range(200)]
    rows += [(f"meta{i:02d}", "metadata", "p", None, "y" * 100) for i in range(10)]
    return spark.createDataFrame(rows, SCHEMA)


def test_each_source_gets_its_share_of_the_budget(corpus):
    config = MixConfig(weights={"docstring": 3, "metadata": 1}, byte_budget=4000, max_repeats=1)
    mix, targets = build_mix(corpus, config)
    stats = mix_stats(mix, targets)
    assert targets == {"docstring": 3000, "metadata": 1000}
    assert stats["docstring"]["bytes"] == 3000 and stats["metadata"]["bytes"] == 1000


def test_a_small_source_is_repeated_up_to_max_repeats(corpus):
    config = MixConfig(weights={"docstring": 1, "metadata": 1}, byte_budget=6000, max_repeats=3)
    mix, targets = build_mix(corpus, config)
    stats = mix_stats(mix, targets)
    assert stats["metadata"]["bytes"] == 3000 and stats["metadata"]["passes"] == 3
    assert mix.select("mix_id").distinct().count() == mix.count()
    # without repeats the same source is capped by what it has
    stats = mix_stats(*build_mix(corpus, config.model_copy(update={"max_repeats": 1})))
    assert stats["metadata"]["bytes"] == 1000


def test_the_sample_is_a_function_of_the_seed(corpus):
    config = MixConfig(weights={"docstring": 1}, byte_budget=2000, seed=7)
    first = {r.id for r in build_mix(corpus, config)[0].collect()}
    again = {r.id for r in build_mix(corpus.repartition(3), config)[0].collect()}
    other = {r.id for r in build_mix(corpus, config.model_copy(update={"seed": 8}))[0].collect()}
    assert first == again and len(first) == 20
    assert other != first
