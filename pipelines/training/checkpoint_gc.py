"""Which checkpoints of the workspace's training runs a clean-up may remove.

Every run trained through the loop keeps its tags in ``<run dir>/checkpoints/`` (pretraining
under ``runs/pretrain/``, fine-tuning under ``runs/finetune/``). The loop prunes its own run to
its config's ``keep_checkpoints`` as it saves; this sweeps every run, finished or abandoned, to
the newest ``keep`` complete tags, with the writer's own rules (``checkpoints.py``):

- the tag a resume would load (``find_resume_checkpoint``: the ``latest`` pointer when it names
  a complete tag, else the newest complete one) is always kept, whatever ``keep`` says;
- a tag without its ``COMPLETE`` marker newer than that one may be being written now: left;
  an incomplete tag older than it is a crashed save that no resume reads again: removed;
- a dir whose tags are all incomplete stops its run with an error naming it, never a silent
  restart: the user decides, so it is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from infra.disk import Left, Removal, Sweep, tree_bytes

# the writer's own helpers: gc's idea of a tag and of a complete one never drifts from theirs
from pipelines.training.checkpoints import (
    CHECKPOINTS,
    _is_complete,
    _tags,
    find_resume_checkpoint,
)

CATEGORY = "checkpoints"


def checkpoint_dirs(runs_root: Path | str) -> list[Path]:
    """Every ``checkpoints/`` dir of a run under ``runs_root`` (not looking inside them)."""
    found = []
    for root, dirs, _files in os.walk(runs_root):
        if CHECKPOINTS in dirs:
            found.append(Path(root) / CHECKPOINTS)
            dirs.remove(CHECKPOINTS)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
    return sorted(found)


def stale_checkpoints(ckpt_dir: Path | str, keep: int) -> Sweep:
    """One run's tags beyond the newest ``keep`` complete ones (see the module docstring)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ckpt_dir = Path(ckpt_dir)
    sweep = Sweep(CATEGORY)
    try:
        resume = find_resume_checkpoint(ckpt_dir)
    except RuntimeError:  # tag dirs, none complete: the run refuses to start over them
        sweep.left.append(Left(str(ckpt_dir), "no complete checkpoint: the run stops on it"))
        return sweep
    if resume is None:
        return sweep
    tags = _tags(ckpt_dir)
    complete = [t for t in tags if _is_complete(ckpt_dir / t)]
    kept = set(complete[-keep:]) | {resume}
    for tag in tags:
        path = ckpt_dir / tag
        if tag in kept:
            continue
        if tag in complete:
            reason = f"older than the newest {keep} complete checkpoints (resume: {resume})"
        elif tag < resume:
            reason = f"incomplete save older than {resume}, the one a resume loads"
        else:
            sweep.left.append(Left(str(path), "incomplete: it may be being written"))
            continue
        sweep.removals.append(Removal(str(path), tree_bytes(path), reason))
    return sweep


def stale_checkpoints_of_runs(runs_root: Path | str, keep: int) -> Sweep:
    """:func:`stale_checkpoints` of every run under ``runs_root``."""
    sweep = Sweep(CATEGORY)
    for ckpt_dir in checkpoint_dirs(runs_root):
        one = stale_checkpoints(ckpt_dir, keep)
        sweep.removals += one.removals
        sweep.left += one.left
    return sweep
