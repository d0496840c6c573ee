"""Double-blind pairwise evaluation: blind sheets, strict reading of votes, kappa and Wilson."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pandas as pd
import pytest

from pipelines.evaluation.pairwise import (
    RatingSheetError,
    cohen_kappa,
    fleiss_kappa,
    make_rating_sheet,
    read_ratings,
    summarise,
    wilson_interval,
)
from pipelines.evaluation.pairwise_report import report_markdown, write_report

MODEL_A, MODEL_B = "ft-small-v2", "base-gpt-7b"
N_ITEMS, N_RATERS = 62, 4  # the seed's setup: 4 raters, 62 unseen tables


def table_items(n: int = N_ITEMS) -> list[dict]:
    """Multi-line inputs, so that CSV rows and file lines differ (row numbers must not)."""
    return [
        {
            "item_id": f"table_{i:02d}",
            "input": f'CREATE TABLE t{i} (\n  id INT,\n  note STRING -- "free", text\n)',
            "output_a": f"Table t{i}: one row per order.\nColumns: id, note.",
            "output_b": f"t{i} holds data.",
        }
        for i in range(n)
    ]


@pytest.fixture
def sheet(tmp_path) -> dict:
    return make_rating_sheet(table_items(), MODEL_A, MODEL_B, tmp_path / "sheet", seed=7)


def load_key(sheet: dict) -> dict:
    return json.loads(Path(sheet["key"]).read_text())


def sheet_rows(sheet: dict) -> list[dict]:
    with open(sheet["sheet_csv"], newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def fill(sheet: dict, path: Path, winners: dict[str, str], spellings=("L", "R", "T")) -> Path:
    """A rater's filled copy of the sheet, exported the way a spreadsheet does (minimal quoting,
    no BOM); ``winners`` maps item ids to MODEL_A, MODEL_B or "tie"."""
    key, rows = load_key(sheet)["items"], sheet_rows(sheet)
    left, right, tie = spellings
    for row in rows:
        won = winners[row["item_id"]]
        row["vote"] = (
            tie if won == "tie" else left if key[row["item_id"]]["left"] == won else right
        )
    return write_rows(path, rows)


def write_rows(path: Path, rows: list[dict], fields=None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def simulate_raters(
    key: dict, n_raters: int, p_prefers_a: float, agreement: float, seed: int
) -> dict[str, dict[str, str]]:
    """Each item has a true preference (A with p_prefers_a); each rater follows it with
    probability ``agreement``, else votes A, B or tie at random."""
    rng = random.Random(seed)
    truth = {i: MODEL_A if rng.random() < p_prefers_a else MODEL_B for i in key["items"]}
    return {
        f"rater{r}": {
            i: t if rng.random() < agreement else rng.choice([MODEL_A, MODEL_B, "tie"])
            for i, t in truth.items()
        }
        for r in range(n_raters)
    }


# ---------------------------------------------------------------------------- the sheet


def test_sheet_hides_model_names_and_key_unblinds(sheet):
    for path in (sheet["sheet_csv"], sheet["sheet_html"]):
        text = Path(path).read_text(encoding="utf-8-sig").lower()
        assert MODEL_A.lower() not in text and MODEL_B.lower() not in text
    key = load_key(sheet)
    assert (key["model_a"], key["model_b"], key["seed"]) == (MODEL_A, MODEL_B, 7)
    assert list(key["items"]) == [f"table_{i:02d}" for i in range(N_ITEMS)]
    assert sheet["identity_hints"] == [] and sheet["items"] == N_ITEMS
    assert [r["vote"] for r in sheet_rows(sheet)] == [""] * N_ITEMS
    assert list(sheet_rows(sheet)[0]) == ["item_id", "input", "left", "right", "vote", "comment"]


def test_sides_are_balanced_deterministic_and_seed_dependent(tmp_path, sheet):
    sides = {i: s["left"] for i, s in load_key(sheet)["items"].items()}
    assert sum(m == MODEL_A for m in sides.values()) == 31 == sheet["a_left"]
    again = make_rating_sheet(table_items(), MODEL_A, MODEL_B, tmp_path / "again", seed=7)
    assert {i: s["left"] for i, s in load_key(again)["items"].items()} == sides
    assert Path(again["sheet_csv"]).read_bytes() == Path(sheet["sheet_csv"]).read_bytes()
    other = make_rating_sheet(table_items(), MODEL_A, MODEL_B, tmp_path / "other", seed=8)
    assert {i: s["left"] for i, s in load_key(other)["items"].items()} != sides
    # the text shown on each side is the text of the model the key says is there
    for row in sheet_rows(sheet):
        expected = "one row per order" if sides[row["item_id"]] == MODEL_A else "holds data"
        assert expected in row["left"]


def test_html_escapes_outputs_and_is_self_contained(tmp_path):
    items = table_items(3)
    items[1]["output_b"] = '<script>alert("x")</script> & <b>bold</b>'
    out = make_rating_sheet(items, MODEL_A, MODEL_B, tmp_path, seed=1)
    page = Path(out["sheet_html"]).read_text(encoding="utf-8")
    assert "<script" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page
    assert "http" not in page and "<link" not in page and " src=" not in page
    assert page.count('<div class="pair">') == 3 and page.count("<pre>") == 9


def test_csv_round_trips_multiline_text_with_quotes_and_commas(tmp_path):
    tricky = 'He said "hi, there",\r\nthen left;\n\n  "quoted"  , trailing,'
    items = [{"item_id": "x", "input": tricky, "output_a": tricky + "A", "output_b": 'B\n,"'}]
    out = make_rating_sheet(items, MODEL_A, MODEL_B, tmp_path, seed=3)
    (row,) = sheet_rows(out)
    key = load_key(out)["items"]["x"]
    shown = {key["left"]: row["left"], key["right"]: row["right"]}
    assert row["input"] == tricky
    assert shown == {MODEL_A: tricky + "A", MODEL_B: 'B\n,"'}


def test_bad_items_and_revealing_titles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="repeated"):
        make_rating_sheet(table_items(2) * 2, MODEL_A, MODEL_B, tmp_path, seed=1)
    with pytest.raises(ValueError, match="unblind"):
        make_rating_sheet(table_items(2), MODEL_A, MODEL_B, tmp_path, 1, title=f"{MODEL_A}?")
    with pytest.raises(ValueError, match="distinct"):
        make_rating_sheet(table_items(2), MODEL_A, MODEL_A, tmp_path, seed=1)


# ---------------------------------------------------------------------------- reading votes


def test_raters_who_always_prefer_a_give_a_win_rate_of_one(tmp_path, sheet):
    always_a = {i: MODEL_A for i in load_key(sheet)["items"]}
    spellings = [
        ("L", "R", "T"),
        (" left ", "RIGHT", "tie"),
        ("l", "r", "t"),
        ("Left", "Right", "Tie"),
    ]
    paths = [fill(sheet, tmp_path / f"rater{r}.csv", always_a, spellings[r]) for r in range(4)]
    ratings = read_ratings(paths, sheet["key"])
    assert len(ratings) == N_RATERS * N_ITEMS
    assert sorted(ratings["rater"].unique()) == ["rater0", "rater1", "rater2", "rater3"]
    assert set(ratings["winner"]) == {MODEL_A} and set(ratings["vote"]) == {"L", "R"}
    summary = summarise(ratings, MODEL_A, MODEL_B)
    assert summary["a_win_rate"]["rate"] == 1.0 and summary["b_win_rate"]["rate"] == 0.0
    assert summary["a_share_of_decisive"]["rate"] == 1.0
    assert summary["left_share_of_decisive"]["rate"] == 0.5  # balanced sides: 31 of 62 left
    assert summary["per_rater"]["rater2"]["a_wins"] == N_ITEMS
    # everyone agrees on a single category: kappa is undefined, reported as None with a note
    assert summary["agreement"]["fleiss"]["kappa"] is None
    assert "undefined" in summary["agreement"]["fleiss"]["note"]
    assert all(c["kappa"] is None for c in summary["agreement"]["cohen"])


def test_simulated_votes_map_back_to_the_right_model(tmp_path, sheet):
    truth = simulate_raters(load_key(sheet), N_RATERS, p_prefers_a=0.7, agreement=0.8, seed=5)
    paths = {rater: fill(sheet, tmp_path / f"{rater}.csv", w) for rater, w in truth.items()}
    ratings = read_ratings(paths, sheet["key"])
    got = {(r.rater, r.item_id): r.winner for r in ratings.itertuples()}
    assert got == {(rater, i): w for rater, ws in truth.items() for i, w in ws.items()}
    summary = summarise(ratings, MODEL_A, MODEL_B)
    all_votes = [w for ws in truth.values() for w in ws.values()]
    assert summary["a_win_rate"]["count"] == all_votes.count(MODEL_A)
    assert summary["tie_rate"]["count"] == all_votes.count("tie")
    assert summary["agreement"]["fleiss"]["items"] == N_ITEMS
    assert len(summary["agreement"]["cohen"]) == 6 and summary["votes"] == 4 * N_ITEMS
    assert 0.3 < summary["agreement"]["fleiss"]["kappa"] < 0.9  # clearly above chance


def problems_of(paths, key, **kw) -> str:
    with pytest.raises(RatingSheetError) as info:
        read_ratings(paths, key, **kw)
    return str(info.value)


def test_each_bad_row_is_reported_with_file_and_row(tmp_path, sheet):
    rows = sheet_rows(sheet)
    for row in rows:
        row["vote"] = "L"
    rows[3]["vote"] = "   "  # row 5: missing vote
    rows[10]["vote"] = "maybe"  # row 12
    bad = rows + [dict(rows[0], item_id="bogus"), dict(rows[20], vote="R")]  # rows 64, 65
    path = write_rows(tmp_path / "carol.csv", bad)
    message = problems_of([path], sheet["key"])
    assert f"{path} row 5: missing vote for item 'table_03'" in message
    assert f"{path} row 12: invalid vote 'maybe'" in message
    assert f"{path} row 64: unknown item id 'bogus'" in message
    assert f"{path} rows 22, 65: item 'table_20' is rated 2 times" in message
    assert "4 problem(s)" in message


def test_every_file_is_checked_before_raising(tmp_path, sheet):
    rows = sheet_rows(sheet)
    no_vote = write_rows(tmp_path / "dave.csv", rows, fields=["item_id", "input", "comment"])
    partial = write_rows(tmp_path / "erin.csv", [dict(r, vote="T") for r in rows[:10]])
    with pytest.raises(RatingSheetError) as info:
        read_ratings({"dave": no_vote, "erin": partial}, sheet["key"])
    assert len(info.value.problems) == 2
    message = str(info.value)
    assert (
        f"{no_vote}: missing required column(s) vote; columns found: 'item_id', 'input', 'comment'"
    ) in message
    assert f"{partial}: 52 of 62 items of the key have no row: table_10, table_11" in message
    ratings = read_ratings({"erin": partial}, sheet["key"], allow_missing=True)
    assert len(ratings) == 10 and set(ratings["winner"]) == {"tie"}


def test_unreadable_sheets_and_keys_are_reported(tmp_path, sheet):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("item_id,vote\ntable_00,L\ncaf\xe9,R\n".encode("latin-1"))
    message = problems_of([empty, latin], sheet["key"])
    assert f"{empty}: empty file" in message and f"{latin}: not UTF-8" in message
    bad_key = tmp_path / "key.json"
    bad_key.write_text("{}")
    assert f"{bad_key}: not a rating key" in problems_of([latin], bad_key)


# ---------------------------------------------------------------------------- statistics


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    # by hand, 0/10: centre = half = (z^2/20) / (1 + z^2/10), so high = 2 * centre
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10)[1] == pytest.approx((z2 / 10) / (1 + z2 / 10), rel=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_cohen_kappa_worked_example():
    # 50 proposals: both yes 20, both no 15, rater 1 yes / rater 2 no 5, the reverse 10
    r1 = ["yes"] * 20 + ["no"] * 15 + ["yes"] * 5 + ["no"] * 10
    r2 = ["yes"] * 20 + ["no"] * 15 + ["no"] * 5 + ["yes"] * 10
    p_o = 35 / 50
    p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)  # rater 1 says yes 25x, rater 2 30x
    assert cohen_kappa(r1, r2) == pytest.approx((p_o - p_e) / (1 - p_e)) == pytest.approx(0.4)
    assert cohen_kappa(r1, r1) == pytest.approx(1.0)
    assert cohen_kappa(["tie"] * 5, ["tie"] * 5) is None
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_worked_example():
    # Fleiss (1971) style example as worked on Wikipedia: 10 subjects, 14 raters, 5 categories
    counts = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    # P_1 = (14^2 - 14) / (14 * 13) = 1.0; P_2 = (4 + 36 + 16 + 4 - 14) / 182 = 46 / 182, ...
    p_items = [(sum(c * c for c in row) - 14) / 182 for row in counts]
    assert p_items[:2] == pytest.approx([1.0, 46 / 182])
    p_cat = [
        sum(col) / 140 for col in zip(*counts, strict=False)
    ]  # 0.143, 0.200, 0.279, 0.150, 0.229
    p_bar, p_e = sum(p_items) / 10, sum(p * p for p in p_cat)
    assert (round(p_bar, 3), round(p_e, 3)) == (0.378, 0.213)
    assert fleiss_kappa(counts) == pytest.approx((p_bar - p_e) / (1 - p_e))
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa([[3, 0, 0]] * 4) is None  # one category only: undefined


def votes_frame(table: dict[str, list[str]]) -> pd.DataFrame:
    """{item: [winner of rater 0, rater 1, ...]} -> the ratings frame summarise takes."""
    return pd.DataFrame(
        [
            {"rater": f"r{j}", "item_id": item, "winner": w}
            for item, ws in table.items()
            for j, w in enumerate(ws)
        ]
    )


def test_summarise_kappa_small_example_by_hand():
    a, b, t = MODEL_A, MODEL_B, "tie"
    ratings = votes_frame({"i1": [a, a, a], "i2": [a, a, b], "i3": [b, b, t]})
    # Fleiss: P = 1, 1/3, 1/3 -> mean 5/9; shares A 5/9, B 3/9, tie 1/9 -> P_e = 35/81
    # kappa = (5/9 - 35/81) / (1 - 35/81) = 10/46
    agreement = summarise(ratings, a, b)["agreement"]
    assert agreement["fleiss"]["kappa"] == pytest.approx(10 / 46)
    assert agreement["fleiss"]["items"] == 3 and agreement["fleiss"]["raters"] == 3
    # Cohen r0 vs r1 labels identical (a, a, b): p_o = 1 -> kappa 1
    # Cohen r0 vs r2: (a,a), (a,b), (b,t): p_o = 1/3; p_e = 2/3*1/3 + 1/3*1/3 + 0 = 1/3 -> 0
    # Cohen r1 vs r2: same labels as r0 vs r2 -> 0
    kappas = {tuple(c["raters"]): c["kappa"] for c in agreement["cohen"]}
    assert kappas == pytest.approx({("r0", "r1"): 1.0, ("r0", "r2"): 0.0, ("r1", "r2"): 0.0})


def test_fleiss_uses_only_items_rated_by_everyone_and_handles_one_rater():
    a, b = MODEL_A, MODEL_B
    ratings = votes_frame({"i1": [a, a], "i2": [a, b], "i3": [b, b]})
    ratings = pd.concat([ratings, pd.DataFrame([{"rater": "r2", "item_id": "i1", "winner": b}])])
    summary = summarise(ratings, a, b)
    assert summary["agreement"]["fleiss"]["items"] == 1 and summary["items"] == 3
    solo = summarise(votes_frame({"i1": [a], "i2": [b]}), a, b)
    assert solo["agreement"]["fleiss"] == {
        "kappa": None,
        "items": 2,
        "raters": 1,
        "note": "needs at least 2 raters",
    }
    assert solo["agreement"]["cohen"] == [] and solo["left_share_of_decisive"] is None
    with pytest.raises(ValueError, match="neither"):
        summarise(votes_frame({"i1": ["someone-else"]}), a, b)


def test_report_markdown_and_json(tmp_path, sheet):
    truth = simulate_raters(load_key(sheet), N_RATERS, p_prefers_a=0.6, agreement=0.7, seed=2)
    paths = {rater: fill(sheet, tmp_path / f"{rater}.csv", w) for rater, w in truth.items()}
    summary = summarise(read_ratings(paths, sheet["key"]), MODEL_A, MODEL_B)
    text = report_markdown(summary)
    rate = summary["a_win_rate"]
    assert f"| {MODEL_A} wins | {rate['count']}/248 | {100 * rate['rate']:.1f} % |" in text
    assert "Fleiss' kappa: 0." in text and text.count("| rater |") == 1
    written = write_report(summary, tmp_path / "report")
    assert json.loads(Path(written["json"]).read_text()) == json.loads(json.dumps(summary))
    assert Path(written["markdown"]).read_text() == text
