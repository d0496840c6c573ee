"""The grounding check every answer and summary goes through: figures compared as values,
units where both sides name one, cited ids against the citable ones."""

from __future__ import annotations

import pytest

from pipelines.shared.grounding import bracketed_ids, check_grounding, figures

FEATURES = (
    "user u1: budget 150 EUR per night; party of 2\n"
    "hotel:h3 Alpha, Old Town, Lisbon: 1,125.00 EUR per night, 3,375.00 EUR for 3 nights"
)


@pytest.mark.parametrize(
    "text, value, unit",
    [
        ("€1,125.00", "1125", "EUR"),
        ("1125 EUR", "1125", "EUR"),
        ("1125EUR", "1125", "EUR"),
        ("1\u00a0125,00 €", "1125", "EUR"),  # a no-break space groups thousands
        ("1.125.000,5", "1125000.5", None),
        ("12,5 %", "12.5", "%"),
        ("$0.50", "0.5", "USD"),
        ("USD 40", "40", "USD"),
        ("Prefect 3.9.1", "3.9.1", None),  # a version: compared as written
    ],
)
def test_a_figure_is_read_as_its_value_and_unit(text, value, unit):
    [figure] = figures(text)
    assert (figure.value, figure.unit) == (value, unit)


def test_ids_links_list_markers_and_words_hold_no_figures():
    text = "1. See [hotel:h12] and [docs](https://x.org/v2/3) for gpt-4, the 3rd, h12, log_2.\n"
    assert figures(text) == []


def test_an_answer_of_given_figures_is_grounded_whatever_their_format():
    answer = "Alpha [hotel:h3]: €1125 a night, 3375 EUR for 3 nights, within 150 EUR."
    checked = check_grounding(answer, [FEATURES], citable=["hotel:h3"])
    assert checked.grounded and checked.ungrounded_spans == []
    assert checked.figures_checked == 4 and checked.ids_checked == 1


def test_invented_figures_other_currencies_sums_and_ids_are_named():
    answer = (
        "Alpha [hotel:h3, hotel:h9] costs 10 EUR per night, 1125 USD, "
        "so 4 nights cost 4,500.00 EUR [py:mlflow.nowhere]."
    )
    checked = check_grounding(answer, [FEATURES], citable=["hotel:h3"])
    assert not checked.grounded
    assert checked.ungrounded_spans == [
        "10 EUR",
        "1125 USD",  # the value is given, but in euros
        "4",
        "4,500.00 EUR",  # nights x price: not computed by the pricing function, not given
        "[hotel:h9]",
        "[py:mlflow.nowhere]",
    ]


def test_without_citable_ids_only_figures_are_checked():
    assert check_grounding("It says [anything].", ["nothing"]).grounded
    assert bracketed_ids("[a, b] [c] [d](http://x)") == ["a", "b", "c"]
