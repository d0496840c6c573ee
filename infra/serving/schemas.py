"""The request bodies of the OpenAI routes: unknown fields and bad values are refused with the
field's name; each request turns into the ``GenerationParams`` its batch runs with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.llm import GenerationParams

DEFAULT_MAX_TOKENS = GenerationParams.model_fields["max_new_tokens"].default  # when not sent


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]  # images and audio are not for this server's models
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # accepted, not used

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False  # a last chunk with the usage counts and no choices


class SamplingRequest(BaseModel):
    """What chat and text completion requests share."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)  # default DEFAULT_MAX_TOKENS
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default and range; 0: greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=2**62)  # None: 0 (so requests without share
    # batches); the range torch's generator takes, with room for the per-batch offset
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)  # choices per prompt (at most limits.max_n)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted, not used (and not logged)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def stops(self) -> list[str]:
        """The client's stop sequences (the server's limits count these, not the template's)."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def max_new_tokens(self) -> int:
        return self.requested_max_tokens() or DEFAULT_MAX_TOKENS

    def generation_params(self, template_stops: Sequence[str] = ()) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens(),
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed or 0,
            stop=[s for s in [*self.stops(), *template_stops] if s],
        )

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | Annotated[list[str], Field(min_length=1)]  # a list: a choice per prompt
