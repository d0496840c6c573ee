"""Reviews in: the seeded generator and its truth, files by field mapping (the real Amazon files
included), bad input through the real gate, the teacher, the coarse-language rule, the scores."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.lake import read_table
from infra.llm_fields import parse_fields
from pipelines.prompts import summary_prompt
from pipelines.prompts.catalogue import ASPECTS, rating_band
from pipelines.prompts.generator import generate_reviews
from pipelines.prompts.ingest import (
    parse_rating,
    parse_timestamp,
    read_review_records,
    write_reviews,
)
from pipelines.prompts.lexicon import aspect_of_phrase, coarse_language_flag
from pipelines.prompts.quality import keyword_baseline, negative_point_scores
from pipelines.prompts.schema import (
    MAX_REVIEW_CHARS,
    REVIEW_ASPECTS,
    REVIEWS,
    ReviewsConfig,
    ReviewsInputError,
)
from pipelines.prompts.teacher import review_training_pairs, teacher_summary
from pipelines.shared.instructions import load_instruction_dataset, write_instruction_jsonl
from pipelines.shared.templates import END_MARKER, format_example

SHARED_DATA = Path(
    os.environ.get("GENAI_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
AMAZON_2018 = SHARED_DATA / "amazon_reviews_2018_5core_small"
BOOKS_CSV = SHARED_DATA / "amazon_books_reviews_kaggle_sample" / "Books_rating_first999.csv"
SMALL = ReviewsConfig(n_products=8, reviews_per_product=20)


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, default=str)


# ------------------------------------------------------------------------------ generator


def test_the_same_seed_gives_byte_identical_data_and_another_seed_does_not():
    assert canonical(generate_reviews(SMALL)) == canonical(generate_reviews(SMALL))
    assert canonical(review_training_pairs(SMALL)) == canonical(review_training_pairs(SMALL))
    other = SMALL.model_copy(update={"seed": 1})
    assert canonical(generate_reviews(other)) != canonical(generate_reviews(SMALL))


def test_generated_sentiment_fits_the_rating_and_the_text_fits_the_aspect_records():
    reviews, aspects = generate_reviews(ReviewsConfig(seed=3))
    by_review = defaultdict(dict)
    for record in aspects:
        by_review[record["review_id"]][record["aspect"]] = record["polarity"]
    polarity = defaultdict(Counter)
    for review in reviews:
        polarity[rating_band(review["rating"])].update(by_review[review["review_id"]].values())
    # criticisms dominate 1-2 stars, praise 4-5 stars, 3 stars is mixed
    assert polarity["low"][-1] > 4 * polarity["low"][1]
    assert polarity["high"][1] > 4 * polarity["high"][-1]
    assert 0.4 < polarity["mid"][-1] / sum(polarity["mid"].values()) < 0.6
    # every aspect a review is recorded with is written in its text: a reader can find it
    for review in reviews:
        for name in by_review[review["review_id"]]:
            assert any(k in review["text"].lower() for k in (name, *ASPECTS[name].keywords)), (
                name,
                review["text"],
            )
    # the coarse-language truth is exactly what the lexicon rule finds
    assert [r["abusive"] for r in reviews] == [coarse_language_flag(r["text"]) for r in reviews]
    assert 0.01 < sum(r["abusive"] for r in reviews) / len(reviews) < 0.1
    # duplicates of both kinds, and months of timestamps for weekly/monthly windows
    ids = Counter(r["review_id"] for r in reviews)
    assert any(n > 1 for n in ids.values())  # exact re-deliveries share an id
    assert any(r["duplicate_of"] for r in reviews)  # near duplicates have their own
    months = {r["reviewed_at"].strftime("%Y-%m") for r in reviews}
    assert len(months) >= 5


# ------------------------------------------------------------------------- reading files


@pytest.mark.skipif(not AMAZON_2018.is_dir(), reason="shared Amazon 2018 data not present")
def test_the_amazon_2018_files_load_by_mapping_alone():
    stats = {}
    paths = [str(AMAZON_2018 / "Appliances_5.json.gz"), str(AMAZON_2018 / "Gift_Cards_5.json.gz")]
    records = list(read_review_records(ReviewsConfig(paths=paths, mapping="amazon_2018"), stats))
    assert stats["records_read"] == 2277 + 2972
    # the 5-core files repeat a review once per product variant: identical copies are dropped
    assert stats["duplicates_dropped"] > 2000
    assert len(records) == stats["records_read"] - stats["duplicates_dropped"]
    errors = Counter(r["ingest_error"] for r in records if r["ingest_error"])
    assert errors == {"missing field 'reviewText' (text)": 6}  # six gift card reviews
    good = [r for r in records if not r["ingest_error"]]
    assert len({r["review_id"] for r in good}) == len(good)  # the derived id is unique
    assert {r["rating"] for r in good} <= {1, 2, 3, 4, 5}
    assert all(datetime(2000, 1, 1, tzinfo=UTC) < r["reviewed_at"] for r in good)
    first = good[0]
    assert first["product_id"].startswith("B0") and first["text"] and first["reviewer_id"]
    # stable: reading again gives the same ids
    again = read_review_records(ReviewsConfig(paths=paths[:1], mapping="amazon_2018"))
    assert next(iter(again))["review_id"] == first["review_id"]


@pytest.mark.skipif(not BOOKS_CSV.is_file(), reason="shared Amazon books CSV not present")
def test_the_amazon_books_csv_loads_by_mapping_alone():
    stats = {}
    records = list(
        read_review_records(
            ReviewsConfig(paths=[str(BOOKS_CSV)], mapping="amazon_books_kaggle"), stats
        )
    )
    assert stats["records_read"] == 999 and stats["ingest_errors"] == 0
    assert Counter(r["rating"] for r in records)[5] > 500
    first = records[0]
    assert first["product_name"] == "Its Only Art If Its Well Hung!"
    assert first["reviewed_at"] == datetime(1999, 10, 23, tzinfo=UTC)
    assert len({r["review_id"] for r in records}) == len(records)
    assert {type(r["price"]) for r in records} <= {float, type(None)}


def test_field_conversions_name_what_is_wrong():
    assert parse_rating("4.0") == (4, None) and parse_rating(5.0) == (5, None)
    assert parse_rating(7) == (7, None)  # out of range is the gate's to quarantine
    assert "not a number" in parse_rating("five")[1]
    assert "whole number" in parse_rating(4.5)[1]
    utc = UTC
    assert parse_timestamp(1441324800)[0] == datetime(2015, 9, 4, tzinfo=utc)
    assert parse_timestamp(1441324800000)[0] == datetime(2015, 9, 4, tzinfo=utc)  # ms
    assert parse_timestamp("09 4, 2015")[0] == datetime(2015, 9, 4, tzinfo=utc)
    assert parse_timestamp("2015-09-04T12:00:00Z")[0] == datetime(2015, 9, 4, 12, tzinfo=utc)
    assert parse_timestamp("2015-09-04")[0] == datetime(2015, 9, 4, tzinfo=utc)
    assert "is not 'MM DD, YYYY'" in parse_timestamp("2015-09-04", "month_day_year")[1]
    assert parse_timestamp("last tuesday")[0] is None


def test_csv_problems_are_recorded_per_row(tmp_path):
    path = tmp_path / "reviews.csv.gz"
    rows = [
        b"review_id,product_id,rating,title,text,timestamp",
        b"a,p1,5,Great,Works well,2024-01-02",
        b"b,p1,five,Hmm,Says five,2024-01-03",
        b"c,p1,4,Latin,caf\xe9 au lait,2024-01-04",
        b"d,p1,3,Late,When?,yesterday",
        b",p1,2,No id,Who am I,2024-01-05",
    ]
    path.write_bytes(gzip.compress(b"\n".join(rows) + b"\n"))
    records = {r["title"]: r for r in read_review_records(ReviewsConfig(paths=[str(tmp_path)]))}
    assert records["Great"]["ingest_error"] is None and records["Great"]["rating"] == 5
    assert "rating 'five' is not a number" in records["Hmm"]["ingest_error"]
    assert "undecodable UTF-8" in records["Latin"]["ingest_error"]
    assert records["Latin"]["text"] == "caf\ufffd au lait"
    assert "timestamp 'yesterday'" in records["Late"]["ingest_error"]
    assert "missing field 'review_id'" in records["No id"]["ingest_error"]
    assert records["Latin"]["origin"].endswith("reviews.csv.gz:4")


def test_symlinks_below_the_named_path_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (tmp_path / "in" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    with pytest.raises(ReviewsInputError, match="symlink"):
        read_review_records(ReviewsConfig(paths=[str(tmp_path / "in")]))
    with pytest.raises(ReviewsInputError, match="does not exist"):
        read_review_records(ReviewsConfig(paths=[str(tmp_path / "nowhere")]))


# ------------------------------------------------------------------ through the real gate


def review_line(i: int, **changes) -> str:
    review = {
        "review_id": f"r{i}",
        "product_id": f"p{i % 3}",
        "rating": 1 + i % 5,
        "title": "Fine",
        "text": f"Review number {i} says it works.",
        "timestamp": 1_700_000_000 + 3600 * i,
    }
    return json.dumps({**review, **changes})


@pytest.mark.spark
def test_bad_input_is_counted_and_quarantined_with_reasons_and_good_rows_land(
    spark, tmp_path, lake_dir
):
    folder = tmp_path / "reviews"
    folder.mkdir()
    lines = [review_line(i).encode() for i in range(150)]
    lines += [
        b'{"review_id": "broken", "rating": ',  # malformed JSON
        review_line(900, review_id="seven", rating=7).encode(),  # rating outside 1-5
        review_line(901, review_id="empty", text="  ").encode(),  # blank text
        review_line(902, review_id="latin1", text="cafe")
        .encode()  # undecodable bytes
        .replace(b"cafe", b"caf\xe9"),
        review_line(7, text="A different review under an old id").encode(),  # id clash
        review_line(8).encode(),  # exact re-delivery
        review_line(903, review_id="huge", text="word " * (MAX_REVIEW_CHARS // 5 + 1)).encode(),
    ]
    (folder / "reviews.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    manifest = write_reviews(
        spark, ReviewsConfig(paths=[str(folder)]), txn_id="bad-reviews", root=lake_dir
    )
    assert manifest["stats"]["duplicates_dropped"] == 1  # the exact copy of r8, counted
    assert manifest["stats"]["ingest_errors"] == 2  # malformed line, undecodable bytes
    assert manifest["input_rows"] == 156
    assert manifest["quarantined"] == 7  # 5 bad rows and both r7s: neither can be trusted
    assert manifest["written"] == manifest["rows"] == 149
    assert manifest["aspects"] is None

    quarantine = read_table(spark, manifest["quarantine_table"]).collect()
    by_line = {q.origin.rsplit(":", 1)[1]: q for q in quarantine}
    assert "invalid JSON" in by_line["151"].ingest_error
    assert "expect_column_values_to_be_null(column=ingest_error)" in by_line["151"]._reason
    assert "expect_column_values_to_be_between(column=rating" in by_line["152"]._reason
    assert "expect_column_values_to_match_regex(column=text" in by_line["153"]._reason
    assert "undecodable UTF-8" in by_line["154"].ingest_error and by_line["154"].review_id
    assert "expect_column_value_lengths_to_be_between(column=text" in by_line["157"]._reason
    assert {q.review_id for q in quarantine if "to_be_unique(column=review_id)" in q._reason} == {
        "r7"
    }
    landed = read_table(spark, manifest).collect()
    assert {r.review_id for r in landed} == {f"r{i}" for i in range(150)} - {"r7"}
    assert all(r.reviewed_at is not None and 1 <= r.rating <= 5 for r in landed)


@pytest.mark.spark
def test_generated_reviews_and_their_aspects_are_written(spark, lake_dir):
    config = ReviewsConfig(n_products=4, reviews_per_product=12, duplicate_rate=0.2)
    reviews, aspects = generate_reviews(config)
    manifest = write_reviews(spark, config, txn_id="generated-reviews", root=lake_dir)
    unique = len({r["review_id"] for r in reviews})
    assert manifest["stats"]["duplicates_dropped"] == len(reviews) - unique > 0
    assert manifest["rows"] == unique and manifest["quarantined"] == 0
    assert manifest["table"] == str(REVIEWS.path(lake_dir))
    assert manifest["aspects"]["table"] == str(REVIEW_ASPECTS.path(lake_dir))
    assert manifest["aspects"]["rows"] == len(aspects)


# -------------------------------------------------------------------- teacher and prompts


def review(review_id: str, rating: int, text: str, **extra) -> dict:
    return {
        "review_id": review_id,
        "product_id": "p1",
        "product_name": "Volta Go kettle",
        "category": "kitchen",
        "price": 39.99,
        "rating": rating,
        "title": "Meh",
        "text": text,
        "reviewed_at": datetime(2024, 1, 1, tzinfo=UTC),
        **extra,
    }


GROUP = [
    review("a", 1, "So loud. Impossible to clean. Not worth $39.99. Heats slowly."),
    review("b", 2, "Loud. Hard to clean. On the plus side, big enough."),
    review("c", 2, "Pretty loud, what a piece of crap."),
]
GROUP_ASPECTS = [
    {"review_id": rid, "product_id": "p1", "aspect": aspect, "polarity": polarity}
    for rid, aspect, polarity in [
        ("a", "noise", -1),
        ("a", "cleaning", -1),
        ("a", "value for money", -1),
        ("a", "performance", -1),
        ("b", "noise", -1),
        ("b", "cleaning", -1),
        ("b", "capacity", 1),
        ("c", "noise", -1),
        ("z", "delivery", -1),
    ]
]


def test_the_teacher_names_the_most_criticised_aspects_and_flags_reviews():
    summary = teacher_summary(GROUP, GROUP_ASPECTS)
    # noise (3) then cleaning (2) then the first of the 1-count aspects in catalogue order;
    # "z" is another group's review and does not count
    # each point quotes the first review sentence voicing it: what a task model learns is
    # to copy its input
    assert summary["negative_points"] == ["So loud", "Impossible to clean", "Not worth $39.99"]
    assert summary["liked_features"] == ["On the plus side, big enough"]
    assert summary["value_for_money"] == "Not worth $39.99"  # a price only as a review wrote it
    # a: 1 star with 4 criticisms (especially negative); c: coarse language
    assert summary["flagged_review_ids"] == ["a", "c"]
    assert negative_point_scores(summary["negative_points"], GROUP_ASPECTS[:-1]) == (1.0, 1.0)

    text = summary_prompt.answer_text(summary, GROUP)  # the batch stage's layout, labels for ids
    assert text.splitlines()[0].startswith("Top negative points: So loud; Impossible to clean")
    values = parse_fields(summary_prompt.SUMMARY_FIELDS, text)
    assert values["flagged"] == "R1, R3"
    assert summary_prompt.parse_summary(values, GROUP) == summary


def test_the_teacher_lists_tied_points_in_reading_order():
    # one criticism each: reading order (performance, then value for money), not catalogue
    # order (value for money first); the count still outranks reading order
    group = [
        review("a", 2, "Heats slowly. Not worth $39.99."),
        review("b", 2, "Impossible to clean."),
    ]
    records = [
        {"review_id": rid, "product_id": "p1", "aspect": aspect, "polarity": -1}
        for rid, aspect in [("a", "performance"), ("a", "value for money"), ("b", "cleaning")]
    ]
    assert teacher_summary(group, records)["negative_points"] == [
        "Heats slowly",
        "Not worth $39.99",
        "Impossible to clean",
    ]
    records.append({"review_id": "b", "product_id": "p1", "aspect": "performance", "polarity": -1})
    group[1]["text"] += " Weak motor."
    assert teacher_summary(group, records)["negative_points"] == [
        "Heats slowly",  # criticised twice now: first, quoted where first voiced
        "Not worth $39.99",
        "Impossible to clean",
    ]


@pytest.mark.parametrize("name", list(ASPECTS))
def test_each_phrase_the_teacher_writes_scores_as_its_own_aspect(name):
    # a phrase that names another aspect's keyword (say "wear" of durability) would make the
    # teacher's own answer score as wrong
    assert aspect_of_phrase(ASPECTS[name].complaint) == name
    assert aspect_of_phrase(ASPECTS[name].liked) == name


def test_training_pairs_use_the_batch_stages_prompt_and_answer_layout(tmp_path):
    pairs = review_training_pairs(SMALL)
    assert len(pairs) > 20
    for instruction, response in pairs:
        assert instruction.startswith(summary_prompt.INSTRUCTION_TEMPLATE.split("{{")[0])
        labels = instruction.count("<<<R")
        assert 1 <= labels <= SMALL.max_reviews_per_prompt
        values = parse_fields(summary_prompt.SUMMARY_FIELDS, response)
        assert set(values) == {f.name for f in summary_prompt.SUMMARY_FIELDS}
        assert format_example(instruction, response).endswith(END_MARKER)
    path = write_instruction_jsonl(pairs, tmp_path / "reviews.jsonl")
    loaded = load_instruction_dataset(path)
    assert [(e["instruction"], e["response"]) for e in loaded] == pairs


def test_groups_follow_product_band_and_window():
    reviews, _ = generate_reviews(SMALL)
    groups = summary_prompt.groups_in_memory(reviews, "month")
    assert sum(len(g.reviews) for g in groups) == len(reviews)
    for group in groups:
        assert {(r["product_id"], rating_band(r["rating"])) for r in group.reviews} == {
            (group.product_id, group.band)
        }
        assert {r["reviewed_at"].strftime("%Y-%m-01") for r in group.reviews} == {
            group.window_start
        }


# ------------------------------------------------------------------ coarse language, scores


@pytest.mark.parametrize(
    "text",
    [
        "This is f*ck useless",
        "f**k this",
        "F***ING junk",
        "total sh1t",
        "Shiiiit!",
        "what an a$$hole",
        "BULLSH*T",
        "the sellers are idiots",
        "crappy",
        "pissed off",
        "b!tch",
        "@ss",
    ],
)
def test_the_coarse_flag_catches_coarse_and_obfuscated_words(text):
    assert coarse_language_flag(text)


@pytest.mark.parametrize(
    "text",
    [
        "Shipped from Scunthorpe",
        "a first class kettle",
        "the assessment was fair",
        "deep bass",
        "I read Dickens",
        "shiitake mushrooms",
        "a cocktail shaker",
        "great passion",
        "scrap metal",
        "fire retardant spray",
        "Essex",
        "",
        None,
    ],
)
def test_the_coarse_flag_leaves_innocent_words_alone(text):
    assert not coarse_language_flag(text)


def test_negative_point_scores_on_a_hand_example():
    truth = [
        {"review_id": "a", "aspect": a, "polarity": -1}
        for a in ("battery life", "connectivity", "value for money", "noise")
    ]
    truth.append({"review_id": "a", "aspect": "sound quality", "polarity": 1})
    predicted = ["Short battery life", "Bluetooth keeps disconnecting", "Ugly colour"]
    precision, recall = negative_point_scores(predicted, truth)
    assert precision == pytest.approx(2 / 3)  # colour is not criticised
    assert recall == pytest.approx(2 / 3)  # two of (at most) three criticised aspects
    # repeating an aspect dilutes precision; praised aspects are not negative points
    assert negative_point_scores(
        ["battery dies", "the battery is weak", "great sound"], truth
    ) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert negative_point_scores(["none"], truth) == (0.0, 0.0)
    assert negative_point_scores([], [truth[-1]]) == (1.0, 1.0)


def test_the_keyword_baseline_counts_aspect_words_in_low_rated_reviews():
    points = keyword_baseline([*GROUP, review("e", 5, "Lovely scent and big enough.")])
    assert points[:2] == ["noise", "cleaning"]
    assert "scent" not in points  # only in a 5-star review
    assert negative_point_scores(points, GROUP_ASPECTS)[0] > 0.5
