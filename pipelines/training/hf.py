"""Hugging Face loading helpers shared by every stage that reads a local HF model dir: the
tokenizer saved with a model, read without network access."""

from __future__ import annotations

from pathlib import Path


def load_hf_tokenizer(model_dir: Path | str):
    """The tokenizer saved with a model dir (any HF tokenizer, read locally)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"the tokenizer in {model_dir} has no EOS token: fine-tuned responses could never end"
        )
    return tokenizer


def load_tokenizer(directory: Path | str):
    """The tokenizer saved in an HF dir, read locally (never downloads)."""
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {directory}: not a saved tokenizer dir")
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
