"""The quality gate: run a table's Great Expectations suite and find the rows that fail it.

GE validates the whole batch on Spark; with ``unexpected_index_column_names`` it also reports
which rows broke each expectation, through a ``_row_id`` column the gate adds. Those ids become
the quarantine (with every failed expectation as the reason); table-level expectations that
fail (no rows to blame) fail the whole batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache

ROW_ID = "_row_id"
_lock = threading.Lock()  # GE's ephemeral context is not thread-safe; tasks may share a process


@dataclass
class GateReport:
    rows: int
    failed_rows: int
    unexpected: dict[str, int] = field(default_factory=dict)  # expectation -> failing rows
    table_failures: list[str] = field(default_factory=list)  # failed expectations with no rows
    failures: list[tuple[int, str]] = field(default_factory=list)  # (row id, expectation)

    @property
    def fraction(self) -> float:
        return self.failed_rows / self.rows if self.rows else 0.0

    def describe(self) -> str:
        parts = [f"{name}: {n} rows" for name, n in sorted(self.unexpected.items()) if n]
        parts += [f"{name}: failed for the table" for name in self.table_failures]
        return "; ".join(parts) or "all expectations met"


def describe_expectation(config: dict) -> str:
    """expect_column_values_to_not_be_null(column=id) — short, stable, readable."""
    args = ", ".join(f"{k}={v}" for k, v in sorted(config["kwargs"].items()) if k != "batch_id")
    return f"{config['type']}({args})"


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm in task logs
    return context


@lru_cache(maxsize=1)
def _batch_definition():
    source = _context().data_sources.add_spark("genai-lake")
    return source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")


def _suite(name: str, expectations: tuple[dict, ...]):
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    suite = gx.ExpectationSuite(name=name)
    for config in expectations:
        suite.add_expectation(ExpectationConfiguration(**config).to_domain_obj())
    return suite


def run_suite(df, suite_name: str, expectations: tuple[dict, ...], rows: int) -> GateReport:
    """Validate df (which must carry ROW_ID) and collect the failing row ids per expectation."""
    report = GateReport(rows=rows, failed_rows=0)
    if not expectations or rows == 0:
        return report
    with _lock:
        context = _context()
        suite = _suite(suite_name, expectations)
        existing = {s.name for s in context.suites.all()}
        if suite_name in existing:
            context.suites.delete(suite_name)
        suite = context.suites.add(suite)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(
            suite,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [ROW_ID],
                "return_unexpected_index_query": False,
            },
        )
    failed_ids: set[int] = set()
    for outcome in result.results:
        name = describe_expectation(outcome.expectation_config.to_json_dict())
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"expectation {name} could not run: "
                f"{outcome.exception_info.get('exception_message')}"
            )
        indexes = outcome.result.get("unexpected_index_list")
        if indexes is None:
            if not outcome.success:
                report.table_failures.append(name)
            continue
        ids = [int(entry[ROW_ID]) for entry in indexes]
        report.unexpected[name] = len(ids)
        report.failures.extend((i, name) for i in ids)
        failed_ids.update(ids)
    report.failed_rows = len(failed_ids)
    return report
