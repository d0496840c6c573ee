"""``$GENAI_HOME/reports/lifecycle.html``: one self-contained page of what a lifecycle run
made — per stage its time against its budget, the tables it wrote (rows, version,
quarantined), the models it registered with their aliases, each model's quality beside its
non-LLM baseline with a plain sentence on what the demo scale reaches and which preset
reaches the bar, the MLflow runs' loss curves (embedded, so the file can be mailed), and
links to the Prefect flow run and the MLflow runs.

What the stages returned is read generically (any dict with ``table`` and ``version`` is a
table, ``uri: models:/…`` a model, ``mlflow_run_id`` a run); only the quality lines know
each stage's result."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra import tracking

REPORT_NAME = "lifecycle.html"
MAX_IMAGES_PER_STAGE = 6  # loss curves and charts: enough to judge, small enough to mail


@dataclass
class StageReport:
    title: str
    seconds: float
    budget_s: float | None
    tables: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # {"id", "name", "url", "images"}
    quality: list[list[str]] = field(default_factory=list)  # header row first
    sentence: str = ""


def walk(value) -> Iterator[dict]:
    """Every dict inside a stage's result, depth first."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from walk(v)


def tables_of(result) -> list[dict]:
    """The Delta tables a result names: path, version, and rows/quarantined when known."""
    found: dict[tuple, dict] = {}
    for d in walk(result):
        if isinstance(d.get("table"), str) and isinstance(d.get("version"), int):
            row = {"table": d["table"], "version": d["version"]}
            for key in ("rows", "written", "quarantined", "rejected"):
                if isinstance(d.get(key), int):
                    row[key] = d[key]
            found.setdefault((row["table"], row["version"]), {}).update(row)
    return list(found.values())


def models_of(result) -> list[dict]:
    """The registered models a result names (``uri: models:/name/version``)."""
    found = {}
    for d in walk(result):
        uri = d.get("uri")
        if isinstance(uri, str) and uri.startswith("models:/"):
            found[uri] = {"uri": uri, "champion": d.get("champion")}
    return list(found.values())


def run_ids_of(result) -> list[str]:
    ids = [d["mlflow_run_id"] for d in walk(result) if isinstance(d.get("mlflow_run_id"), str)]
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------ quality, per stage


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def pretrain_quality(result: dict) -> tuple[list[list[str]], str]:
    trained = result.get("trained", {})
    loss, unigram = trained.get("val_loss"), trained.get("unigram_val_loss")
    rows = [
        ["model", "validation loss (nats/token)", "bits/byte"],
        ["base model", _f(loss), _f(trained.get("val_bpb"))],
        ["add-one unigram (baseline)", _f(unigram), _f(trained.get("unigram_val_bpb"))],
    ]
    if loss is None or unigram is None:
        return rows, "No validation loss was recorded for this run."
    verdict = "below" if loss < unigram else "not below"
    return rows, (
        f"At this run's scale the base model's validation loss is {loss:.3f} nats/token, "
        f"{verdict} the unigram baseline's {unigram:.3f}. It has no quality bar of its own: "
        "it is the base the task models fine-tune from (larger presets: configs/pretrain/)."
    )


def finetune_quality(result: dict) -> tuple[list[list[str]], str]:
    rows = [["model", "format validity", "column coverage", "ROUGE-L"]]
    named = [(c["cell"], c) for c in result.get("cells", [])]
    named += list(result.get("reference", {}).items())
    rows += [
        [name, _f(q.get("format_validity")), _f(q.get("column_coverage")), _f(q.get("rouge_l"))]
        for name, q in named
    ]
    best = max(
        (q for _, q in named[: len(result.get("cells", []))]),
        key=lambda q: q.get("rouge_l") or 0,
        default=None,
    )
    reached = best is not None and (
        (best.get("format_validity") or 0) >= 0.95 and (best.get("column_coverage") or 0) >= 0.9
    )
    scale = (
        "reaches format validity ≥ 0.95 and coverage ≥ 0.90"
        if reached
        else "does not reach the bar (format validity ≥ 0.95, coverage ≥ 0.90, ROUGE-L ≥ base "
        "+ 0.2 and above the copy baseline)"
    )
    return rows, (
        f"At this run's scale the best cell {scale}. The preset measured to reach the whole "
        "bar on 2 cores is `genai finetune-sweep --preset quality_cpu` (docs/BENCHMARKS.md)."
    )


def reviews_quality(result: dict) -> tuple[list[list[str]], str]:
    quality = result.get("task_model_quality") or {}
    rows = [["model", "precision", "recall"]]
    labels = {"task_model": "genai-reviews", "base": "untuned base"}
    labels |= {
        "extractive": "extractive (the default method)",
        "keyword_baseline": "keyword baseline",
    }
    for key, label in labels.items():
        if key in quality:
            rows.append([label, _f(quality[key]["precision"]), _f(quality[key]["recall"])])
    mine, base = quality.get("task_model"), quality.get("keyword_baseline")
    if not mine or not base:
        return rows, "The task model was not scored on held-out products in this run."
    verdict = "above" if mine["precision"] > base["precision"] else "below"
    extractive = quality.get("extractive")
    default = (
        f" The summaries themselves come from the extractive method (precision "
        f"{extractive['precision']:.3f}, recall {extractive['recall']:.3f}), which quotes the "
        "reviews and needs no model."
        if extractive
        else ""
    )
    return rows, (
        f"At this run's scale genai-reviews names criticised aspects with precision "
        f"{mine['precision']:.3f}, {verdict} the keyword baseline's {base['precision']:.3f}. "
        "The preset measured to pass the baseline's precision is `genai review-summaries "
        "--preset quality_lora_cpu` (docs/BENCHMARKS.md)." + default
    )


def rag_quality(result: dict) -> tuple[list[list[str]], str]:
    answers = result.get("answers", {}).get("answers", [])
    rows = [["question", "grounded", "sources", "cited"]]
    rows += [
        [
            a["question"],
            "yes" if a.get("grounded", True) else "NO",
            str(len(a["sources"])),
            ", ".join(a["cited"]) or "-",
        ]
        for a in answers
    ]
    grounded = sum(bool(a.get("grounded", True)) for a in answers)
    index = result.get("index", {})
    return rows, (
        f"{grounded} of {len(answers)} demo answers quote only figures and ids they were "
        f"given; the index holds {index.get('documents', '?')} documents. No preset of this "
        "project has been measured to reach a quality bar for genai-rag's answers yet; the "
        "evaluation stage will grade them."
    )


QUALITY = {
    "pretraining": pretrain_quality,
    "fine-tuning": finetune_quality,
    "review summaries": reviews_quality,
    "RAG": rag_quality,
}


# ------------------------------------------------------------------ gathering, rendering


def stage_report(title: str, result: dict, seconds: float, budget_s: float | None) -> StageReport:
    """One stage's section: its outputs read from ``result`` and its runs from MLflow."""
    report = StageReport(title, seconds, budget_s, tables_of(result), models_of(result))
    for model in report.models:
        model["aliases"] = model_aliases(model["uri"])
    images = 0
    for run_id in run_ids_of(result):
        run = run_summary(run_id, MAX_IMAGES_PER_STAGE - images)
        images += len(run["images"])
        report.runs.append(run)
    if title in QUALITY:
        report.quality, report.sentence = QUALITY[title](result)
    return report


def model_aliases(uri: str) -> list[str]:
    name, version = uri.removeprefix("models:/").split("/", 1)
    try:
        model = tracking.client().get_registered_model(name)
    except Exception:  # a model the registry no longer has: shown without aliases
        return []
    return sorted(alias for alias, v in (model.aliases or {}).items() if str(v) == version)


def run_summary(run_id: str, max_images: int) -> dict:
    """A run's name, MLflow UI link and its PNG artifacts (loss curves, charts) as data."""
    client = tracking.client()
    run = client.get_run(run_id)
    images = []
    for path in png_artifacts(client, run_id)[: max(0, max_images)]:
        local = Path(client.download_artifacts(run_id, path))
        images.append({"name": path, "data": base64.b64encode(local.read_bytes()).decode()})
    return {
        "id": run_id,
        "name": run.info.run_name,
        "url": tracking.run_url(run_id),
        "images": images,
    }


def png_artifacts(client, run_id: str, path: str | None = None, depth: int = 2) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir and depth > 0:
            found += png_artifacts(client, run_id, item.path, depth - 1)
        elif item.path.lower().endswith(".png"):
            found.append(item.path)
    return found


STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}table{border-collapse:collapse;
margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f4f4}
.over{color:#a40}.note{color:#555}img{max-width:100%;border:1px solid #eee;margin:.3em 0}"""


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(stage: StageReport) -> str:
    budget = "" if stage.budget_s is None else f" of {stage.budget_s:.0f} s budget"
    over = stage.budget_s is not None and stage.seconds > stage.budget_s
    parts = [
        f"<h2>{html.escape(stage.title)}</h2>",
        f"<p class='{'over' if over else 'note'}'>{stage.seconds:.0f} s{budget}"
        + (" (over: reported, not a failure)" if over else "")
        + "</p>",
    ]
    if stage.sentence:
        parts.append(f"<p>{html.escape(stage.sentence)}</p>")
    parts.append(_table(stage.quality))
    if stage.tables:
        columns = ["table", "version", "rows", "written", "quarantined", "rejected"]
        used = [c for c in columns if any(c in t for t in stage.tables)]
        rows = [used] + [[str(t.get(c, "")) for c in used] for t in stage.tables]
        parts += ["<h3>Tables written</h3>", _table(rows)]
    if stage.models:
        rows = [["model", "aliases"]] + [
            [m["uri"], ", ".join(m["aliases"]) or "-"] for m in stage.models
        ]
        parts += ["<h3>Models registered</h3>", _table(rows)]
    for run in stage.runs:
        parts.append(
            f"<p>MLflow run <a href='{html.escape(run['url'])}'>"
            f"{html.escape(run['name'] or run['id'])}</a></p>"
        )
        parts += [
            f"<img alt='{html.escape(i['name'])}' src='data:image/png;base64,{i['data']}'>"
            for i in run["images"]
        ]
    return "\n".join(parts)


def render(stages: list[StageReport], flow_run_url: str | None, total_s: float) -> str:
    """The whole page, self-contained (inline style and images)."""
    link = (
        f"<p>Prefect flow run: <a href='{html.escape(flow_run_url)}'>"
        f"{html.escape(flow_run_url)}</a></p>"
        if flow_run_url
        else ""
    )
    body = "\n".join(_section(s) for s in stages)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>genai-lifecycle run</title>"
        f"<style>{STYLE}</style></head><body><h1>What the lifecycle made</h1>"
        f"<p class='note'>{len(stages)} stages in {total_s:.0f} s.</p>{link}{body}</body></html>"
    )


def write_report(path: Path, page: str) -> Path:
    """Written whole, then renamed: a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return path
