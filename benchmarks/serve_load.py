"""Model server under load: concurrent chat requests vs the same requests one at a time.

Both halves run in one process run, against one server.

The server is the project's own (``genai serve --model M --name M --port P``: FastAPI app,
batcher, instruction template, default ``ServerLimits``), started here as a separate process
on 127.0.0.1; this process is the client (httpx ``AsyncClient``, no retries). Every
well-formed request is ``POST /v1/chat/completions`` with one user message (prompts built from
question templates, each at most ``--max-prompt-tokens`` tokens as the model's tokenizer counts
the rendered prompt), ``max_tokens`` 32, ``temperature`` 0, half of them streamed.

1. Warm-up: ``--warmup`` well-formed requests at ``--concurrency``; not counted.
2. Load: ``--requests`` well-formed requests plus ``--bad-share`` of that many malformed or
   oversized ones (invalid JSON, an unknown field, too many stop sequences, a body over the
   server's body limit, max_tokens beyond the context, n over the limit, a bad temperature, a
   wrong model name), shuffled, at ``--concurrency`` (one connection per worker, keep-alive).
   Latency is to the last byte (a stream's ``[DONE]``), for well-formed requests only;
   ``errors`` counts well-formed requests that did not get a complete answer (any status but
   200, a transport error, an error event in a stream, a stream without ``[DONE]``),
   ``refused_bad`` the bad ones answered with a 4xx. ``mean_batch`` is Δrequests / Δbatches
   of the batcher's counters (``GET /health``) over the load phase (the requests counter also
   counts the few max_tokens-beyond-the-context requests, which reach the batcher and are
   refused there without a model call).
3. Baseline: the first ``--lone`` well-formed requests of the load again, one at a time over
   one keep-alive connection: ``lone_rps``.

``rss_growth`` is the server process's RSS at the end over its RSS after the warm-up, minus 1.
The goal is printed (0 errors, refused_bad == bad_sent, rps >= 5 x lone_rps,
p99 <= 3 x p50, rss_growth < 0.10), not asserted. Progress goes to stderr (the server's log to
a temporary file, whose error lines are counted); the last stdout line is one JSON object.

    GENAI_HOME=.genai python benchmarks/serve_load.py               # models:/genai-rag@champion
    python benchmarks/serve_load.py --model DIR --quick             # a smoke run (200 requests)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHAT = "/v1/chat/completions"
JSON_HEADERS = {"content-type": "application/json"}
DONE_LINE = "data: [DONE]"
# infra.serving.request_log's line: request <id> <method> <route> <status> <ms> ms
REQUEST_LINE = re.compile(rf"request \S+ POST {CHAT} (\d{{3}}|-) ")
# infra.serving.batching's line: batch <n>: <k> requests, <t> completion tokens in <s> s
MODEL_THREADS_LINE = re.compile(r"model threads: (\d+) of \d+ cores")
BATCH_LINE = re.compile(r"batch (\d+): \d+ requests, \d+ completion tokens in ([\d.]+) s")

_QUESTIONS = (
    "Which hotel in {city} suits {who} on a {purpose} trip?",
    "Is breakfast included at the cheapest hotel in {city}?",
    "How far is the station from a {adj} hotel in {city}?",
    "What should {who} book in {city} for {n} nights in {month}?",
    "Compare two {adj} hotels in {city} for {who}.",
    "What does {func} in {package} return, and when does it raise?",
    "How do I use {func} from {package} to {task}?",
    "Which argument of {func} in {package} controls {thing}?",
    "Summarise what {package} says about {thing} in two sentences.",
    "Why would {func} in {package} be slow on {adj} inputs?",
)
_FILL = {
    "city": ("Lisbon", "Kyoto", "Berlin", "Oslo", "Lima", "Cairo", "Denver", "Porto", "Seoul"),
    "who": ("a family of four", "a solo traveller", "two colleagues", "a couple", "a student"),
    "purpose": ("business", "weekend", "hiking", "conference", "honeymoon"),
    "adj": ("quiet", "central", "small", "large", "cheap", "new"),
    "n": ("two", "three", "five", "seven"),
    "month": ("March", "July", "October", "December"),
    "func": ("read_table", "log_metric", "flow", "create_dataframe", "serve", "load_model"),
    "package": ("mlflow", "prefect", "pyspark", "pandas", "lancedb", "fastapi"),
    "task": ("read a table", "track a run", "retry a task", "cache results", "stream rows"),
    "thing": ("retries", "caching", "partitioning", "timeouts", "logging", "the schema"),
}


def log(message: str) -> None:
    print(f"[serve-load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Item:
    """One request to send: its body as bytes (so that it can be invalid JSON)."""

    body: bytes
    stream: bool
    kind: str = "good"  # or the bad request's kind


@dataclasses.dataclass
class Result:
    kind: str
    stream: bool
    status: int | None  # None: no response (a transport error)
    ok: bool  # a complete answer (good) / what the status says (bad)
    latency_s: float
    problem: str | None = None


def chat_body(model: str, question: str, max_tokens: int, stream: bool, **extra) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


def questions(count: int, seed: int) -> list[str]:
    """``count`` distinct questions from the templates (seeded)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(50 * count):
        template = rng.choice(_QUESTIONS)
        fill = {key: rng.choice(values) for key, values in _FILL.items()}
        seen.setdefault(template.format(**fill), None)
        if len(seen) == count:
            break
    return list(seen)


def fitting_questions(
    model_dir: Path, count: int, max_prompt_tokens: int, seed: int
) -> tuple[list[str], list[int], int | None]:
    """(questions whose rendered chat prompt is at most max_prompt_tokens tokens, their token
    counts, the model's context length), counted as the server counts them: the chat
    rendered by ``infra.serving.chat.render_chat`` with the project's template, tokenized
    as ``TransformersLLM`` does."""
    from transformers import AutoConfig, AutoTokenizer

    from infra.serving.chat import render_chat
    from infra.serving.schemas import ChatMessage
    from pipelines.shared import templates

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    context = getattr(
        AutoConfig.from_pretrained(str(model_dir), local_files_only=True),
        "max_position_embeddings",
        None,
    )
    kept, counts = [], []
    for question in questions(count, seed):
        prompt, _stops = render_chat(
            [ChatMessage(role="user", content=question)], tokenizer, templates
        )
        tokens = len(tokenizer(prompt)["input_ids"])
        if tokens <= max_prompt_tokens:
            kept.append(question)
            counts.append(tokens)
    return kept, counts, context


def bad_items(model: str, question: str, max_tokens: int, context: int | None) -> list[Item]:
    """One request of each malformed or oversized kind, each over a default ``ServerLimits``
    (what ``genai serve`` runs with)."""
    from infra.serving.guards import ServerLimits

    limits = ServerLimits()

    def body(**change) -> dict:
        return {**chat_body(model, question, max_tokens, False), **change}

    kinds = {
        "invalid_json": json.dumps(body()).encode()[:-9],
        "unknown_field": body(temprature=0),
        "too_many_stops": body(stop=[f"<{i}>" for i in range(limits.max_stop_sequences + 1)]),
        "oversized_body": body(
            messages=[{"role": "user", "content": "x" * (limits.max_body_bytes + 1024)}]
        ),
        "n_over_limit": body(n=limits.max_n + 1),
        "bad_temperature": body(temperature=5),
        "wrong_model": body(model=f"{model}-not-served"),
    }
    if context is not None:  # within max_total_tokens: refused by the context check itself
        kinds["context_overflow"] = body(max_tokens=min(context, limits.max_total_tokens // 2))
    return [
        Item(raw if isinstance(raw, bytes) else json.dumps(raw).encode(), False, kind)
        for kind, raw in kinds.items()
    ]


def build_items(args, name: str, qs: list[str], context: int | None):
    """(warm-up items, load items in sending order, the load's well-formed items in order)."""
    rng = random.Random(args.seed)

    def good(i: int) -> Item:
        stream = i % 2 == 1 if args.stream_share == 0.5 else rng.random() < args.stream_share
        body = chat_body(name, qs[i % len(qs)], args.max_tokens, stream)
        return Item(json.dumps(body).encode(), stream)

    warmup = [good(len(qs) // 2 + i) for i in range(args.warmup)]
    goods = [good(i) for i in range(args.requests)]
    n_bad = round(args.bad_share * args.requests)
    bads = []
    for i in range(n_bad):
        kinds = bad_items(name, qs[i % len(qs)], args.max_tokens, context)
        item = kinds[i % len(kinds)]
        # Each parseable kind asks to stream every other time it comes round.
        if item.kind != "invalid_json" and (i // len(kinds)) % 2:
            body = json.loads(item.body)
            item = Item(json.dumps({**body, "stream": True}).encode(), True, item.kind)
        bads.append(item)
    load = goods + bads
    rng.shuffle(load)
    return warmup, load, [item for item in load if item.kind == "good"]


async def send(client, item: Item) -> Result:
    """One request, timed to its last byte; a well-formed one is checked for a complete
    answer."""
    import httpx

    started = time.perf_counter()
    status, problem = None, None
    try:
        if item.stream:
            async with client.stream("POST", CHAT, content=item.body, headers=JSON_HEADERS) as r:
                status = r.status_code
                if status == 200:
                    done = False
                    async for line in r.aiter_lines():
                        if line == DONE_LINE:
                            done = True
                        elif line.startswith('data: {"error"'):
                            problem = "error event in stream"
                    if not done and problem is None:
                        problem = "stream ended without [DONE]"
                else:
                    await r.aread()
        else:
            r = await client.post(CHAT, content=item.body, headers=JSON_HEADERS)
            status = r.status_code
            if status == 200:
                try:
                    choice = r.json()["choices"][0]
                    if not isinstance(choice["message"]["content"], str):
                        problem = "no content"
                except (ValueError, KeyError, IndexError, TypeError):
                    problem = "malformed body"
    except httpx.HTTPError as err:
        problem = f"{type(err).__name__}"
    latency = time.perf_counter() - started
    if item.kind == "good":
        if status != 200 and problem is None:
            problem = f"status {status}"
        ok = problem is None
    else:
        ok = status is not None and 400 <= status < 500
        problem = problem or (None if ok else f"status {status}")
    return Result(item.kind, item.stream, status, ok, latency, problem)


async def run_phase(client, items: list[Item], concurrency: int) -> tuple[list[Result], float]:
    """Send ``items`` with ``concurrency`` workers, each taking the next unsent one."""
    results: list[Result | None] = [None] * len(items)
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, item in queue:
            results[index] = await send(client, item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - started  # type: ignore[return-value]


def make_client(base_url: str, connections: int, timeout_s: float):
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base_url,
        transport=httpx.AsyncHTTPTransport(retries=0, limits=limits),
        timeout=httpx.Timeout(timeout_s),
    )


async def health(base_url: str) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        r = await client.get("/health")
        r.raise_for_status()
        return r.json()


async def watch_queue(base_url: str, stop: asyncio.Event, seen: list[int]) -> None:
    """The batcher's queue length every 0.5 s while the load runs (own connection)."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            try:
                seen.append((await client.get("/health")).json()["queued"])
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None


def cpu_seconds(server_pid: int) -> tuple[float, float, float, float] | None:
    """(wall clock, CPU seconds busy on the whole machine, of the server, of this client),
    for the cores each used on average over a phase; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle
    busy -= sum(getattr(machine, f, 0.0) for f in ("iowait", "guest", "guest_nice"))
    server, client = psutil.Process(server_pid).cpu_times(), psutil.Process().cpu_times()
    return time.monotonic(), busy, server.user + server.system, client.user + client.system


def cores_used(start, end) -> dict | None:
    """Cores the server, this client and every other process used on average between two
    ``cpu_seconds`` (the machine is shared: "others" is the load this run did not make)."""
    if start is None or end is None:
        return None
    wall, busy, server, client = (b - a for a, b in zip(start, end, strict=True))
    return {
        "server": round(server / wall, 2),
        "client": round(client / wall, 2),
        "others": round(max(busy - server - client, 0.0) / wall, 2),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: str, name: str, port: int, log_path: Path, torch_threads: int | None
) -> subprocess.Popen:
    genai = Path(sys.executable).parent / "genai"
    command = [str(genai)] if genai.exists() else [sys.executable, "-m", "flows.cli.main"]
    command += ["serve", "--model", model, "--name", name, "--port", str(port)]
    if torch_threads is not None:
        command += ["--torch-threads", str(torch_threads)]
    log(f"server: {' '.join(command)} (log: {log_path})")
    with open(log_path, "wb") as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def model_threads_logged(log_path: Path) -> int | None:
    """The thread count the server says it runs the model with (``model threads: N of M``)."""
    found = MODEL_THREADS_LINE.search(log_path.read_text(errors="replace"))
    return int(found.group(1)) if found else None


async def wait_ready(base_url: str, server: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            await health(base_url)
            return
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()  # SIGTERM: the server drains and stops
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def server_log_problems(log_path: Path, load_batches: list[int]) -> dict:
    """Error lines, tracebacks and the statuses of the server's request lines (``-``: the
    client went away before a status was sent) in its log, and how long the load phase's
    model calls took (seconds: median, 90th percentile, max), from its batch lines."""
    text = log_path.read_text(errors="replace")
    lines = text.splitlines()
    statuses = collections.Counter(
        match.group(1) for line in lines if (match := REQUEST_LINE.search(line))
    )
    first, last = load_batches
    seconds = [
        float(match.group(2))
        for line in lines
        if (match := BATCH_LINE.search(line)) and first <= int(match.group(1)) <= last
    ]
    return {
        "error_lines": sum(" ERROR " in line or " CRITICAL " in line for line in lines),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "chat_statuses": dict(sorted(statuses.items())),
        "load_batch_s": [round(percentile(seconds, q), 2) for q in (50, 90)]
        + [max(seconds, default=float("nan"))],
    }


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


async def benchmark(args, name: str, items, base_url: str, server: subprocess.Popen) -> dict:
    warmup, load, goods = items
    await wait_ready(base_url, server, args.server_timeout)
    log(f"server ready (pid {server.pid}); warm-up: {len(warmup)} requests")
    async with make_client(base_url, args.concurrency, args.timeout) as client:
        warm, warm_s = await run_phase(client, warmup, args.concurrency)
        warm_failed = [r.problem for r in warm if not r.ok]
        log(f"warm-up: {warm_s:.1f} s, {len(warm_failed)} failed {warm_failed[:3]}")
        rss_start = rss_bytes(server.pid)
        before = await health(base_url)
        cpu_before_load = cpu_seconds(server.pid)
        n_bad = len(load) - len(goods)
        log(f"load: {len(goods)} well-formed + {n_bad} bad at concurrency {args.concurrency}")
        stop, queued = asyncio.Event(), []
        watcher = asyncio.create_task(watch_queue(base_url, stop, queued))
        results, load_s = await run_phase(client, load, args.concurrency)
        stop.set()
        await watcher
        cpu_after_load = cpu_seconds(server.pid)
        after = await health(base_url)
    log(f"load: {load_s:.1f} s")
    lone_items = goods[: args.lone]
    log(f"lone: {len(lone_items)} requests one at a time over one connection")
    async with make_client(base_url, 1, args.timeout) as client:
        cpu_before_lone = cpu_seconds(server.pid)
        lone, lone_s = await run_phase(client, lone_items, 1)
        cpu_after_lone = cpu_seconds(server.pid)
    log(f"lone: {lone_s:.1f} s")
    rss_end = rss_bytes(server.pid)

    good = [r for r in results if r.kind == "good"]
    bad = [r for r in results if r.kind != "good"]
    latencies = [r.latency_s * 1000 for r in good if r.ok]
    completed = sum(r.ok for r in good)
    lone_ok = sum(r.ok for r in lone)
    batches = after["batches"] - before["batches"]
    bad_statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in bad:
        bad_statuses[r.kind][str(r.status) if r.status else (r.problem or "none")] += 1
    return {
        "completed": completed,
        "errors": len(good) - completed,
        "bad_sent": len(bad),
        "refused_bad": sum(r.ok for r in bad),
        "mean_batch": round((after["requests"] - before["requests"]) / batches, 2)
        if batches
        else None,
        "rps": round(completed / load_s, 2),
        "lone_rps": round(lone_ok / lone_s, 2),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "rss_growth": round((rss_end - rss_start) / rss_start, 4),
        "error_kinds": dict(collections.Counter(r.problem for r in good if not r.ok)),
        "rate_limited": sum(r.status == 429 for r in good),
        "lone_errors": len(lone) - lone_ok,
        "bad_statuses": {kind: dict(c) for kind, c in sorted(bad_statuses.items())},
        "largest_batch": after["largest_batch"],
        "max_queued": max(queued, default=None),
        "stream_p50_ms": round(
            percentile([r.latency_s * 1000 for r in good if r.ok and r.stream], 50), 1
        ),
        "plain_p50_ms": round(
            percentile([r.latency_s * 1000 for r in good if r.ok and not r.stream], 50), 1
        ),
        "lone_p50_ms": round(percentile([r.latency_s * 1000 for r in lone if r.ok], 50), 1),
        "load_s": round(load_s, 1),
        "lone_s": round(lone_s, 1),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "cores_used": {
            "load": cores_used(cpu_before_load, cpu_after_load),
            "lone": cores_used(cpu_before_lone, cpu_after_lone),
        },
        "load_batches": [before["batches"] + 1, after["batches"]],  # replaced in main()
    }


def goal_line(result: dict) -> str:
    rps_ratio = result["rps"] / result["lone_rps"] if result["lone_rps"] else float("nan")
    tail = result["p99_ms"] / result["p50_ms"] if result["p50_ms"] else float("nan")
    checks = [
        (f"errors {result['errors']} == 0", result["errors"] == 0),
        (
            f"refused_bad {result['refused_bad']} == bad_sent {result['bad_sent']}",
            result["refused_bad"] == result["bad_sent"],
        ),
        (f"rps / lone_rps {rps_ratio:.2f} >= 5", rps_ratio >= 5),
        (f"p99 / p50 {tail:.2f} <= 3", tail <= 3),
        (f"rss_growth {result['rss_growth']:.3f} < 0.10", result["rss_growth"] < 0.10),
    ]
    return "goal: " + "; ".join(f"{text} {'met' if ok else 'NOT met'}" for text, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models:/genai-rag@champion", help="URI or HF dir")
    parser.add_argument("--requests", type=int, default=None, help="well-formed, default 2000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--lone", type=int, default=None, help="sequential, default 200")
    parser.add_argument("--warmup", type=int, default=None, help="default 64")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 requests, 40 lone")
    parser.add_argument("--bad-share", type=float, default=0.05, help="of --requests, sent too")
    parser.add_argument("--stream-share", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument("--timeout", type=float, default=300, help="per request, s")
    parser.add_argument("--server-timeout", type=float, default=600, help="to be ready, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-log", default=None, help="keep the server's log here")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="the server's; default: the server's own"
    )
    args = parser.parse_args()
    quick = {"requests": 200, "lone": 40, "warmup": 16}
    full = {"requests": 2000, "lone": 200, "warmup": 64}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    from infra.registry import model_dir
    from infra.serving.app import default_model_name

    started = time.perf_counter()
    load_avg = [round(x, 2) for x in os.getloadavg()]
    name = default_model_name(args.model)
    local_dir = model_dir(args.model)  # a models:/ URI is fetched once, here, for both sides
    qs, counts, context = fitting_questions(local_dir, 400, args.max_prompt_tokens, args.seed)
    if context is not None:  # prompt + max_tokens must fit the model, as the server checks
        fitting = [
            (q, c) for q, c in zip(qs, counts, strict=True) if c + args.max_tokens <= context
        ]
        qs, counts = [q for q, _ in fitting], [c for _, c in fitting]
    if not qs:
        raise SystemExit(
            f"no question fits {args.max_prompt_tokens} prompt tokens (and the model's context "
            f"{context} with max_tokens {args.max_tokens})"
        )
    log(f"{name}: {len(qs)} distinct prompts of {min(counts)}-{max(counts)} tokens")
    items = build_items(args, name, qs, context)
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        log_path = Path(tmp) / "server.log"
        server = start_server(args.model, name, port, log_path, args.torch_threads)
        try:
            result = asyncio.run(benchmark(args, name, items, f"http://127.0.0.1:{port}", server))
        except BaseException:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            log("server log tail:\n" + "\n".join(tail))
            raise
        finally:
            stop_server(server)
        result["server_log"] = server_log_problems(log_path, result.pop("load_batches"))
        result["model_threads"] = model_threads_logged(log_path)
        if args.server_log:
            shutil.copyfile(log_path, args.server_log)
    result = {
        "benchmark": "serve_load",
        **result,
        "model": args.model,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "lone": args.lone,
        "warmup": args.warmup,
        "max_tokens": args.max_tokens,
        "prompt_tokens": [min(counts), max(counts)],
        "stream_share": args.stream_share,
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "node": platform.node(),
            "load_avg_start": load_avg,
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    log(goal_line(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
