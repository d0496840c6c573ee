"""The review-summary report for the people who act on it: each product's latest window read
from the gold tables, the products that need attention first — the largest share of 1-2 star
reviews, the biggest rise in that share against the previous window, the most flagged
reviews — with their metrics and their points (only statements the reviews support; how many
were left out is said), then every product in one searchable table. As markdown (a Prefect
artifact) and as a static HTML page (every value escaped; one small inline script filters
the table)."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from pipelines.prompts.schema import REVIEWS
from pipelines.prompts.summaries import REVIEW_FLAGS, REVIEW_METRICS, REVIEW_SUMMARIES
from pipelines.prompts.summary_prompt import NONE
from pipelines.shared.markdown import md_table

ATTENTION_LIMIT = 10  # products in the first section at most
ATTENTION_MIN_REVIEWS = 3  # a product's latest window needs this many reviews to be ranked
NEGATIVE_SHARE_ALERT = 0.25  # a quarter of the reviews at 1-2 stars
NEGATIVE_RISE_ALERT = 0.15  # 15 points more than in the previous window
MARKDOWN_ROWS = 200  # the artifact's table of all products stops here (the HTML has them all)
TABLE_HEADER = (
    "product",
    "window",
    "reviews",
    "mean rating",
    "Δ",
    "share 1-2★",
    "Δ",
    "flagged",
    "top negative point",
)


@dataclass
class ProductView:
    """One product's latest window: its metrics, flags and summaries per band."""

    product_id: str
    name: str | None
    metrics: dict
    flagged: int
    summaries: list[dict]  # one per band of the window

    @property
    def label(self) -> str:
        return f"{self.name} ({self.product_id})" if self.name else self.product_id

    def attention_reasons(self) -> list[str]:
        """Why the product needs attention; empty when it does not."""
        m = self.metrics
        if m["reviews"] < ATTENTION_MIN_REVIEWS:
            return []
        reasons = []
        if m["share_negative"] >= NEGATIVE_SHARE_ALERT:
            reasons.append(f"{m['share_negative']:.0%} of {m['reviews']} reviews at 1-2★")
        rise = m["share_negative_change"]
        if rise is not None and rise >= NEGATIVE_RISE_ALERT:
            reasons.append(f"1-2★ share up {rise * 100:.0f} points on the previous window")
        if self.flagged:
            reasons.append(f"{self.flagged} flagged review{'s' * (self.flagged > 1)}")
        return reasons

    def attention_score(self) -> float:
        m = self.metrics
        rise = max(m["share_negative_change"] or 0.0, 0.0)
        return m["share_negative"] + rise + 0.1 * min(self.flagged, 5)

    def points(self, field: str) -> list[str]:
        """The supported points of one field, the low band's first."""
        order = {"low": 0, "mid": 1, "high": 2}
        found = []
        for s in sorted(self.summaries, key=lambda s: order.get(s["band"], 3)):
            found += [p for p in s.get(field) or [] if p not in found]
        return found[:3]

    def value_for_money(self) -> str:
        values = [s["value_for_money"] for s in self.summaries if s.get("value_for_money")]
        return next((v for v in values if v.lower() != NONE), NONE)

    def left_out(self) -> int:
        return sum(len(s.get("unsupported_spans") or []) for s in self.summaries)

    def counts_only(self) -> bool:
        return not any(s.get("summarised", True) for s in self.summaries)


def latest_products(spark, root: Path | None = None) -> list[ProductView]:
    """Each product's latest window with its summaries, flags and name, in product order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def load(spec):
        return spark.read.format("delta").load(str(spec.path(root)))

    latest = Window.partitionBy("product_id").orderBy(F.desc("window_start"))
    newest = load(REVIEW_METRICS).withColumn("n", F.row_number().over(latest)).where("n = 1")
    keys = newest.select("product_id", "window_start")
    summaries = load(REVIEW_SUMMARIES).join(keys, ["product_id", "window_start"], "left_semi")
    flagged = (
        load(REVIEW_FLAGS)
        .where("flagged")
        .join(keys, ["product_id", "window_start"], "left_semi")
        .groupBy("product_id")
        .count()
    )
    by_product: dict[str, list[dict]] = {}
    for row in summaries.collect():
        by_product.setdefault(row["product_id"], []).append(row.asDict(recursive=True))
    flags = {r["product_id"]: r["count"] for r in flagged.collect()}
    names = _product_names(spark, root)
    return [
        ProductView(
            m["product_id"],
            names.get(m["product_id"]),
            m.asDict(),
            flags.get(m["product_id"], 0),
            by_product.get(m["product_id"], []),
        )
        for m in newest.drop("n").orderBy("product_id").collect()
    ]


def _product_names(spark, root: Path | None) -> dict[str, str]:
    """product id -> name, where the reviews carry one (a metadata file joined at ingest)."""
    from pyspark.sql import functions as F

    path = REVIEWS.path(root)
    if not (path / "_delta_log").is_dir():
        return {}
    rows = (
        spark.read.format("delta")
        .load(str(path))
        .where(F.col("product_name").isNotNull())
        .groupBy("product_id")
        .agg(F.first("product_name").alias("name"))
        .collect()
    )
    return {r["product_id"]: r["name"] for r in rows}


def needing_attention(products: list[ProductView]) -> list[ProductView]:
    """The products with a reason for attention, most urgent first, at most ATTENTION_LIMIT."""
    flagged = [p for p in products if p.attention_reasons()]
    return sorted(flagged, key=lambda p: (-p.attention_score(), p.product_id))[:ATTENTION_LIMIT]


def _change(value) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _window(m: dict) -> str:
    if m["window"] == "all":
        return "all time"
    return f"from {m['window_start']} ({m['window']})"


def _row(p: ProductView) -> list:
    m = p.metrics
    top = p.points("negative_points")
    return [
        p.label,
        _window(m),
        m["reviews"],
        f"{m['mean_rating']:.2f}",
        _change(m["mean_rating_change"]),
        f"{m['share_negative']:.0%}",
        _change(m["share_negative_change"]),
        p.flagged,
        "counts only" if p.counts_only() else (top[0] if top else NONE),
    ]


def _details(p: ProductView) -> list[tuple[str, list[str]]]:
    """(label, points) of a product in the attention section."""
    if p.counts_only():
        return [("Summary", ["counts only: too few reviews in the window to summarise"])]
    lines = [
        ("Negative points", p.points("negative_points") or [NONE]),
        ("Liked most", p.points("liked_features") or [NONE]),
        ("Value for money", [p.value_for_money()]),
    ]
    if p.left_out():
        lines.append(("Left out", [f"{p.left_out()} statements the reviews do not support"]))
    return lines


def report_markdown(products: list[ProductView], title: str) -> str:
    attention = needing_attention(products)
    lines = [f"# {title}", "", _overview(products, attention), "", "## Needs attention", ""]
    if not attention:
        lines.append("No product needs attention in its latest window.")
    for p in attention:
        lines += ["", f"### {p.label}", f"_{'; '.join(p.attention_reasons())}_", ""]
        for label, points in _details(p):
            lines += [f"- **{label}:**", *(f"  - {point}" for point in points)]
    rest = [p for p in products if p not in attention]
    lines += ["", "## All other products", ""]
    lines += md_table(TABLE_HEADER, map(_row, rest[:MARKDOWN_ROWS]))
    if len(rest) > MARKDOWN_ROWS:
        lines += ["", f"…and {len(rest) - MARKDOWN_ROWS} more in the HTML report."]
    return "\n".join(lines) + "\n"


def _overview(products: list[ProductView], attention: list[ProductView]) -> str:
    reviews = sum(p.metrics["reviews"] for p in products)
    left_out = sum(p.left_out() for p in products)
    return (
        f"{len(products)} products, {reviews} reviews in their latest windows; "
        f"{len(attention)} need attention. {left_out} summary statements were left out "
        "because no review supports them."
    )


SEARCH_SCRIPT = (
    "document.getElementById('search').addEventListener('input',function(e){"
    "var q=e.target.value.toLowerCase();"
    "document.querySelectorAll('#all-products tbody tr').forEach(function(r){"
    "r.style.display=r.textContent.toLowerCase().indexOf(q)<0?'none':''})});"
)


def report_html(products: list[ProductView], title: str) -> str:
    attention = needing_attention(products)
    cards = []
    for p in attention:
        items = "".join(
            f"<li><b>{escape(label)}:</b><ul>{''.join(f'<li>{escape(x)}</li>' for x in points)}"
            "</ul></li>"
            for label, points in _details(p)
        )
        cards.append(
            f"<article class='product'><h3>{escape(p.label)}</h3>"
            f"<p class='why'>{escape('; '.join(p.attention_reasons()))}</p>"
            f"<table><tr>{_cells(TABLE_HEADER[1:8], 'th')}</tr>"
            f"<tr>{_cells(_row(p)[1:8])}</tr></table><ul>{items}</ul></article>"
        )
    rest = [p for p in products if p not in attention]
    rows = "".join(f"<tr>{_cells(_row(p))}</tr>" for p in rest)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
        ".product{border-left:4px solid #c33;padding-left:1em;margin:1em 0}"
        ".why{color:#a22;font-weight:bold}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(_overview(products, attention))}</p>"
        "<section id='attention'><h2>Needs attention</h2>"
        + ("".join(cards) or "<p>No product needs attention in its latest window.</p>")
        + "</section><section id='all-products'><h2>All other products</h2>"
        "<input id='search' type='search' placeholder='Search products or points'>"
        f"<table><thead><tr>{_cells(TABLE_HEADER, 'th')}</tr></thead><tbody>{rows}</tbody>"
        f"</table></section><script>{SEARCH_SCRIPT}</script></body></html>\n"
    )


def _cells(values, tag: str = "td") -> str:
    return "".join(f"<{tag}>{escape(str(v))}</{tag}>" for v in values)


def review_report(spark, title: str, root: Path | None = None) -> dict:
    """The report of each product's latest window: ``markdown``, ``html``, how many
    ``products`` and ``groups`` it shows and which products ``attention`` lists."""
    products = latest_products(spark, root)
    return {
        "markdown": report_markdown(products, title),
        "html": report_html(products, title),
        "products": len(products),
        "groups": sum(len(p.summaries) for p in products),
        "attention": [p.product_id for p in needing_attention(products)],
    }
