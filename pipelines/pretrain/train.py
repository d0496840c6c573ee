"""Pretraining: one DeepSpeed rank trains a preset model on token shards through the shared loop
(``pipelines.training.loop``), crash-safe and resumable.

Run ``python -m pipelines.pretrain.train --config … --shards … --out …`` in its own process
group (``pipelines.training.launch`` does); Prefect stays outside the ranks."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from pipelines.training.config import TrainerConfig
from pipelines.training.ema import full_state_dict
from pipelines.training.export import export_model
from pipelines.training.loop import rank_context, run_training
from pipelines.training.models import PRESETS
from pipelines.training.objectives import NextTokenPrediction
from pipelines.training.rank import rank_main

log_ = logging.getLogger(__name__)


class PretrainConfig(TrainerConfig):
    preset: str = "tiny"  # pipelines.training.models preset; "demo" for the 2-core demo
    seq_len: int = Field(128, ge=2)  # tokens per sequence; must equal the shards' seq_len

    @model_validator(mode="after")
    def _check(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r} is not one of {sorted(PRESETS)}")
        return self


def train(
    config: PretrainConfig,
    shards_dir: Path | str,
    out_dir: Path | str,
    log: Callable[[dict], None] | None = None,
    tokenizer_dir: Path | str | None = None,
) -> dict:
    """Train (or resume) in this process as one DeepSpeed rank; returns a JSON summary.

    ``tokenizer_dir`` (default: ``<shards_dir>/tokenizer`` when present) is checked against
    the shards' tokenizer hash and the model config, and is needed to export HF model dirs
    (``<out>/model``, plus ``<out>/model-ema`` with EMA) at the end.
    """
    from pipelines.pretrain.tokens import TokenShards

    with rank_context(config) as (rank, _world):
        train_shards = TokenShards(shards_dir, "train")
        index = train_shards.index
        if train_shards.seq_len != config.seq_len:
            raise ValueError(
                f"config seq_len {config.seq_len} does not match the shards' "
                f"seq_len {train_shards.seq_len} ({Path(shards_dir) / 'index.json'})"
            )
        tokenizer_dir = _tokenizer_dir(shards_dir, tokenizer_dir, index)
        model = _build_model(config, index, tokenizer_dir)
        out_dir = Path(out_dir)

        def export(engine, ema) -> dict:
            state = full_state_dict(engine)  # every rank: ZeRO-3 gathers the weights
            if rank != 0:
                return {}
            exported = {
                "model_dir": str(
                    export_model(engine, tokenizer_dir, out_dir / "model", state_dict=state)
                )
            }
            if ema is not None:
                exported["ema_model_dir"] = str(
                    export_model(
                        engine,
                        tokenizer_dir,
                        out_dir / "model-ema",
                        use_ema=True,
                        ema_weights=ema,
                        state_dict=state,
                    )
                )
            return exported

        return run_training(
            config,
            model,
            NextTokenPrediction(),
            LanguageModeling(train_shards),
            out_dir,
            eval_data=_validation(shards_dir),
            log=log,
            export=export if tokenizer_dir is not None else None,
        )


class LanguageModeling:
    """A token shard split as training data: every token is its own next-token label."""

    def __init__(self, shards):
        self.shards = shards
        self.seq_len = shards.seq_len

    def __len__(self) -> int:
        return len(self.shards)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        rows = self.shards.batch(indices).astype(np.int64)
        return rows, rows

    def bits_per_byte(self, mean_nats: float) -> float | None:
        """nats/token -> bits per UTF-8 byte of the split's text."""
        split = self.shards.index["splits"][self.shards.split]
        if not split.get("text_bytes"):
            return None
        return mean_nats * split["tokens"] / split["text_bytes"] / math.log(2)


def _validation(shards_dir) -> LanguageModeling | None:
    from pipelines.pretrain.tokens import TokenShards

    try:
        val = TokenShards(shards_dir, "validation")
    except KeyError:
        return None
    return LanguageModeling(val) if len(val) else None


def _tokenizer_dir(shards_dir, tokenizer_dir, index: dict) -> Path | None:
    from pipelines.pretrain.tokenizer import tokenizer_hash

    if tokenizer_dir is None:
        candidate = Path(shards_dir) / "tokenizer"
        if not (candidate / "tokenizer.json").is_file():
            return None
        tokenizer_dir = candidate
    tokenizer_dir = Path(tokenizer_dir)
    digest = tokenizer_hash(tokenizer_dir)
    if digest != index["tokenizer_hash"]:
        raise ValueError(
            f"tokenizer {tokenizer_dir} (hash {digest[:12]}) is not the one the "
            f"shards in {shards_dir} were built with (hash "
            f"{index['tokenizer_hash'][:12]})"
        )
    return tokenizer_dir


def _build_model(config: PretrainConfig, index: dict, tokenizer_dir: Path | None):
    from pipelines.pretrain.tokenizer import check_vocab, special_token_ids
    from pipelines.training.hf import load_tokenizer
    from pipelines.training.models import build_model, model_config

    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(tokenizer_dir)
        ids, vocab = special_token_ids(tokenizer), len(tokenizer)
    else:  # GPT-2 style: EOS doubles as BOS (pipelines.pretrain.tokens)
        eos = index.get("eos_token_id")
        ids, vocab = {"eos_token_id": eos, "bos_token_id": eos}, int(index["vocab_size"])
    if vocab != int(index["vocab_size"]):
        raise ValueError(
            f"the tokenizer has {vocab} tokens, the shards were built with "
            f"vocab_size {index['vocab_size']}"
        )
    max_len = max(config.seq_len, PRESETS[config.preset].seq_len)
    hf_config = model_config(config.preset, vocab_size=vocab, max_seq_len=max_len, **ids)
    if tokenizer_dir is not None:
        check_vocab(tokenizer, hf_config)
    return build_model(hf_config, seed=config.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.pretrain.train",
        description="Pretrain (or resume) one DeepSpeed rank.",
    )
    parser.add_argument("--config", required=True, help="JSON file of PretrainConfig fields")
    parser.add_argument("--shards", required=True, help="complete token shard dir")
    parser.add_argument("--out", required=True, help="run dir (checkpoints, metrics, models)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer dir (default: <shards>/tokenizer when present)",
    )
    parser.add_argument(
        "--workspace",
        default=None,
        help="GENAI_HOME for this rank (remote "
        "nodes do not inherit the launching shell's environment)",
    )
    args = parser.parse_args(argv)
    return rank_main(
        PretrainConfig,
        args.config,
        args.workspace,
        lambda config: train(
            config,
            args.shards,
            args.out,
            tokenizer_dir=args.tokenizer,
            log=lambda r: log_.info(json.dumps(r)),
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
