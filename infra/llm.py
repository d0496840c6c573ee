"""LLM access for every stage: ``generate(prompts, params) -> list[str]``, one contract.

Two implementations sit behind the ``LLM`` protocol, so a stage never knows which it has:

- ``TransformersLLM`` runs an HF causal LM in process. Prompts are sorted by token length and
  grouped into left-padded batches under a token budget (short prompts share a batch, long
  ones go few at a time), then the completions are put back in the callers' order.
  ``complete`` is the one decode path: it also reports token counts and why each completion
  ended, and, given ``on_delta``, hands out each completion's text as it grows, step by step
  (what the serving app streams); ``generate`` is its texts. The deltas of a completion
  always add up to its final text, so streamed and non-streamed outputs are the same.
- ``OpenAICompatibleLLM`` talks to any OpenAI-compatible server (vLLM, the project's own
  serving app, a hosted API) over HTTP, a few requests in flight at a time, retrying what is
  transient (429, 5xx, timeouts) with exponential backoff and failing fast on the rest.

Both cut each completion at its earliest stop sequence on the client side, so a value never
contains a stop string whatever the backend did. ``load_llm`` picks one from a config string.

Structured output (``infra.llm_fields``) fills a template field by field: each field's prefix
is appended, the model writes up to that field's stop, the value is kept and the next prefix
follows. The output always parses by construction, whatever the model says,
which is what batch pipelines need from a small task-tuned model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict, PlainSerializer

from infra.redaction import REDACTED, redact, redact_value, register_secret

REDACTED_USERINFO = f"://{REDACTED}@"
# How a config names a model: a models:/ URI, an HF dir, an endpoint URL (``http://host/v1#m``)
# or a client's arguments. Written out as JSON (Prefect's stored parameters, manifests, MLflow)
# its credentials are cut out; in the process that runs it, it is used as given.
LLMSpec = Annotated[str | dict, PlainSerializer(redact_value, when_used="json")]

log = logging.getLogger(__name__)

ERROR_BODY_CHARS = 500  # how much of a failed response's body an error message quotes


class GenerationParams(BaseModel):
    """How to generate; one object for both backends (OpenAI's names where they differ)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = pydantic.Field(256, ge=1)  # tokens per completion, at most
    temperature: float = pydantic.Field(0.0, ge=0.0)  # 0: greedy (deterministic)
    top_p: float = pydantic.Field(1.0, gt=0.0, le=1.0)  # nucleus mass kept when sampling
    seed: int = 0  # sampling is seeded: same seed, same prompts, same outputs
    stop: list[str] = []  # generation ends at the first stop sequence (not in the output)


@runtime_checkable
class LLM(Protocol):
    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[str]:
        """Only the completion text for each prompt, in the prompts' order."""
        ...


class PromptTooLongError(ValueError):
    """A prompt that leaves the model no position to answer in. Prompt builders fit their
    prompts to the model (``TransformersLLM.context_length``); this is the guard behind them."""


class LLMError(RuntimeError):
    """A request that failed for good: names the URL, the status and the server's answer."""


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def streamable_prefix(text: str, stops: Sequence[str]) -> str:
    """The part of a still-growing completion that can be sent now and never taken back:
    cut at the earliest stop, then hold back a trailing replacement character (a multi-byte
    character whose other bytes are yet to come) and any tail that might begin a stop string
    (the next token could complete it, or reveal an earlier stop)."""
    text = cut_at_stop(text, stops).rstrip("\ufffd")
    held = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    return text[: len(text) - held]


# ---------------------------------------------------------------------------- in process


def plan_batches(
    lengths: Sequence[int], max_new_tokens: int, tokens_per_batch: int
) -> list[list[int]]:
    """Indices of prompts grouped longest first so that each batch's padded size,
    (longest prompt + max_new_tokens) x batch size, stays within ``tokens_per_batch``.
    A prompt too long for the budget still gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        # Sorted longest first, so a batch's first prompt sets its padded width.
        if (
            batches
            and (len(batches[-1]) + 1) * (lengths[batches[-1][0]] + max_new_tokens)
            <= tokens_per_batch
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _stop_on_strings(tokenizer, prompt_width: int, stops: list[str]):
    """A StoppingCriteria that ends each row once its decoded completion holds a stop string
    (decoding, not token matching: a stop may span tokens or split a multi-byte char)."""
    import torch
    from transformers import StoppingCriteria

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
            done = [any(s in text for s in stops) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopOnStrings()


@dataclasses.dataclass(frozen=True)
class Completion:
    """One prompt's completion with what an OpenAI-style ``usage`` and ``finish_reason`` need."""

    text: str  # cut at the earliest stop sequence
    prompt_tokens: int
    completion_tokens: int  # tokens generated, not counting the end-of-sequence token
    finish_reason: Literal["stop", "length"]  # stop: EOS or a stop sequence; length: max tokens


DeltaCallback = Callable[[int, str], None]  # (index of the prompt, new text of its completion)


class _TextDeltas:
    """A ``model.generate`` streamer for a whole batch: after every decoding step, each row's
    tokens so far are decoded and whatever ``streamable_prefix`` adds to what was already sent
    goes to ``emit(row, delta)``. ``flush`` sends the rest of the final texts, so a row's deltas
    always add up to its final text (decoding is checked to only ever extend the sent text)."""

    def __init__(self, tokenizer, stops: list[str], emit: DeltaCallback):
        self.tokenizer, self.stops, self.emit = tokenizer, stops, emit
        self.tokens: list[list[int]] | None = None  # generated ids per row
        self.sent: list[str] = []

    def put(self, value) -> None:
        if self.tokens is None:  # generate's first call hands over the prompts: not output
            self.tokens = [[] for _ in range(value.shape[0])]
            self.sent = [""] * value.shape[0]
            return
        for row, token in zip(self.tokens, value.tolist(), strict=False):
            row.append(token)
        texts = self.tokenizer.batch_decode(self.tokens, skip_special_tokens=True)
        for row, text in enumerate(texts):
            self._send(row, streamable_prefix(text, self.stops))

    def end(self) -> None:
        """Called by ``generate`` when done; the final texts come with ``flush``."""

    def flush(self, final_texts: list[str]) -> None:
        for row, text in enumerate(final_texts):
            if not text.startswith(self.sent[row]):  # would break "deltas add up": say so
                raise RuntimeError(
                    f"streamed text {self.sent[row]!r} is not a prefix of the "
                    f"final completion {text!r}: the tokenizer's decoding is "
                    "not prefix-stable"
                )
            self._send(row, text)

    def _send(self, row: int, text: str) -> None:
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            self.emit(row, text[len(self.sent[row]) :])
            self.sent[row] = text


MIN_SHARED_PREFIX = 16  # tokens: below this, sharing a prefix cache is not worth a pass


def _shared_prefix_length(batch_ids: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least its last token to feed."""
    shortest = min(len(i) for i in batch_ids) - 1
    first = batch_ids[0]
    n = 0
    while n < shortest and all(ids[n] == first[n] for ids in batch_ids):
        n += 1
    return n


class TransformersLLM:
    """An HF causal LM dir (safetensors + tokenizer), loaded from local files only.

    Sampling is seeded per batch (``seed + batch index`` in the length-sorted plan): the same
    prompts with the same params and ``tokens_per_batch`` give the same outputs on every call,
    but one prompt's sample depends on which prompts share its batch. Greedy decoding does not.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str | None = None,
        tokens_per_batch: int = 8192,
        dtype=None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokens_per_batch = tokens_per_batch  # padded tokens per forward pass, at most
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.tokenizer.padding_side = "left"  # completions start at the same column
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # bf16 halves GPU memory at no quality cost for inference; CPUs are fastest in fp32.
        dtype = dtype or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        self.model = (
            AutoModelForCausalLM.from_pretrained(
                str(model_dir), local_files_only=True, dtype=dtype
            )
            .to(self.device)
            .eval()
        )

    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, params)]

    def complete(
        self,
        prompts: list[str],
        params: GenerationParams | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> list[Completion]:
        """Completions in the prompts' order. With ``on_delta``, each completion's text is also
        handed out as it grows, ``on_delta(prompt index, delta)``, from this thread; a prompt's
        deltas add up to its completion's text by the time this returns."""
        params = params or GenerationParams()
        ids = [self._encode(p) for p in prompts]
        self._check_prompts_fit(ids)
        completions: list[Completion | None] = [None] * len(prompts)
        plan = plan_batches([len(i) for i in ids], params.max_new_tokens, self.tokens_per_batch)
        for index, batch in enumerate(plan):
            emit = (
                None
                if on_delta is None
                else (lambda row, delta, batch=batch: on_delta(batch[row], delta))
            )
            done = self._complete_batch([ids[i] for i in batch], params, params.seed + index, emit)
            for i, completion in zip(batch, done, strict=False):
                completions[i] = completion
        return completions  # type: ignore[return-value]  # every index is in one batch

    def count_tokens(self, prompt: str) -> int:
        """The prompt's length as ``complete`` feeds it to the model."""
        return len(self._encode(prompt))

    @property
    def context_length(self) -> int | None:
        """Positions the model was built for (prompt + completion), when its config says."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def _check_prompts_fit(self, ids: list[list[int]]) -> None:
        limit = self.context_length
        over = [i for i, prompt in enumerate(ids) if limit is not None and len(prompt) >= limit]
        if over:
            raise PromptTooLongError(
                f"prompt {over[0]} ({len(over)} of {len(ids)} too long) is {len(ids[over[0]])} "
                f"tokens: the model has {limit} positions for prompt and answer together; "
                "its builder must trim what it quotes"
            )

    def _room(self, width: int, max_new_tokens: int) -> int:
        """New tokens the batch may generate: no row runs past the model's positions (the
        completion ends with finish_reason "length" there instead)."""
        limit = self.context_length
        return max_new_tokens if limit is None else max(1, min(max_new_tokens, limit - width))

    def _encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        # An empty prompt still needs one position to condition on: start of text.
        return ids or [self.tokenizer.bos_token_id or self.tokenizer.eos_token_id]

    def _pad(self, batch_ids: list[list[int]], shared: int = 0):
        """Rows padded to one width so every completion starts in the same column: on the
        left, or — when the rows share their first ``shared`` tokens — after that prefix,
        so the prefix sits in the same columns of every row and its keys and values are
        computed once (``_prefix_cache``). Masked pads change no position: positions come
        from the attention mask's running count."""
        import torch

        width = max(len(i) for i in batch_ids)
        pad = self.tokenizer.pad_token_id
        input_ids = [i[:shared] + [pad] * (width - len(i)) + i[shared:] for i in batch_ids]
        mask = [[1] * shared + [0] * (width - len(i)) + [1] * (len(i) - shared) for i in batch_ids]
        return (
            torch.tensor(input_ids, device=self.device),
            torch.tensor(mask, device=self.device),
        )

    def _static_cache(self, prefix, rows: int, length: int):
        """A key/value cache allocated once for the whole generation (a growing cache copies
        itself every step), holding the shared prefix's keys and values — computed once,
        for one row — in every row."""
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=length)
        if prefix.shape[1]:
            computed = self.model(input_ids=prefix, use_cache=True).cache
            for index, layer in enumerate(computed.layers):
                cache.update(
                    layer.keys.expand(rows, -1, -1, -1).contiguous(),
                    layer.values.expand(rows, -1, -1, -1).contiguous(),
                    index,
                )
        return cache

    def _complete_batch(
        self,
        batch_ids: list[list[int]],
        params: GenerationParams,
        seed: int,
        emit: DeltaCallback | None,
    ) -> list[Completion]:
        import torch

        shared = _shared_prefix_length(batch_ids) if len(batch_ids) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        input_ids, attention_mask = self._pad(batch_ids, shared)
        room = self._room(input_ids.shape[1], params.max_new_tokens)
        kwargs: dict[str, Any] = {
            "max_new_tokens": room,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.temperature > 0:
            # top_k=0: only temperature and top_p shape the distribution, as on the HTTP APIs.
            kwargs.update(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0
            )
        else:
            kwargs.update(do_sample=False)
        if params.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_stop_on_strings(self.tokenizer, input_ids.shape[1], params.stop)]
            )
        deltas = None if emit is None else _TextDeltas(self.tokenizer, params.stop, emit)
        if deltas is not None:  # only when asked: decoding every step costs a little
            kwargs["streamer"] = deltas
        cuda = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        # fork_rng: seeding here must not reset the caller's global random state.
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            kwargs["cache"] = self._static_cache(
                input_ids[:1, :shared], len(batch_ids), input_ids.shape[1] + room
            )
            out = self.model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        generated = out[:, input_ids.shape[1] :].tolist()
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        completions = [
            self._completion(len(ids), tokens, text, params.stop)
            for ids, tokens, text in zip(batch_ids, generated, texts, strict=False)
        ]
        if deltas is not None:
            deltas.flush([c.text for c in completions])
        return completions

    def _completion(
        self, prompt_tokens: int, tokens: list[int], text: str, stops: list[str]
    ) -> Completion:
        """Token counts and finish reason of one row: a row that ended early (EOS, or a stop
        sequence) is followed by EOS or padding; one that ran to max_new_tokens is not."""
        cut = cut_at_stop(text, stops)
        ended = next((k for k, t in enumerate(tokens) if t in self._end_token_ids), None)
        return Completion(
            text=cut,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens) if ended is None else ended,
            finish_reason="stop" if ended is not None or cut != text else "length",
        )

    @functools.cached_property
    def _end_token_ids(self) -> frozenset[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) | {
            self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id,
        }
        return frozenset(i for i in ids if i is not None)


# ---------------------------------------------------------------------------- over HTTP


def _retry_after_s(response) -> float | None:
    """The server's ``Retry-After`` in seconds, when given as a number (dates are ignored)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


class OpenAICompatibleLLM:
    """An OpenAI-compatible ``/v1`` server: ``completions`` or ``chat`` mode.

    The API key (argument, else ``OPENAI_API_KEY``) only ever goes into the Authorization
    header, and credentials written into the URL (``http://user:key@host/v1``) are taken out
    of it and sent as HTTP basic auth: neither reaches a log line, an error message or
    ``repr`` (``infra.redaction`` knows them, so a body that echoes one is redacted too).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        mode: Literal["chat", "completions"] = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 60,
        backoff_s: float = 0.5,
    ):
        if mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', got {mode!r}")
        if REDACTED_USERINFO in base_url:
            raise ValueError(
                f"{base_url}: this endpoint's credentials were cut out when its config was "
                f"stored; put the key in an environment variable and name it (api_key_env)"
            )
        self.base_url, self._basic_auth = _split_credentials(base_url.rstrip("/"))
        self.model = model
        self.mode = mode
        self.max_concurrency = max_concurrency  # requests in flight at once, at most
        self.max_retries = max_retries  # retries after the first try of each request
        self.timeout_s = timeout_s  # per request (connect, read, write each)
        self.backoff_s = backoff_s  # first retry's wait; doubles on each retry
        self._api_key = api_key or os.environ.get(api_key_env) or None
        register_secret(self._api_key)

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM({self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.mode == 'chat' else 'completions'}"

    def generate(self, prompts: list[str], params: GenerationParams | None = None) -> list[str]:
        import httpx

        params = params or GenerationParams()
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self.max_concurrency)
        with httpx.Client(
            headers=headers, auth=self._basic_auth, timeout=self.timeout_s, limits=limits
        ) as client:
            pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
            try:
                texts = list(pool.map(lambda p: self._complete(client, p, params), prompts))
            finally:  # one request failed for good: don't send the queued rest
                pool.shutdown(cancel_futures=True)
        return [cut_at_stop(t, params.stop) for t in texts]  # in case the server ignored stop

    def _body(self, prompt: str, params: GenerationParams) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.stop:  # omitted when empty: some servers reject an empty list
            body["stop"] = params.stop
        if self.mode == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def _complete(self, client, prompt: str, params: GenerationParams) -> str:
        response = self._post_with_retries(client, self._body(prompt, params))
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.mode == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise LLMError(
                f"POST {self.url}: unexpected response ({err!r}): {self._quote(response.text)}"
            ) from None
        return text or ""

    def _post_with_retries(self, client, body: dict):
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(self.url, json=body)
            except httpx.TransportError as err:  # timeouts, refused or dropped connections
                failure, wait = f"{type(err).__name__}: {err}", None
            else:
                if response.status_code < 300:
                    return response
                failure = f"status {response.status_code}: {self._quote(response.text)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise LLMError(f"POST {self.url} failed with {failure}")  # won't get better
                wait = _retry_after_s(response)
            if attempt == self.max_retries:
                raise LLMError(
                    f"POST {self.url} failed after {self.max_retries + 1} tries; last: {failure}"
                )
            if wait is None:  # jitter spreads out clients that failed at the same moment
                wait = self.backoff_s * 2**attempt * (1 + random.uniform(0, 0.1))
            log.warning(
                "POST %s: %s; retry %d/%d in %.2f s",
                self.url,
                failure[:200],
                attempt + 1,
                self.max_retries,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _quote(self, text: str) -> str:
        text = redact(text)
        return text[:ERROR_BODY_CHARS] + ("…" if len(text) > ERROR_BODY_CHARS else "")


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and that userinfo (decoded) as a basic-auth pair, whose
    password is from now on redacted wherever it appears."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    register_secret(password)
    register_secret(user if not password else None)  # a bare token written as the user
    return urlunsplit(parts._replace(netloc=host)), (user, password)


def load_llm(spec: str | Path | dict) -> LLM:
    """An LLM from config: ``models:/name@alias`` or ``models:/name/3`` (the MLflow
    registry), a local HF dir, ``http(s)://host/v1#model-name``, or a dict of either
    client's arguments (``{"base_url", "model", ...}`` or ``{"model_dir", ...}``)."""
    if isinstance(spec, dict):
        if "base_url" in spec:
            return OpenAICompatibleLLM(**spec)
        if "model_dir" in spec:
            return load_llm_dir(**spec)
        raise ValueError(f"LLM spec {sorted(spec)} needs 'base_url' (+ 'model') or 'model_dir'")
    text = str(spec)
    if text.startswith(("http://", "https://")):
        base_url, _, model = text.partition("#")
        if not model:
            raise ValueError(f"{text}: name the model after '#', e.g. {text}#my-model")
        return OpenAICompatibleLLM(base_url, model)
    return load_llm_dir(text)


def load_llm_dir(model_dir: str | Path, **kwargs) -> TransformersLLM:
    """A TransformersLLM for a local HF dir or a ``models:/`` URI (fetched from MLflow)."""
    from infra.registry import model_dir as resolve_model_dir

    return TransformersLLM(resolve_model_dir(model_dir), **kwargs)
