"""Review summaries per hour: the pipeline's batched generation vs a one-prompt-at-a-time loop.

Both sides run the same model (a preset, same initial weights, or any HF dir) on the same
prompts — the review-summary prompts of generated reviews, each quoting up to
``--reviews-per-prompt`` reviews — with the same greedy decoding and the same
max_new_tokens, in this one process. The batched side is what each partition of the summary
job calls: ``infra.llm.TransformersLLM.generate`` (prompts sorted by length, left padding,
a padded-tokens-per-batch budget). The naive side calls ``model.generate`` once per prompt.
Greedy decoding makes both write the same text, which is checked. Progress goes to stderr;
the last stdout line is one JSON object.

    python benchmarks/batch_inference.py                      # demo preset, 96 prompts
    python benchmarks/batch_inference.py --model-dir DIR      # a trained model instead
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOUR = 3600.0


def log(message: str) -> None:
    print(f"[batch-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def review_prompts(n_prompts: int, per_prompt: int, seed: int) -> tuple[list[str], int]:
    """(prompts, reviews they quote): generated reviews grouped by product, band, week."""
    from infra.tracking import PromptRef
    from pipelines.prompts.generator import generate_reviews
    from pipelines.prompts.schema import ReviewsConfig
    from pipelines.prompts.summary_prompt import (
        PROMPT_NAME,
        PROMPT_TEMPLATE,
        group_prompt,
        groups_in_memory,
    )

    data, _aspects = generate_reviews(ReviewsConfig(seed=seed, n_products=40))
    template = PromptRef(PROMPT_NAME, 0, PROMPT_TEMPLATE).format
    prompts, quoted = [], 0
    for group in groups_in_memory(data, "month"):
        for start in range(0, len(group.reviews), per_prompt):
            chunk = group.reviews[start : start + per_prompt]
            prompts.append(group_prompt(template, group, chunk))
            quoted += len(chunk)
            if len(prompts) == n_prompts:
                return prompts, quoted
    return prompts, quoted


def model_dir_for(args, tmp: Path) -> Path:
    """The model to run: --model-dir, or a fresh preset with a tokenizer trained on reviews."""
    if args.model_dir:
        return Path(args.model_dir)
    from pipelines.pretrain.tokenizer import (
        TokenizerConfig,
        save_tokenizer,
        special_token_ids,
        train_tokenizer,
    )
    from pipelines.prompts.generator import generate_reviews
    from pipelines.prompts.schema import ReviewsConfig
    from pipelines.training.export import export_model
    from pipelines.training.models import build_model, model_config

    data, _ = generate_reviews(ReviewsConfig(seed=99, n_products=40))
    tokenizer = train_tokenizer([r["text"] for r in data], TokenizerConfig(vocab_size=4096))
    tokenizer_dir = save_tokenizer(tokenizer, tmp / "tokenizer")
    model = build_model(
        model_config(args.preset, vocab_size=len(tokenizer), **special_token_ids(tokenizer)),
        seed=0,
    )
    return export_model(model, tokenizer_dir, tmp / "model")


def naive(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            outputs.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--model-dir", default=None, help="an HF causal-LM dir instead")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--reviews-per-prompt", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=128)  # ~ a four-field answer
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from infra.llm import GenerationParams, TransformersLLM

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_for(args, Path(tmp))
        prompts, quoted = review_prompts(args.prompts, args.reviews_per_prompt, args.seed)
        llm = TransformersLLM(model_dir, tokens_per_batch=args.tokens_per_batch)
        params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
        log(
            f"{len(prompts)} prompts quoting {quoted} reviews, {torch.get_num_threads()} "
            f"threads, {args.max_new_tokens} new tokens"
        )
        llm.generate(prompts[:2], params)  # warm-up: first-call allocations on both sides
        started = time.perf_counter()
        batched_out = llm.generate(prompts, params)
        batched_s = time.perf_counter() - started
        log(f"batched: {batched_s:.1f} s")
        started = time.perf_counter()
        naive_out = naive(llm.model, llm.tokenizer, prompts, args.max_new_tokens)
        naive_s = time.perf_counter() - started
        log(f"naive loop: {naive_s:.1f} s")
    same = sum(a.strip() == b.strip() for a, b in zip(batched_out, naive_out, strict=False))
    result = {
        "benchmark": "batch_inference",
        "model": args.model_dir or args.preset,
        "prompts": len(prompts),
        "reviews": quoted,
        "max_new_tokens": args.max_new_tokens,
        "batched_s": round(batched_s, 2),
        "naive_s": round(naive_s, 2),
        "batched_reviews_per_hour": round(quoted * HOUR / batched_s),
        "naive_reviews_per_hour": round(quoted * HOUR / naive_s),
        "ratio": round(naive_s / batched_s, 2),
        "same_text_share": round(same / len(prompts), 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
