"""The review-summary report: each product's latest window read from the gold tables, as
markdown (a Prefect artifact) and as a static HTML page — metrics up top, then each
product's answers per rating band."""

from __future__ import annotations

from pathlib import Path

from pipelines.prompts.summaries import GROUP_KEY, REVIEW_METRICS, REVIEW_SUMMARIES
from pipelines.prompts.summary_prompt import NONE
from pipelines.shared.markdown import md_table

METRIC_HEADER = ("product", "window", "reviews", "mean rating", "Δ", "share 1-2★", "Δ")


def latest_report_rows(spark, root: Path | None = None) -> tuple[list[dict], list[dict]]:
    """(summaries, metrics) of each product's latest window, for the report."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    metrics = spark.read.format("delta").load(str(REVIEW_METRICS.path(root)))
    latest = Window.partitionBy("product_id").orderBy(F.desc("window_start"))
    newest = metrics.withColumn("n", F.row_number().over(latest)).where("n = 1").drop("n")
    summaries = (
        spark.read.format("delta")
        .load(str(REVIEW_SUMMARIES.path(root)))
        .join(
            newest.select("product_id", "window_start"),
            ["product_id", "window_start"],
            "left_semi",
        )
    )
    return (
        [r.asDict(recursive=True) for r in summaries.orderBy(*GROUP_KEY).collect()],
        [r.asDict() for r in newest.orderBy("product_id").collect()],
    )


def _change(value) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _metric_cells(m: dict) -> list:
    return [
        m["product_id"],
        m["window_start"],
        m["reviews"],
        f"{m['mean_rating']:.2f}",
        _change(m["mean_rating_change"]),
        f"{m['share_negative']:.0%}",
        _change(m["share_negative_change"]),
    ]


def report_markdown(summaries: list[dict], metrics: list[dict]) -> str:
    """Metrics up top, then each product's answers per band."""
    lines = [
        "# Review summaries",
        "",
        *md_table(METRIC_HEADER, map(_metric_cells, metrics), escape=False),
    ]
    for s in summaries:
        lines += [
            "",
            f"## {s['product_id']} · {s['band']} band · {s['window_start']} "
            f"({s['review_count']} reviews)",
        ]
        if s["parse_error"]:
            lines += [
                f"- could not parse the answer ({s['parse_error']}); raw:",
                "",
                "```",
                s["raw"],
                "```",
            ]
            continue
        lines += [
            f"- **Negative points:** {'; '.join(s['negative_points']) or NONE}",
            f"- **Liked most:** {'; '.join(s['liked_features']) or NONE}",
            f"- **Value for money:** {s['value_for_money']}",
            f"- **Flagged reviews:** {', '.join(s['flagged_review_ids']) or NONE}",
        ]
    return "\n".join(lines) + "\n"


def report_html(summaries: list[dict], metrics: list[dict], title: str) -> str:
    """A static page of the same content (no scripts, every value escaped)."""
    from html import escape

    def cells(values) -> str:
        return "".join(f"<td>{escape(str(v))}</td>" for v in values)

    header = "".join(f"<th>{escape(h)}</th>" for h in METRIC_HEADER)
    rows = "".join("<tr>" + cells(_metric_cells(m)) + "</tr>" for m in metrics)
    sections = []
    for s in summaries:
        head = (
            f"<h2>{escape(s['product_id'])} · {escape(s['band'])} band · "
            f"{escape(str(s['window_start']))} ({s['review_count']} reviews)</h2>"
        )
        if s["parse_error"]:
            body = (
                f"<p>Could not parse the answer: {escape(s['parse_error'])}</p>"
                f"<pre>{escape(s['raw'])}</pre>"
            )
        else:
            items = [
                ("Negative points", "; ".join(s["negative_points"]) or NONE),
                ("Liked most", "; ".join(s["liked_features"]) or NONE),
                ("Value for money", s["value_for_money"]),
                ("Flagged reviews", ", ".join(s["flagged_review_ids"]) or NONE),
            ]
            body = (
                "<ul>" + "".join(f"<li><b>{k}:</b> {escape(v)}</li>" for k, v in items) + "</ul>"
            )
        sections.append(head + body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "</style></head><body>"
        f"<h1>{escape(title)}</h1><table><tr>{header}</tr>"
        f"{rows}</table>{''.join(sections)}</body></html>\n"
    )


def review_report(spark, title: str, root: Path | None = None) -> dict:
    """The report of each product's latest window: ``markdown``, ``html``, and how many
    ``products`` and ``groups`` it shows."""
    summaries, metrics = latest_report_rows(spark, root)
    return {
        "markdown": report_markdown(summaries, metrics),
        "html": report_html(summaries, metrics, title),
        "products": len(metrics),
        "groups": len(summaries),
    }
