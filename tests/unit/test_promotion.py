"""pipelines.shared.promotion: the one champion gate — direction, margin, precedence,
comparability, missing values, and the three gates it replaces deciding as they did."""

from __future__ import annotations

import math

import pytest

from pipelines.shared.promotion import Criterion, PromotionRule, decide, one_metric

LOWER_LOSS = one_metric("eval_loss", "lower")
HIGHER_ROUGE = one_metric("rouge_l", "higher")


def test_no_champion_promotes():
    decision = decide({"eval_loss": 1.0}, None, LOWER_LOSS)
    assert decision.promote and "no champion" in decision.reason


def test_a_challenger_that_wins_is_promoted_in_either_direction():
    assert decide({"eval_loss": 1.0}, {"eval_loss": 1.5}, LOWER_LOSS).promote
    assert decide({"rouge_l": 0.6}, {"rouge_l": 0.5}, HIGHER_ROUGE).promote


def test_a_challenger_that_loses_is_not_promoted():
    decision = decide({"eval_loss": 2.0}, {"eval_loss": 1.5}, LOWER_LOSS)
    assert not decision.promote and "worse eval_loss" in decision.reason
    assert not decide({"rouge_l": 0.4}, {"rouge_l": 0.5}, HIGHER_ROUGE).promote


def test_a_tie_is_not_a_win():
    assert not decide({"eval_loss": 1.5}, {"eval_loss": 1.5}, LOWER_LOSS).promote


def test_a_gain_within_the_noise_margin_is_not_promoted():
    noisy = one_metric("val_bpb", "lower", margin=0.01)
    assert not decide({"val_bpb": 1.995}, {"val_bpb": 2.0}, noisy).promote
    assert not decide(
        {"val_bpb": 1.5}, {"val_bpb": 2.0}, one_metric("val_bpb", "lower", 0.5)
    ).promote
    assert decide({"val_bpb": 1.9}, {"val_bpb": 2.0}, noisy).promote


def test_a_later_metric_only_breaks_a_tie_on_the_earlier_ones():
    rule = PromotionRule(
        (Criterion("format_validity", "higher", margin=0.05), Criterion("rouge_l", "higher"))
    )
    tied_first = decide(
        {"format_validity": 0.92, "rouge_l": 0.6}, {"format_validity": 0.9, "rouge_l": 0.5}, rule
    )
    assert tied_first.promote and "rouge_l" in tied_first.reason
    worse_first = decide(
        {"format_validity": 0.7, "rouge_l": 0.9}, {"format_validity": 0.9, "rouge_l": 0.5}, rule
    )
    assert not worse_first.promote and "format_validity" in worse_first.reason
    assert not decide(
        {"format_validity": 0.9, "rouge_l": 0.5}, {"format_validity": 0.9, "rouge_l": 0.5}, rule
    ).promote


def test_a_champion_scored_on_other_data_is_replaced():
    rule = one_metric("eval_loss", "lower", same=("pairs",))
    assert decide(
        {"eval_loss": 9.0, "pairs": "new"}, {"eval_loss": 1.0, "pairs": "old"}, rule
    ).promote
    assert not decide(
        {"eval_loss": 9.0, "pairs": "old"}, {"eval_loss": 1.0, "pairs": "old"}, rule
    ).promote


def test_missing_and_nan_values():
    assert not decide({"eval_loss": None}, {"eval_loss": 1.0}, LOWER_LOSS).promote
    assert not decide({}, {}, LOWER_LOSS).promote  # neither has it: the challenger cannot win
    assert decide({"eval_loss": 1.0}, {"eval_loss": None}, LOWER_LOSS).promote
    assert not decide({"eval_loss": math.nan}, {"eval_loss": 1.0}, LOWER_LOSS).promote
    assert not decide({"eval_loss": 1.0}, {"eval_loss": math.nan}, LOWER_LOSS).promote


def test_a_rule_needs_metrics_with_a_direction_and_a_non_negative_margin():
    with pytest.raises(ValueError):
        PromotionRule(())
    with pytest.raises(ValueError):
        one_metric("loss", "smaller")
    with pytest.raises(ValueError):
        one_metric("loss", "lower", margin=-1)


@pytest.mark.parametrize("challenger", [None, math.nan, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("champion", ["none", None, math.nan, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("comparable", [True, False])
def test_the_finetune_task_gate_decides_as_before(challenger, champion, comparable):
    """finetune_task's former inline gate, on its own inputs."""
    has_champion = champion != "none"
    previous = champion if has_champion and comparable else None
    before = (
        not has_champion
        or not comparable
        or (challenger is not None and (previous is None or challenger < previous))
    )
    mine = {"eval_loss": challenger, "pairs": "k1"}
    theirs = (
        {"eval_loss": champion, "pairs": "k1" if comparable else "k0"} if has_champion else None
    )
    rule = one_metric("eval_loss", "lower", same=("pairs",))
    assert decide(mine, theirs, rule).promote == before


@pytest.mark.parametrize("score", [0.2, 0.5, 0.8, math.nan])
@pytest.mark.parametrize("champion", [None, 0.2, 0.5, 0.8])
def test_the_bpb_and_sweep_gates_decide_as_before(score, champion):
    """register_base_model (lower bits per byte) and register_finetuned (higher metric)."""
    theirs = None if champion is None else {"m": champion}
    assert decide({"m": score}, theirs, one_metric("m", "lower")).promote == (
        champion is None or score < champion
    )
    assert decide({"m": score}, theirs, one_metric("m", "higher")).promote == (
        champion is None or score > champion
    )


def test_the_alias_moves_only_for_a_challenger_that_wins_by_more_than_the_margin(
    tiny_model_dir,
):
    """Through the real registry: every challenger becomes a version; ``champion`` moves
    only when the rule says so (loses: stays; wins: moves; within the margin: stays)."""
    from infra import registry, tracking
    from pipelines.shared.promotion import register_challenger

    name, rule = "genai-test-gate", one_metric("rouge_l", "higher", margin=0.01)

    def challenge(score: float) -> tuple[str, bool]:
        champion = registry.alias_version(name)
        theirs = None if champion is None else {"rouge_l": float(champion.tags["rouge_l"])}
        with tracking.start_run("test-gate", f"score {score}") as run:
            version, decision = register_challenger(
                name, tiny_model_dir, run.run_id, {"rouge_l": score}, theirs, rule,
                tags={"rouge_l": score},
            )  # fmt: skip
        return version, decision.promote

    assert challenge(0.40) == ("1", True)  # no champion yet
    assert challenge(0.30) == ("2", False)  # loses
    assert str(registry.alias_version(name).version) == "1"
    assert challenge(0.45) == ("3", True)  # wins by 0.05 > 0.01
    assert str(registry.alias_version(name).version) == "3"
    assert challenge(0.455) == ("4", False)  # 0.005 better: noise
    assert str(registry.alias_version(name).version) == "3"
