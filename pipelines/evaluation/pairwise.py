"""Double-blind pairwise evaluation of two models' outputs by human raters.

The seed's setup: four raters read the documentation two models wrote for the same 62 unseen
tables and answer "which is better: A, B or tie". Raters must not know which model wrote which
text, nor be able to learn it from a text's position, so:

* ``make_rating_sheet`` shows each item's two outputs as *left* and *right*; the side of each
  model is drawn per item by a seeded RNG, balanced (half of the items put model A on the left)
  so a rater's position bias cancels in the overall rates. The sheet (``sheet.csv`` to vote in,
  ``sheet.html`` to read) carries no model names; the unblinding ``key.json`` is written beside
  it and must be kept from the raters.
* ``read_ratings`` validates the filled sheets strictly (every problem in every file is
  reported at once, with file and row) and maps L/R votes back to models through the key.
* ``summarise`` gives win and tie rates with Wilson intervals, per-rater tallies and rater
  agreement (Cohen's kappa per pair, Fleiss' kappa overall) over votes *by model*, not by side.
* ``score_sheets`` does both for a set of filled sheets; ``pipelines.evaluation.pairwise_report``
  renders the summary for a Prefect artifact and disk.

Row numbers in errors are spreadsheet rows: the header is row 1, the first item row 2, and a
cell with line breaks still counts as one row.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from infra.files import write_bytes_atomic

Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval
TIE = "tie"  # the winner of a tied vote (so no model may be called "tie")
SHEET_COLUMNS = ("item_id", "input", "left", "right", "vote", "comment")
REQUIRED_COLUMNS = ("item_id", "vote")  # the rest is there for the rater, not for us
VOTES = {"l": "L", "left": "L", "r": "R", "right": "R", "t": "T", "tie": "T"}
RATING_COLUMNS = ["rater", "item_id", "vote", "winner", "comment"]
MAX_IDS_LISTED = 5  # a "missing items" message names this many ids, then counts the rest
DEFAULT_TITLE = "Which documentation is better?"
INSTRUCTIONS = (
    "Each item shows one input and two candidate outputs, <b>Left</b> and <b>Right</b>. Read "
    "both and decide which is better. In <code>sheet.csv</code>, write <b>L</b> (left is "
    "better), <b>R</b> (right is better) or <b>T</b> (tie) in the <code>vote</code> column of "
    "the item's row; a comment is optional. Sides are drawn at random for every item, so the "
    "same system is not always on the same side. Do not edit <code>item_id</code>, and save "
    "the file as CSV (UTF-8)."
)
CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:120em}"
    "section{border-top:2px solid #444;margin-top:2em}"
    ".pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;"
    "border:1px solid #ddd;padding:.8em}"
)


class RatingSheetError(ValueError):
    """Rating sheets (or their key) that cannot be read; ``problems`` lists every one."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the rating sheets:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


# ---------------------------------------------------------------------------- the sheet


def make_rating_sheet(
    items: list[dict],
    model_a: str,
    model_b: str,
    out_dir: Path | str,
    seed: int,
    title: str = DEFAULT_TITLE,
) -> dict:
    """Write ``sheet.csv``, ``sheet.html`` (for raters) and ``key.json`` (kept from them).

    Items are ``{"item_id", "input", "output_a", "output_b"}``; returns the paths and counts,
    plus ``identity_hints``: items whose own text mentions a model name (the sheet cannot hide
    what the outputs themselves say, so a caller should look at those).
    """
    rows = _validated_items(items)
    _check_model_names(model_a, model_b, title)
    a_left = _balanced_sides(len(rows), seed)
    sheet, key_items = [], {}
    for row, left_is_a in zip(rows, a_left, strict=False):
        left, right = (model_a, model_b) if left_is_a else (model_b, model_a)
        out = {model_a: row["output_a"], model_b: row["output_b"]}
        sheet.append(
            {
                "item_id": row["item_id"],
                "input": row["input"],
                "left": out[left],
                "right": out[right],
                "vote": "",
                "comment": "",
            }
        )
        key_items[row["item_id"]] = {"left": left, "right": right}
    csv_bytes = _sheet_csv(sheet)
    html_bytes = _sheet_html(sheet, title).encode("utf-8")
    key = {
        "model_a": model_a,
        "model_b": model_b,
        "seed": seed,
        "sheet_sha256": hashlib.sha256(csv_bytes).hexdigest(),
        "html_sha256": hashlib.sha256(html_bytes).hexdigest(),
        "items": key_items,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The key first: a sheet on disk without its key could be filled in but never unblinded.
    write_bytes_atomic(
        out_dir / "key.json", json.dumps(key, indent=2, ensure_ascii=False).encode()
    )
    write_bytes_atomic(out_dir / "sheet.csv", csv_bytes)
    write_bytes_atomic(out_dir / "sheet.html", html_bytes)
    names = (model_a.lower(), model_b.lower())
    hints = [r["item_id"] for r in rows if any(n in v.lower() for n in names for v in r.values())]
    return {
        "sheet_csv": str(out_dir / "sheet.csv"),
        "sheet_html": str(out_dir / "sheet.html"),
        "key": str(out_dir / "key.json"),
        "items": len(rows),
        "a_left": sum(a_left),
        "b_left": len(rows) - sum(a_left),
        "sheet_sha256": key["sheet_sha256"],
        "identity_hints": hints,
    }


def _validated_items(items: list[dict]) -> list[dict]:
    """Items as strings, ids stripped; every malformed item is reported in one ValueError."""
    problems, rows, seen = [], [], set()
    for i, item in enumerate(items):
        missing = [f for f in ("item_id", "input", "output_a", "output_b") if item.get(f) is None]
        if missing:
            problems.append(f"item {i}: missing {', '.join(missing)}")
            continue
        row = {f: str(item[f]) for f in ("input", "output_a", "output_b")}
        row["item_id"] = str(item["item_id"]).strip()
        if not row["item_id"] or row["item_id"] in seen:
            problems.append(f"item {i}: item_id {row['item_id']!r} is empty or repeated")
        seen.add(row["item_id"])
        rows.append(row)
    if not items:
        problems.append("no items to rate")
    if problems:
        raise ValueError("cannot build a rating sheet:\n" + "\n".join(problems))
    return rows


def _check_model_names(model_a: str, model_b: str, title: str) -> None:
    if not model_a or not model_b or model_a == model_b or TIE in (model_a, model_b):
        raise ValueError(
            f"need two distinct model names other than {TIE!r}, got {model_a!r} and {model_b!r}"
        )
    if model_a.lower() in title.lower() or model_b.lower() in title.lower():
        raise ValueError(f"the title {title!r} names a model, which would unblind the raters")


def _balanced_sides(n: int, seed: int) -> list[bool]:
    """Whether each item shows model A on the left: exactly n // 2 do, in a seeded order
    (an odd item's side is a coin flip), so position bias cannot favour either model."""
    rng = np.random.default_rng(seed)
    sides = np.zeros(n, dtype=bool)
    sides[: n // 2] = True
    if n % 2:
        sides[-1] = bool(rng.integers(2))
    return [bool(s) for s in rng.permutation(sides)]


def _sheet_csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=SHEET_COLUMNS, quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows(rows)
    # utf-8-sig: with the BOM, Excel opens accented text correctly; every reader here strips it
    return buffer.getvalue().encode("utf-8-sig")


def _sheet_html(rows: list[dict], title: str) -> str:
    esc = html.escape  # quote=True: escapes <, >, &, " and ' in text and attributes alike
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><p>{INSTRUCTIONS}</p>",
    ]
    for i, row in enumerate(rows, start=1):
        parts.append(
            f'<section id="item-{i}"><h2>Item {i} of {len(rows)}: <code>{esc(row["item_id"])}'
            f"</code> (sheet.csv row {i + 1})</h2><h3>Input</h3><pre>{esc(row['input'])}</pre>"
            f'<div class="pair"><div><h3>Left</h3><pre>{esc(row["left"])}</pre></div>'
            f"<div><h3>Right</h3><pre>{esc(row['right'])}</pre></div></div></section>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- reading votes


def read_ratings(
    sheet_paths: dict[str, Path | str] | list[Path | str],
    key_path: Path | str,
    allow_missing: bool = False,
) -> pd.DataFrame:
    """Filled sheets -> one row per vote: rater, item_id, vote (L/R/T), winner, comment.

    Raters are the dict's keys, or the files' stems for a list. Raises ``RatingSheetError``
    listing every problem found. ``allow_missing`` accepts partial sheets: items without a
    row, or with an empty vote, count as not rated by that rater.
    """
    key = _load_key(Path(key_path))
    problems: list[str] = []
    records: list[dict] = []
    for rater, path in _named_sheets(sheet_paths).items():
        records += _read_sheet(rater, path, key, allow_missing, problems)
    if problems:
        raise RatingSheetError(problems)
    return pd.DataFrame(records, columns=RATING_COLUMNS)


def _load_key(path: Path) -> dict:
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
        models = {key["model_a"], key["model_b"]}
        bad = [i for i, s in key["items"].items() if {s["left"], s["right"]} != models]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RatingSheetError(
            [
                f"{path}: not a rating key written by make_rating_sheet "
                f"({type(exc).__name__}: {exc})"
            ]
        ) from exc
    if bad:
        raise RatingSheetError(
            [f"{path}: items {bad[:MAX_IDS_LISTED]} do not map left/right to the key's two models"]
        )
    return key


def _named_sheets(sheet_paths) -> dict[str, Path]:
    if isinstance(sheet_paths, dict):
        named = {str(rater): Path(p) for rater, p in sheet_paths.items()}
    else:
        paths = [Path(p) for p in sheet_paths]
        named = {p.stem: p for p in paths}
        if len(named) < len(paths):
            raise RatingSheetError(
                [
                    f"two sheets share a file stem among {[str(p) for p in paths]};"
                    " pass {rater: path} to name the raters"
                ]
            )
    if not named:
        raise RatingSheetError(["no rating sheets given"])
    return named


def _read_sheet(
    rater: str, path: Path, key: dict, allow_missing: bool, problems: list[str]
) -> list[dict]:
    """One rater's votes; appends this file's problems (with rows) to ``problems``."""
    rows = _csv_rows(path, problems)
    if rows is None:
        return []
    items, votes, seen = key["items"], [], {}
    for line, row in rows:
        where, item_id, raw = f"{path} row {line}", row["item_id"].strip(), row["vote"].strip()
        if not item_id:
            problems.append(f"{where}: missing item_id")
            continue
        seen.setdefault(item_id, []).append(line)
        if item_id not in items:
            problems.append(f"{where}: unknown item id {item_id!r} (not in the key)")
        elif not raw:
            if not allow_missing:
                problems.append(f"{where}: missing vote for item {item_id!r} (expected L, R or T)")
        elif raw.lower() not in VOTES:
            problems.append(
                f"{where}: invalid vote {raw!r} for item {item_id!r} "
                "(expected L, R or T; left, right or tie also accepted)"
            )
        else:
            vote = VOTES[raw.lower()]
            winner = {"L": items[item_id]["left"], "R": items[item_id]["right"]}.get(vote, TIE)
            votes.append(
                {
                    "rater": rater,
                    "item_id": item_id,
                    "vote": vote,
                    "winner": winner,
                    "comment": row["comment"].strip(),
                }
            )
    for item_id, lines in seen.items():
        if len(lines) > 1:
            problems.append(
                f"{path} rows {', '.join(map(str, lines))}: item {item_id!r} is "
                f"rated {len(lines)} times by the same rater"
            )
    missing = [i for i in items if i not in seen]
    if missing and not allow_missing:
        more = ", ..." if len(missing) > MAX_IDS_LISTED else ""
        problems.append(
            f"{path}: {len(missing)} of {len(items)} items of the key have no row: "
            f"{', '.join(missing[:MAX_IDS_LISTED])}{more} "
            "(pass allow_missing=True to accept a partial sheet)"
        )
    return votes


def _csv_rows(path: Path, problems: list[str]) -> list[tuple[int, dict]] | None:
    """(spreadsheet row number, {item_id, vote, comment}) per non-blank row; None if unusable."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # newline="": keep cell breaks
            records = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text (byte {exc.start}); save it as CSV UTF-8")
        return None
    except (OSError, csv.Error) as exc:
        problems.append(f"{path}: cannot be read as CSV ({exc})")
        return None
    if not records:
        problems.append(
            f"{path}: empty file, expected a header row with {', '.join(REQUIRED_COLUMNS)}"
        )
        return None
    header = [h.strip().lower() for h in records[0]]
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        problems.append(
            f"{path}: missing required column(s) {', '.join(absent)}; columns "
            f"found: {', '.join(repr(h) for h in records[0]) or 'none'}"
        )
        return None
    where = {c: header.index(c) for c in (*REQUIRED_COLUMNS, "comment") if c in header}

    def cell(record: list[str], column: str) -> str:
        i = where.get(column, len(record))
        return record[i] if i < len(record) else ""

    return [
        (n, {c: cell(r, c) for c in ("item_id", "vote", "comment")})
        for n, r in enumerate(records[1:], start=2)
        if any(v.strip() for v in r)
    ]  # spreadsheets pad the end with empty rows


# ---------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = k / n:

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    Unlike the normal approximation it stays inside [0, 1] and is not empty at k = 0 or n.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)  # clip float noise at 0 and 1


def cohen_kappa(labels_1, labels_2) -> float | None:
    """Cohen's kappa of two raters over the same items:

        kappa = (p_o - p_e) / (1 - p_e),  p_o = share of items with equal labels,
        p_e = sum_k p_1k * p_2k  (p_rk: share of rater r's labels in category k).

    None when undefined: no items, or p_e = 1 (both raters used one and the same category).
    """
    a, b = np.asarray(labels_1, dtype=object), np.asarray(labels_2, dtype=object)
    if len(a) != len(b):
        raise ValueError(f"raters labelled different numbers of items: {len(a)} and {len(b)}")
    if len(a) == 0:
        return None
    p_o = float(np.mean(a == b))
    p_e = sum(float(np.mean(a == k)) * float(np.mean(b == k)) for k in set(a) | set(b))
    return None if p_e > 1 - 1e-12 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(counts) -> float | None:
    """Fleiss' kappa from an items x categories matrix n_ij (n raters per item, N items):

        P_i   = (sum_j n_ij^2 - n) / (n (n - 1))      agreement on item i
        p_j   = sum_i n_ij / (N n)                    share of category j
        kappa = (mean_i P_i - sum_j p_j^2) / (1 - sum_j p_j^2)

    None when undefined: no items, fewer than 2 raters, or every vote in one category.
    """
    m = np.asarray(counts, dtype=float)
    if m.ndim != 2 or m.shape[0] == 0:
        return None
    n = m.sum(axis=1)
    if not np.allclose(n, n[0]):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every item")
    n = float(n[0])
    if n < 2:
        return None
    p_bar = float(((m * m).sum(axis=1) - n).mean() / (n * (n - 1)))
    p_e = float(((m.sum(axis=0) / m.sum()) ** 2).sum())
    return None if p_e > 1 - 1e-12 else (p_bar - p_e) / (1 - p_e)


def proportion(count: int, n: int) -> dict:
    """count/n with its 95 % Wilson interval; rate and interval are None when n is 0."""
    low_high = list(wilson_interval(count, n)) if n else None
    return {"count": int(count), "n": int(n), "rate": count / n if n else None, "ci95": low_high}


def summarise(ratings: pd.DataFrame, model_a: str, model_b: str) -> dict:
    """Win/tie rates with Wilson intervals, per-rater tallies, Cohen's and Fleiss' kappa.

    Intervals treat votes as independent; several raters' votes on one item are correlated,
    so the intervals are somewhat narrower than the truth (the report says so).
    """
    _check_ratings(ratings, model_a, model_b)
    won = ratings["winner"]
    a, b, t = (int((won == m).sum()) for m in (model_a, model_b, TIE))
    n = len(ratings)
    decisive = ratings[won != TIE]
    left = (
        proportion(int((decisive["vote"] == "L").sum()), len(decisive))
        if "vote" in ratings
        else None
    )
    raters = sorted(ratings["rater"].unique().tolist())
    return {
        "model_a": model_a,
        "model_b": model_b,
        "votes": n,
        "raters": raters,
        "items": int(ratings["item_id"].nunique()),
        "a_win_rate": proportion(a, n),
        "b_win_rate": proportion(b, n),
        "tie_rate": proportion(t, n),
        "a_share_of_decisive": proportion(a, a + b),
        "left_share_of_decisive": left,  # position bias check: 0.5 if sides do not matter
        "per_rater": {r: _tally(ratings[ratings["rater"] == r], model_a, model_b) for r in raters},
        "agreement": _agreement(ratings, [model_a, model_b, TIE]),
    }


def _check_ratings(ratings: pd.DataFrame, model_a: str, model_b: str) -> None:
    absent = {"rater", "item_id", "winner"} - set(ratings.columns)
    if absent:
        raise ValueError(f"ratings lack column(s) {sorted(absent)}")
    odd = sorted(set(ratings["winner"]) - {model_a, model_b, TIE})
    if odd:
        raise ValueError(f"winners {odd} are neither {model_a!r}, {model_b!r} nor {TIE!r}")
    if ratings.duplicated(["rater", "item_id"]).any():
        raise ValueError("a rater voted twice on the same item")


def _tally(votes: pd.DataFrame, model_a: str, model_b: str) -> dict:
    n = len(votes)
    a, b, t = ((votes["winner"] == m).sum() for m in (model_a, model_b, TIE))
    return {
        "votes": n,
        "a_wins": int(a),
        "b_wins": int(b),
        "ties": int(t),
        "a_win_rate": a / n if n else None,
        "b_win_rate": b / n if n else None,
        "tie_rate": t / n if n else None,
    }


def _agreement(ratings: pd.DataFrame, categories: list[str]) -> dict:
    """Kappa over winners by model, so that 'A on the left' and 'A on the right' agree."""
    table = ratings.pivot(index="item_id", columns="rater", values="winner")
    cohen = []
    for r1, r2 in itertools.combinations(sorted(table.columns), 2):
        both = table[[r1, r2]].dropna()
        kappa = cohen_kappa(both[r1], both[r2])
        cohen.append(
            {
                "raters": [r1, r2],
                "items": len(both),
                "kappa": kappa,
                "note": None if kappa is not None else _why_undefined(both),
            }
        )
    complete = table.dropna()
    counts = np.stack([(complete == c).sum(axis=1).to_numpy() for c in categories], axis=1)
    kappa = fleiss_kappa(counts) if table.shape[1] >= 2 else None
    note = (
        "needs at least 2 raters"
        if table.shape[1] < 2
        else None
        if kappa is not None
        else _why_undefined(complete)
    )
    return {
        "cohen": cohen,
        "fleiss": {"kappa": kappa, "items": len(complete), "raters": table.shape[1], "note": note},
    }


def _why_undefined(votes: pd.DataFrame) -> str:
    if votes.empty:
        return "undefined: no item rated by all of these raters"
    only = pd.unique(votes.to_numpy().ravel())
    return f"undefined: every vote is {only[0]!r}, so chance agreement is already 1"


def score_sheets(
    sheets: list[Path | str],
    key: Path | str,
    model_a: str,
    model_b: str,
    allow_missing: bool = False,
) -> dict:
    """The filled sheets read through the key and summarised (see ``summarise``)."""
    ratings = read_ratings([Path(s) for s in sheets], key, allow_missing=allow_missing)
    return summarise(ratings, model_a, model_b)
