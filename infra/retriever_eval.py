"""MLflow's retriever evaluation as an adapter: ``mlflow.models.evaluate(model_type=
"retriever")`` with ``mlflow.metrics.precision_at_k``/``recall_at_k``/``ndcg_at_k`` on a static
table of expected vs retrieved source ids, in an MLflow run of its own. MLflow 3.x marks these
metrics deprecated in favour of ``mlflow.genai``, whose retrieval scorers are LLM judges without
ranked ground-truth ids; the static-dataset path still works and is what this uses (its
deprecation warnings are silenced here, once, on purpose).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

METRIC_FAMILIES = ("precision", "recall", "ndcg")  # MLflow's metrics, named <family>_at_<k>
EXPERIMENT = "evaluate-retrieval"  # runs go here when no parent run is given


def mlflow_retriever_scores(
    questions: list[str],
    expected: list[list[str]],
    retrieved: list[list[str]],
    ks: Iterable[int],
    run=None,
    run_name: str = "retriever",
    experiment: str = EXPERIMENT,
    params: dict | None = None,
) -> tuple[dict[str, list[float]], dict[str, float], str]:
    """(per-question scores by metric, means by metric, run id) from
    ``mlflow.models.evaluate(model_type="retriever")`` on a static table of expected vs
    retrieved ids. The default evaluator scores ``retriever_k`` = max(ks) itself; the other
    ks come as extra metrics. MLflow logs the means (``<metric>/mean``, ``/variance``,
    ``/p90``) and the per-question table (``eval_results_table.json``) to the run."""
    from infra import tracking
    from infra.settings import apply_environment

    apply_environment()  # MLflow's fluent API reads the workspace store from the environment
    import mlflow
    import pandas as pd

    ks = tuple(sorted(set(ks)))
    depth = max(ks)
    frame = pd.DataFrame({"question": questions, "expected": expected, "retrieved": retrieved})
    parent = getattr(run, "run_id", run)
    where = tracking.experiment_of(parent) if parent else experiment
    with tracking.start_run(where, run_name, parent=parent) as child:
        child.log_params(params or {})
        with warnings.catch_warnings():
            # mlflow.metrics.*_at_k and the legacy evaluate are deprecated (since 3.4) in
            # favour of mlflow.genai, which has no ranked-id retrieval metrics: still the tool.
            warnings.filterwarnings(
                "ignore",
                category=FutureWarning,
                message=r".*(mlflow\.metrics|mlflow\.evaluate|deprecated)",
            )
            extra = [
                make(k)
                for k in ks
                if k != depth
                for make in (
                    mlflow.metrics.precision_at_k,
                    mlflow.metrics.recall_at_k,
                    mlflow.metrics.ndcg_at_k,
                )
            ]
            # evaluate() logs into the thread's active run: make it the child, explicitly.
            with mlflow.start_run(run_id=child.run_id, nested=True):
                result = mlflow.models.evaluate(
                    data=frame,
                    model_type="retriever",
                    targets="expected",
                    predictions="retrieved",
                    evaluators="default",
                    evaluator_config={"retriever_k": depth},
                    extra_metrics=extra,
                )
    # result.tables looks the run up in the *active* experiment; read the logged table itself.
    logged = result.artifacts["eval_results_table"].content
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    if list(table["question"]) != list(questions):
        raise RuntimeError("MLflow's eval_results_table rows do not match the questions' order")
    names = [f"{family}_at_{k}" for k in ks for family in METRIC_FAMILIES]
    missing = [n for n in names if f"{n}/mean" not in result.metrics]
    if missing:
        raise RuntimeError(
            f"MLflow's retriever evaluation did not compute {missing}: check "
            f"that expected and retrieved are lists of string ids"
        )
    scores = {n: [round(float(v), 6) for v in table[f"{n}/score"]] for n in names}
    means = {n: round(float(result.metrics[f"{n}/mean"]), 6) for n in names}
    return scores, means, child.run_id
