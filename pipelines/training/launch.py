"""Start the training ranks in their own process group, stream their log, enforce a timeout.

The caller (a Prefect task, a benchmark, a test) stays outside the ranks: it never imports
torch.distributed state or holds a rank's memory, so a crashed or hung rank cannot take the
flow with it.

* One rank on this machine: one ``python -m <module>`` process (``pipelines.pretrain.train``,
  ``pipelines.finetune.lora``) with the rank environment set (RANK=0, WORLD_SIZE=1, a free
  MASTER_PORT).
* Several ranks, or several machines: DeepSpeed's launcher (``deepspeed.launcher.runner``)
  with ``--num_gpus`` ranks per node — on CPU one rank per slot, gloo — and, for multi-node,
  a hostfile (``host slots=N`` lines) and passwordless ssh, as DeepSpeed documents.
  Its per-node launcher kills the node's other ranks when one dies.
* Either way the whole group gets SIGTERM, then SIGKILL, when the timeout passes or the
  caller is interrupted (a Prefect timeout or cancellation raises in the caller).

The ranks' result is ``<out>/summary.json`` (rank 0 writes it atomically at the very end); a
launch that exits 0 without it is an error, as is any non-zero exit, with the log's tail.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from pipelines.training.config import TrainerConfig
from pipelines.training.engine import free_port
from pipelines.training.loop import SUMMARY

REPO = Path(__file__).resolve().parents[2]
RANK_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CROSS_RANK",
    "CROSS_SIZE",
)
TERM_GRACE_S = 10  # seconds between SIGTERM and SIGKILL of the group
LOG_TAIL_LINES = 40  # lines of the log quoted in a failure
CONFIG_FILE = "train_config.json"  # in the run dir: the config the ranks were started with


class TrainingFailed(RuntimeError):
    """The training processes exited with an error, timed out, or left no summary."""


def training_command(
    module: str,
    config_file: Path,
    out_dir: Path,
    script_args: list[str],
    ranks: int = 1,
    hostfile: Path | None = None,
    master_port: int | None = None,
) -> list[str]:
    """The command line that starts every rank of ``module``'s CLI (see the module docstring)."""
    from infra.settings import load_settings

    script = [
        "--config",
        str(config_file),
        "--out",
        str(out_dir),
        *script_args,
        "--workspace",
        str(load_settings().home),
    ]
    if ranks == 1 and hostfile is None:
        return [sys.executable, "-u", "-m", module, *script]
    launcher = [
        sys.executable,
        "-u",
        "-m",
        "deepspeed.launcher.runner",
        "--master_port",
        str(master_port or free_port()),
        "--no_local_rank",
    ]
    if hostfile is None:  # one machine: the ranks are local slots; no ssh involved
        launcher += [
            "--num_gpus",
            str(ranks),
            "--master_addr",
            "127.0.0.1",
            "--hostfile",
            "/dev/null",
        ]
    else:  # slots per host come from the hostfile; ranks caps them per node
        launcher += ["--hostfile", str(hostfile), "--num_gpus", str(ranks)]
    return [*launcher, "--module", module, *script]


def rank_environment(ranks: int, hostfile: Path | None, master_port: int) -> dict[str, str]:
    """This process's environment minus any inherited rank variables, plus what one lone rank
    needs (the DeepSpeed launcher sets the variables itself for each of its ranks)."""
    env = {k: v for k, v in os.environ.items() if k not in RANK_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if ranks == 1 and hostfile is None:
        env.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(master_port),
        )
    return env


def launch_training(
    config: TrainerConfig,
    shards_dir: Path | str,
    out_dir: Path | str,
    ranks: int = 1,
    hostfile: Path | str | None = None,
    timeout_s: float = 3600,
    on_line: Callable[[str], None] | None = None,
    tokenizer_dir: Path | str | None = None,
) -> dict:
    """Pretraining (``pipelines.pretrain.train``) to its end; see ``launch``."""
    script = ["--shards", str(shards_dir)]
    if tokenizer_dir is not None:
        script += ["--tokenizer", str(tokenizer_dir)]
    return launch(
        "pipelines.pretrain.train",
        config,
        out_dir,
        script,
        ranks=ranks,
        hostfile=hostfile,
        timeout_s=timeout_s,
        on_line=on_line,
    )


def launch_finetune(
    config: BaseModel,
    base_dir: Path | str,
    train_file: Path | str,
    out_dir: Path | str,
    eval_file: Path | str | None = None,
    base_ref: str | None = None,
    ranks: int = 1,
    hostfile: Path | str | None = None,
    timeout_s: float = 3600,
    on_line: Callable[[str], None] | None = None,
) -> dict:
    """Fine-tuning (``pipelines.finetune.lora``) to its end; see ``launch``."""
    script = ["--base", str(base_dir), "--train", str(train_file)]
    if eval_file is not None:
        script += ["--eval", str(eval_file)]
    if base_ref is not None:
        script += ["--base-ref", base_ref]
    return launch(
        "pipelines.finetune.lora",
        config,
        out_dir,
        script,
        ranks=ranks,
        hostfile=hostfile,
        timeout_s=timeout_s,
        on_line=on_line,
    )


def launch(
    module: str,
    config: BaseModel,
    out_dir: Path | str,
    script_args: list[str],
    ranks: int = 1,
    hostfile: Path | str | None = None,
    timeout_s: float = 3600,
    on_line: Callable[[str], None] | None = None,
) -> dict:
    """Run a training module's ranks to their end in a new process group; returns rank 0's
    summary. ``on_line`` gets every log line as it arrives (rank 0's JSON records among
    them). Rerunning with the same ``out_dir`` resumes from its last complete checkpoint.
    """
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)  # only this launch's summary counts
    config_file = out_dir / CONFIG_FILE
    config_file.write_text(config.model_dump_json(indent=1))
    port = free_port()
    hostfile = Path(hostfile) if hostfile else None
    command = training_command(module, config_file, out_dir, script_args, ranks, hostfile, port)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=rank_environment(ranks, hostfile, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )  # its own process group
    reader = threading.Thread(target=_pump, args=(process.stdout, tail, on_line), daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(process)
        reader.join(timeout=5)
        raise TrainingFailed(
            f"training timed out after {timeout_s:.0f} s and was killed; "
            f"rerun to resume from its last checkpoint in {out_dir}. Log "
            f"tail:\n{_joined(tail)}"
        ) from None
    finally:
        if process.poll() is None:  # the caller was interrupted: take the ranks down too
            stop_group(process)
    reader.join(timeout=5)
    return _summary(out_dir, returncode, tail)


def _pump(stream, tail: collections.deque, on_line) -> None:
    for line in stream:
        line = line.rstrip("\n")
        tail.append(line)
        if on_line:
            try:
                on_line(line)
            except Exception as err:  # a logging hiccup must not stall the pipe
                tail.append(f"(log handler failed: {err!r})")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _summary(out_dir: Path, returncode: int, tail) -> dict:
    if returncode != 0:
        how = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        raise TrainingFailed(
            f"training {how}; rerun to resume from the last complete "
            f"checkpoint in {out_dir / 'checkpoints'}. Log tail:\n"
            f"{_joined(tail)}"
        )
    path = out_dir / SUMMARY
    if not path.is_file():
        raise TrainingFailed(f"training exited 0 but wrote no {path}. Log tail:\n{_joined(tail)}")
    return json.loads(path.read_text())


def _joined(tail) -> str:
    return "\n".join(tail)
