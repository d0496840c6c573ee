"""Automatic quality of table documentation on held-out table families.

Each held-out item is (prompt, the teacher's response, the table's columns). A model's
generation is scored against it three ways: format validity (the strict response layout,
every column once, in order), column coverage (share of columns with a non-empty comment)
and ROUGE-L against the teacher's response. The copy-the-column-names baseline scores the
same items, so a model must beat restating names, not just produce the layout. Every one of
these metrics is higher-is-better, which is the champion rule a registered model is held to.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from statistics import fmean

from pipelines.evaluation.text_metrics import rouge_l
from pipelines.shared import tabledoc_format
from pipelines.shared.promotion import PromotionRule, one_metric
from pipelines.shared.templates import END_MARKER

log = logging.getLogger(__name__)

FIXED_PROMPTS = 3  # the first held-out items, whose generations are logged every time


def read_items(path: Path | str, limit: int | None = None) -> list[dict]:
    """Held-out items {prompt, response, columns} from a pairs jsonl; the first ``limit``."""
    items = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            reference = tabledoc_format.response_part(record["response"])
            items.append(
                {
                    "prompt": record["prompt"],
                    "response": reference,
                    "columns": tabledoc_format.response_columns(reference),
                }
            )
        if limit is not None and len(items) >= limit:
            break
    return items


def score(outputs: list[str], items: list[dict]) -> dict:
    """Mean format validity, column coverage and ROUGE-L of ``outputs`` over ``items``."""
    if len(outputs) != len(items) or not items:
        raise ValueError(f"{len(outputs)} outputs for {len(items)} items")
    answers = [tabledoc_format.response_part(o) for o in outputs]
    return {
        "format_validity": fmean(
            tabledoc_format.format_valid(a, i["columns"])
            for a, i in zip(answers, items, strict=False)
        ),
        "column_coverage": fmean(
            tabledoc_format.column_coverage(a, i["columns"])
            for a, i in zip(answers, items, strict=False)
        ),
        "rouge_l": fmean(rouge_l(a, i["response"]) for a, i in zip(answers, items, strict=False)),
        "items": len(items),
    }


def copy_baseline_outputs(items: list[dict]) -> list[str]:
    """The baseline's response per item: each column's name, restated."""
    return [
        tabledoc_format.render_response(
            "Table documentation.", [(c, c.replace("_", " ")) for c in i["columns"]]
        )
        for i in items
    ]


def copy_baseline_scores(test_file: Path | str, limit: int) -> dict:
    """The copy-the-column-names baseline's scores on the first ``limit`` held-out items."""
    items = read_items(test_file, limit)
    return score(copy_baseline_outputs(items), items)


def champion_rule(metric: str) -> PromotionRule:
    """A model replaces the champion only when it scores higher on ``metric``, on the same
    items; no noise margin: both are scored by greedy decoding on the same items."""
    return one_metric(metric, "higher")


def generate(
    model_dir: Path | str,
    items: list[dict],
    max_new_tokens: int,
    tokens_per_batch: int = 8192,
    structured: bool = False,
) -> list[str]:
    """Greedy generations of the model for each item's prompt (``generate_outputs``)."""
    return generate_outputs(model_dir, items, max_new_tokens, tokens_per_batch, structured)[0]


def generate_outputs(
    model_dir: Path | str,
    items: list[dict],
    max_new_tokens: int,
    tokens_per_batch: int = 8192,
    structured: bool = False,
) -> tuple[list[str], int]:
    """(generations, items over the model's context): greedy generations cut at the end
    marker; or, ``structured``, the response template of the item's CREATE TABLE filled field
    by field. A prompt that leaves the model no position to answer in gets an empty answer
    (scored as a failure) instead of a generation past the positions it was trained on."""
    from infra.llm import TransformersLLM
    from infra.llm_fields import fits_context

    llm = TransformersLLM(model_dir, tokens_per_batch=tokens_per_batch)
    fitting = [n for n, i in enumerate(items) if fits_context(llm, i["prompt"])]
    outputs = [""] * len(items)
    prompts = [items[n]["prompt"] for n in fitting]
    generated = _generate(llm, prompts, max_new_tokens, structured)
    for n, output in zip(fitting, generated, strict=True):
        outputs[n] = output
    over = len(items) - len(fitting)
    if over:
        log.info(
            "%d of %d prompts exceed %s's %s positions",
            *(over, len(items), model_dir, llm.context_length),
        )
    return outputs, over


def _generate(llm, prompts: list[str], max_new_tokens: int, structured: bool) -> list[str]:
    from infra.llm import GenerationParams
    from infra.llm_fields import generate_templates, render_fields

    if not prompts:
        return []
    if not structured:
        params = GenerationParams(
            max_new_tokens=max_new_tokens, temperature=0.0, stop=[END_MARKER]
        )
        return llm.generate(prompts, params)
    templates = [
        tabledoc_format.response_template(tabledoc_format.ddl_columns(p)) for p in prompts
    ]
    filled = generate_templates(llm, prompts, templates, GenerationParams(temperature=0.0))
    return [render_fields(t, values) for t, values in zip(templates, filled, strict=False)]


def evaluate_model(
    model_dir: Path | str,
    items: list[dict],
    max_new_tokens: int,
    tokens_per_batch: int = 8192,
    structured: bool = False,
) -> dict:
    """Scores plus the fixed prompts' generations (for the run's artifacts);
    ``tokens_per_batch`` bounds padded tokens per forward pass (raise it on a GPU)."""
    outputs, over = generate_outputs(
        model_dir, items, max_new_tokens, tokens_per_batch, structured
    )
    samples = [
        {"prompt": i["prompt"], "reference": i["response"], "generated": o}
        for i, o in zip(items[:FIXED_PROMPTS], outputs, strict=False)
    ]
    return {**score(outputs, items), "over_context": over, "samples": samples}


def evaluate_held_out(
    model_dir: Path | str,
    test_file: Path | str,
    limit: int,
    max_new_tokens: int,
    structured: bool = False,
) -> dict:
    """``evaluate_model`` on the first ``limit`` items of a held-out pairs file."""
    return evaluate_model(
        model_dir, read_items(test_file, limit), max_new_tokens, structured=structured
    )
