"""A conversation as one prompt. With a tokenizer that has a chat template, messages are rendered
with it. The project's own models have none: they were tuned on an instruction template (the
``template`` given to the app: ``prompt_of``, ``format_example`` and ``END_MARKER``), so the
conversation becomes that template — system messages, then the last user message(s), form the
instruction; earlier user/assistant exchanges come first as finished examples — and the end
marker (with the blank line before it) is a stop sequence, as the end-of-turn token is for
chat-template models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from infra.serving.errors import OpenAIError
from infra.serving.schemas import ChatMessage


class InstructionTemplate(Protocol):
    """What the server needs of the template a model was tuned on (a module works)."""

    END_MARKER: str

    def prompt_of(self, instruction: str) -> str: ...

    def format_example(self, instruction: str, response: str) -> str: ...


def render_chat(
    messages: Sequence[ChatMessage], tokenizer, template: InstructionTemplate | None
) -> tuple[str, list[str]]:
    """The prompt for a conversation and the stop sequences its template implies: the
    tokenizer's chat template when it has one, else ``template``."""
    if messages[-1].role != "user":
        raise OpenAIError(400, "the last message must be the user's", param="messages")
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": m.role, "content": m.text()} for m in messages]
        prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return prompt, []
    if template is None:
        raise OpenAIError(
            400,
            "this model has no chat template and the server was started "
            "without an instruction template: use /v1/completions",
            param="messages",
        )
    return instruction_prompt(messages, template), instruction_stops(template)


def instruction_prompt(messages: Sequence[ChatMessage], template: InstructionTemplate) -> str:
    """A conversation in the instruction template: earlier user/assistant exchanges as
    finished examples, then system text + the pending user text as the instruction
    (consecutive messages of one role are joined by a blank line)."""
    system = [m.text() for m in messages if m.role in ("system", "developer")]
    blocks, pending = [], []  # finished examples; user texts awaiting a reply
    for message in messages:
        if message.role == "user":
            pending.append(message.text())
        elif message.role == "assistant":
            if not pending:
                raise OpenAIError(
                    400, "an assistant message must follow a user message", param="messages"
                )
            blocks.append(template.format_example("\n\n".join(pending), message.text()))
            pending = []
    blocks.append(template.prompt_of("\n\n".join(system + pending)))
    return "\n\n".join(blocks)


def instruction_stops(template: InstructionTemplate) -> list[str]:
    """End of the response in the instruction template; the blank line before it goes too."""
    return [f"\n\n{template.END_MARKER}", template.END_MARKER]
