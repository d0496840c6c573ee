"""Every generation goes through one ``Batcher``: an asyncio queue drained by one loop that
takes the first waiting request, waits up to ``batch_window_ms`` for others (at most
``max_batch`` in all), splits them into groups of equal generation parameters (max_tokens,
temperature, top_p, seed, stop) and runs ONE ``TransformersLLM.complete`` call per group on a
single worker thread — the only thread that runs the model or its tokenizer (a fast tokenizer
is not safe to share between threads). Requests that arrive while the model is busy queue up
and form the next batch; the queue is bounded (``max_queue``: a request finding it full is
answered 429 with ``Retry-After``). Prompt tokens are counted for the server's limits without
waiting for the model: on a second thread, with a copy of the tokenizer. Streaming uses the
same call: ``complete`` hands out each completion's text as it grows, so a streamed
completion is the non-streamed one, delta by delta. ``stop`` finishes the queued generations
before it stops (uvicorn has by then let the requests in flight finish)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from infra.llm import Completion, GenerationParams, TransformersLLM
from infra.serving.errors import OpenAIError, as_openai_error

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16  # requests per model call, at most
DEFAULT_BATCH_WINDOW_MS = 10.0  # how long a batch's first request waits for company, in ms
DRAIN_TIMEOUT_S = 30.0  # how long ``stop`` lets queued generations finish
RETRY_AFTER_S = 1  # what a client told "the queue is full" waits before it retries


@dataclasses.dataclass
class Job:
    """One prompt to complete. ``on_delta`` and the future's callbacks run on the event loop,
    every delta before the future resolves."""

    prompt: str
    params: GenerationParams
    future: asyncio.Future  # a Completion, or an OpenAIError
    on_delta: Callable[[str], None] | None = None


class Batcher:
    """Groups concurrent generations into few model calls; see the module docstring."""

    def __init__(
        self,
        llm: TransformersLLM,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
        max_queue: int | None = None,  # None: unbounded
    ):
        if max_batch < 1 or batch_window_ms < 0:
            raise ValueError(
                f"max_batch must be >= 1 and batch_window_ms >= 0, got "
                f"{max_batch}, {batch_window_ms}"
            )
        self.llm = llm
        self.max_batch = max_batch
        self.window_s = batch_window_ms / 1000
        self.max_queue = max_queue
        self.requests = 0  # jobs submitted
        self.batches = 0  # model calls made
        self.largest_batch = 0  # jobs in the largest model call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._runner: asyncio.Task | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._counter = _with_own_tokenizer(llm)  # used on the _counting thread only
        self._counting: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        # One thread: the model and its tokenizer never run on two threads at once.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="count-tokens")
        self._runner = asyncio.create_task(self._run(), name="batcher")

    async def stop(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Finish the queued generations (``timeout_s`` at most), then stop; what is left
        then is answered 503."""
        if self._runner is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            log.warning(
                "stopping with %d generations unfinished after %.0f s", self.queued, timeout_s
            )
        self._runner.cancel()
        try:
            await self._runner
        except asyncio.CancelledError:
            pass
        while not self._queue.empty():  # nobody will serve them: answer now
            settle(self._queue.get_nowait().future, asyncio.CancelledError())
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._counting.shutdown(wait=False, cancel_futures=True)
        self._runner = None

    def submit(
        self, prompt: str, params: GenerationParams, on_delta: Callable[[str], None] | None = None
    ) -> asyncio.Future:
        """Queue one generation; await the returned future for its Completion."""
        relay = None if on_delta is None else (lambda _index, delta: on_delta(delta))
        return self.submit_all([prompt], params, relay)[0]

    def submit_all(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        on_delta: Callable[[int, str], None] | None = None,
    ) -> list[asyncio.Future]:
        """Queue one request's generations, all or none (429 when the queue is full, 503 when
        stopped); ``on_delta(index in prompts, delta)``. Futures in the prompts' order."""
        self._check_accepting()
        jobs = [
            Job(p, params, self._loop.create_future(), on_delta and functools.partial(on_delta, i))
            for i, p in enumerate(prompts)
        ]
        self.requests += len(jobs)
        for job in jobs:
            self._queue.put_nowait(job)
        return [job.future for job in jobs]

    async def count_tokens(self, prompts: Sequence[str]) -> int:
        """The prompts' tokens in all, as the model would see them; never waits for it."""
        self._check_accepting(queue=False)
        count = self._counter.count_tokens
        return await self._loop.run_in_executor(self._counting, lambda: sum(map(count, prompts)))

    def _check_accepting(self, queue: bool = True) -> None:
        if self._runner is None:
            raise OpenAIError(503, "the model server is not running", "server_error")
        # A full queue refuses a whole request; one admitted may pass the bound by its own
        # size (at most limits.max_prompts * max_n), so that every size is admissible.
        if queue and self.max_queue is not None and self.queued >= self.max_queue:
            raise OpenAIError(
                429,
                f"the server is busy: {self.queued} generations wait for the model, the "
                f"server's limit of {self.max_queue} (setting limits.max_queue); retry in "
                f"{RETRY_AFTER_S} s",
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            try:
                for group in _groups_of_equal_params(jobs):
                    await self._run_group(group)
            finally:
                for _ in jobs:  # what ``stop`` waits for
                    self._queue.task_done()

    async def _run_group(self, group: list[Job]) -> None:
        try:
            await self._loop.run_in_executor(self._worker, self._generate, group)
        except Exception as err:  # a bug, not a model error: answer, keep serving
            log.exception("batcher failed on a group of %d requests", len(group))
            for job in group:
                settle(job.future, err)

    async def _collect(self) -> list[Job]:
        """The first waiting job, plus those arriving within the window (up to max_batch)."""
        jobs = [await self._queue.get()]
        deadline = self._loop.time() + self.window_s
        while len(jobs) < self.max_batch:
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:  # the window is over: take only what already waits
                    jobs.append(self._queue.get_nowait())
                    continue
                async with asyncio.timeout(remaining):  # never loses a job, unlike wait_for
                    jobs.append(await self._queue.get())
            except (asyncio.QueueEmpty, TimeoutError):
                break
        return jobs

    def _generate(self, jobs: list[Job]) -> None:
        """One model call for jobs of equal params; runs on the worker thread."""
        fitting = [job for job in jobs if self._fits_context(job)]
        if not fitting:
            return
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(fitting))
        started = time.perf_counter()
        try:
            completions = self.llm.complete(
                [job.prompt for job in fitting],
                fitting[0].params,
                on_delta=self._relay_deltas(fitting),
            )
        except Exception as err:  # the batch fails, the server goes on
            log.exception("model batch of %d requests failed", len(fitting))
            for job in fitting:
                self._settle_from_worker(job, err)
            return
        log.info(
            "batch %d: %d requests, %d completion tokens in %.2f s",
            self.batches,
            len(fitting),
            sum(c.completion_tokens for c in completions),
            time.perf_counter() - started,
        )
        for job, completion in zip(fitting, completions, strict=False):
            self._settle_from_worker(job, completion)

    def _fits_context(self, job: Job) -> bool:
        """Whether prompt + max_tokens fits the model; a job that does not is answered 400."""
        limit = self.llm.context_length
        if limit is None:
            return True
        prompt_tokens, max_tokens = self.llm.count_tokens(job.prompt), job.params.max_new_tokens
        if prompt_tokens + max_tokens <= limit:
            return True
        self._settle_from_worker(
            job,
            OpenAIError(
                400,
                f"the prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                f"{prompt_tokens + max_tokens} > the model's context of {limit} tokens; "
                "shorten the prompt or lower max_tokens",
                param="max_tokens",
                code="context_length_exceeded",
            ),
        )
        return False

    def _relay_deltas(self, jobs: list[Job]):
        def relay(index: int, delta: str) -> None:
            if jobs[index].on_delta is not None:
                self._on_loop(jobs[index].on_delta, delta)

        return relay

    def _settle_from_worker(self, job: Job, outcome: Completion | BaseException) -> None:
        self._on_loop(settle, job.future, outcome)  # after the job's deltas: FIFO

    def _on_loop(self, callback: Callable, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed under a batch at shutdown: nobody to tell
            pass


def settle(future: asyncio.Future, outcome: Completion | BaseException) -> None:
    if future.done():  # the client went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(as_openai_error(outcome))
    else:
        future.set_result(outcome)


def _with_own_tokenizer(llm: TransformersLLM) -> TransformersLLM:
    """``llm`` sharing its model but not its tokenizer: for counting tokens on another thread
    while the model's thread tokenizes (``count_tokens`` stays the one definition)."""
    counter = copy.copy(llm)
    counter.tokenizer = copy.deepcopy(llm.tokenizer)
    return counter


def _groups_of_equal_params(jobs: Iterable[Job]) -> list[list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.params.model_dump_json(), []).append(job)
    return list(groups.values())
