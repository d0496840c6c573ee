"""The instruction template every task model is trained on and prompted with (Alpaca layout,
closed by an explicit end marker so generation can stop on it)."""

from __future__ import annotations

PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
INSTRUCTION_MARKER = "### Instruction:"
RESPONSE_MARKER = "### Response:"
END_MARKER = "### End"


def prompt_of(instruction: str) -> str:
    """What a model sees at inference: the template up to and including the response marker."""
    return f"{PREAMBLE}\n\n{INSTRUCTION_MARKER}\n{instruction}\n\n{RESPONSE_MARKER}\n"


def format_example(instruction: str, response: str) -> str:
    """One training text: the prompt, the response and the end marker."""
    return f"{prompt_of(instruction)}{response}\n\n{END_MARKER}"
