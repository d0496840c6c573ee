"""Crash-safe checkpoints: a tag ``stepNNNNNNNN`` is trusted only once its ``COMPLETE`` marker
exists (it lists every file with its SHA-256); our own ``latest`` pointer moves (write temp +
``os.replace``) only after the marker, so a kill anywhere leaves the previous complete tag in
charge. Our own files are JSON and safetensors; nothing we wrote is ever unpickled.

Fault points: ``ckpt.during_save`` (DeepSpeed's files written, no marker yet) and
``train.after_checkpoint`` (``latest`` just moved)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from infra.faults import fault_point
from infra.files import fsync_dir, write_json_atomic, write_text_atomic
from pipelines.training.config import TrainerConfig
from pipelines.training.engine import barrier

CHECKPOINTS = "checkpoints"  # under out_dir
LATEST = "latest"  # our pointer file in the checkpoint dir: the newest COMPLETE tag's name
COMPLETE = "COMPLETE"  # in a tag dir, written last: {files: {relpath: {bytes, sha256}}}
TRAINER_STATE = "trainer_state.json"  # step, phase, sampler position, config (rank 0)
EMA_FILE = "ema.safetensors"  # EMA weights (rank 0), keyed by parameter name
TAG_RE = re.compile(r"^step(\d{8})$")


def tag_name(step: int) -> str:
    return f"step{step:08d}"


def _tags(ckpt_dir: Path) -> list[str]:
    """Tag dir names, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name))


def _is_complete(tag_dir: Path) -> bool:
    return (tag_dir / COMPLETE).is_file()


def read_latest(ckpt_dir: Path) -> str | None:
    try:
        return (Path(ckpt_dir) / LATEST).read_text().strip() or None
    except FileNotFoundError:
        return None


def find_resume_checkpoint(ckpt_dir: Path | str) -> str | None:
    """The tag to resume from: our ``latest`` pointer when it names a complete tag, else the
    newest tag with ``COMPLETE``; None for a fresh run (no tag dirs at all).

    Tag dirs without any complete one mean progress we cannot trust: that is an error, never
    a silent restart from scratch over them.
    """
    ckpt_dir = Path(ckpt_dir)
    tags = _tags(ckpt_dir)
    if not tags:
        return None
    latest = read_latest(ckpt_dir)
    if latest and latest in tags and _is_complete(ckpt_dir / latest):
        return latest
    complete = [t for t in tags if _is_complete(ckpt_dir / t)]
    if not complete:
        raise RuntimeError(
            f"checkpoint dir {ckpt_dir} holds {len(tags)} tag dir(s) ({', '.join(tags)}) but "
            f"none has its {COMPLETE} marker: every save was interrupted. Refusing to start "
            f"from scratch over them; delete {ckpt_dir} to start over"
        )
    return complete[-1]


def save_checkpoint(
    engine,
    ckpt_dir: Path,
    step: int,
    position: dict,
    ema: dict | None,
    config: TrainerConfig,
    rank: int = 0,
) -> Path:
    """DeepSpeed's files, then ours, then the COMPLETE marker, then ``latest``, then pruning.

    ``position``: where the data order stands, ``{"phase": index, "sampler": state}``."""
    import torch
    from safetensors.torch import save_file

    tag = tag_name(step)
    tag_dir = Path(ckpt_dir) / tag
    state = {"step": step, **position, "config": config.model_dump()}
    engine.save_checkpoint(
        str(ckpt_dir),
        tag=tag,
        client_state=state,
        save_latest=False,
        exclude_frozen_parameters=has_frozen(engine),
    )
    write_json_atomic(tag_dir / f"rng-rank{rank:05d}.json", _rng_state())
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tag_dir / f"rng-rank{rank:05d}.safetensors"))
    if rank == 0:
        write_json_atomic(tag_dir / TRAINER_STATE, state)
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.items()}, str(tag_dir / EMA_FILE))
    barrier()
    fault_point("ckpt.during_save")
    if rank == 0:
        write_json_atomic(
            tag_dir / COMPLETE, {"tag": tag, "step": step, "files": _manifest(tag_dir)}
        )
        fsync_dir(tag_dir)
        write_text_atomic(Path(ckpt_dir) / LATEST, tag)
        fsync_dir(Path(ckpt_dir))
        fault_point("train.after_checkpoint")
        _prune(Path(ckpt_dir), config.keep_checkpoints)
    barrier()
    return tag_dir


def has_frozen(engine) -> bool:
    """Frozen weights (an adapter's base) are not checkpointed: they never change."""
    return any(not p.requires_grad for p in engine.module.parameters())


def _rng_state() -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng(tag_dir: Path, rank: int) -> None:
    import torch
    from safetensors.torch import load_file

    path = tag_dir / f"rng-rank{rank:05d}.json"
    if not path.is_file():  # another world size: this rank keeps its seeded RNGs
        return
    state = _read_json(path)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = load_safetensors(tag_dir / f"rng-rank{rank:05d}.safetensors", load_file)
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])


def _manifest(tag_dir: Path) -> dict:
    """Every file of the tag with its size and SHA-256, each fsynced: the marker that lists
    them must never reach the disk before they do."""
    files = {}
    for path in sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != COMPLETE):
        files[str(path.relative_to(tag_dir))] = {
            "bytes": path.stat().st_size,
            "sha256": _sha256(path, fsync=True),
        }
    return files


def verify_checkpoint(tag_dir: Path | str) -> None:
    """Every file the COMPLETE marker lists is there with its size and SHA-256."""
    tag_dir = Path(tag_dir)
    marker = _read_json(tag_dir / COMPLETE)
    for rel, meta in marker.get("files", {}).items():
        path = tag_dir / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint file {path} (listed in {tag_dir / COMPLETE}) is missing"
            )
        if path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            raise ValueError(
                f"checkpoint file {path} is corrupt: its size or SHA-256 differs "
                f"from {tag_dir / COMPLETE}; resume from an older tag by deleting "
                f"{tag_dir}"
            )


def load_checkpoint(engine, ckpt_dir: Path, tag: str, max_steps: int, rank: int):
    """Restore model/optimizer/scheduler (DeepSpeed), RNGs and EMA; returns (step, EMA,
    data position ``{"phase": index, "sampler": state}``)."""
    from safetensors.torch import load_file

    tag_dir = ckpt_dir / tag
    verify_checkpoint(tag_dir)
    try:
        load_path, _ = engine.load_checkpoint(
            str(ckpt_dir), tag=tag, load_module_strict=not has_frozen(engine)
        )
    except Exception as err:
        raise RuntimeError(f"cannot load DeepSpeed checkpoint {tag_dir}: {err}") from err
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint to load in {tag_dir}")
    state = _read_json(tag_dir / TRAINER_STATE)
    if int(state["step"]) > max_steps:
        raise ValueError(
            f"checkpoint {tag_dir} is at step {state['step']}, past this config's "
            f"max_steps {max_steps}; raise max_steps to continue it"
        )
    _restore_rng(tag_dir, rank)
    ema = (
        load_safetensors(tag_dir / EMA_FILE, load_file) if (tag_dir / EMA_FILE).is_file() else None
    )
    # checkpoints from before phases existed hold one sampler: phase 0's
    position = {"phase": int(state.get("phase", 0)), "sampler": state["sampler"]}
    return int(state["step"]), ema, position


def _prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete tags; drop older ones and older incomplete leftovers."""
    tags = _tags(ckpt_dir)
    complete = [t for t in tags if _is_complete(ckpt_dir / t)]
    kept = set(complete[-keep:])
    oldest_kept = min(kept) if kept else None
    for t in tags:
        if t in kept:
            continue
        if t in complete or (oldest_kept and t < oldest_kept):
            remove_dir(ckpt_dir / t)


def discard_incomplete_tags(ckpt_dir: Path) -> None:
    """A resumed run rewrites any tag a crash left without its marker."""
    for t in _tags(ckpt_dir):
        if not _is_complete(ckpt_dir / t):
            remove_dir(ckpt_dir / t)


def remove_dir(directory: Path) -> None:
    trash = directory.with_name(f".{directory.name}.discarded-{uuid.uuid4().hex[:8]}")
    os.rename(directory, trash)  # atomic: the tag vanishes whole
    shutil.rmtree(trash, ignore_errors=True)


def _sha256(path: Path, fsync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return h.hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt (not valid JSON: {err})") from None


def load_safetensors(path: Path, load_file) -> dict:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} is missing") from None
    except Exception as err:
        raise ValueError(
            f"checkpoint file {path} is corrupt (not readable safetensors: {err})"
        ) from None
