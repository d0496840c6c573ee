"""The order in which pretraining sees its samples: deterministic, resumable, elastic.

The GLOBAL order is the concatenation of epoch permutations, each a pure function of
(seed, epoch): global position ``p`` is sample ``epoch_permutation(n, seed, p // n)[p % n]``.
Global batch ``b`` is positions ``[b * global_batch, (b + 1) * global_batch)``; batches run
across epoch boundaries (no sample is dropped at the end of an epoch).

Ranks split each global batch by position, strided: rank ``r`` of ``world_size`` takes the
positions ``p`` with ``p % world_size == r``. So

* the union over ranks of batch ``b`` is the same set for any world size (elastic
  determinism: a job restarted on more or fewer GPUs trains on exactly the same batches);
* in lockstep, after every rank has taken ``k`` samples of a batch, the consumed samples are a
  contiguous prefix of it, so ONE number — the global position — is the job's whole state;
* resuming at any global position yields exactly the remaining samples: no duplicates, no gaps.

This is the bar set by MosaicML streaming's mid-epoch resumption and elastic determinism, for
a map-style dataset of ``n_samples`` packed sequences (pipelines.pretrain.tokens.TokenShards).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


def epoch_permutation(n_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(n_samples), a pure function of (seed, epoch) (PCG64)."""
    if n_samples < 0 or seed < 0 or epoch < 0:
        raise ValueError(
            f"n_samples, seed and epoch must be >= 0, got {n_samples}, {seed}, {epoch}"
        )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(n_samples)


class Sample(NamedTuple):
    epoch: int
    position: int  # global position in the order (across epochs)
    index: int  # the dataset index at that position


class GlobalOrder:
    """Global position -> (epoch, sample index), for every position across epochs."""

    def __init__(self, n_samples: int, seed: int):
        if n_samples < 1:
            raise ValueError(
                f"the data order needs at least one sample, got n_samples={n_samples}"
            )
        self.n_samples, self.seed = int(n_samples), int(seed)
        self._cached: tuple[int, np.ndarray] | None = None  # the last epoch's permutation

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_permutation(self.n_samples, self.seed, epoch))
        return self._cached[1]

    def sample_at(self, position: int) -> Sample:
        epoch, offset = divmod(int(position), self.n_samples)
        return Sample(epoch, int(position), int(self.permutation(epoch)[offset]))

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Sample indices at ascending global positions (one permutation per epoch touched)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty(len(positions), dtype=np.int64)
        epochs = positions // self.n_samples
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self.permutation(int(epoch))[positions[mask] - epoch * self.n_samples]
        return out


class ResumableSampler:
    """One rank's share of the global order, from ``start_sample`` to ``end_sample``.

    Iterate for ``Sample(epoch, position, index)`` one at a time, or ``steps()`` for one array
    of indices per global batch. ``state_dict()`` holds the global position (what checkpoints
    store); a sampler built with ``start_sample`` = that position, or given it through
    ``load_state_dict``, continues exactly where the job stopped, with any world size.
    Checkpoints are taken at step boundaries, where every rank's position is the same.
    """

    def __init__(
        self,
        n_samples: int,
        seed: int,
        global_batch: int,
        world_size: int = 1,
        rank: int = 0,
        start_sample: int = 0,
        end_sample: int | None = None,
    ):
        if global_batch < 1 or world_size < 1:
            raise ValueError(
                f"global_batch and world_size must be >= 1, got {global_batch} and {world_size}"
            )
        if global_batch % world_size:
            raise ValueError(
                f"global_batch {global_batch} is not divisible by world_size "
                f"{world_size}: every rank must take the same number of samples"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.order = GlobalOrder(n_samples, seed)
        self.global_batch, self.world_size, self.rank = global_batch, world_size, rank
        # where the order stops (exclusive): None = one epoch; training passes steps x batch
        self.end_sample = self.order.n_samples if end_sample is None else int(end_sample)
        self.position = 0
        self._set_position(start_sample)

    @property
    def n_samples(self) -> int:
        return self.order.n_samples

    @property
    def seed(self) -> int:
        return self.order.seed

    @property
    def per_rank_batch(self) -> int:
        return self.global_batch // self.world_size

    def _set_position(self, position: int) -> None:
        if not 0 <= int(position) <= self.end_sample:
            raise ValueError(f"start position {position} is outside [0, {self.end_sample}]")
        self.position = int(position)

    def _my_positions(self, start: int, stop: int) -> np.ndarray:
        first = start + (self.rank - start) % self.world_size
        return np.arange(first, stop, self.world_size, dtype=np.int64)

    def __iter__(self) -> Iterator[Sample]:
        """This rank's samples from the current position on; advances the position."""
        while self.position < self.end_sample:
            stop = min(self.end_sample, self._batch_end(self.position))
            for p in self._my_positions(self.position, stop):
                sample = self.order.sample_at(int(p))
                # all ranks, in lockstep, have now consumed p's block of world_size positions
                self.position = min(stop, (int(p) // self.world_size + 1) * self.world_size)
                yield sample
            self.position = stop

    def steps(self) -> Iterator[np.ndarray]:
        """One array of this rank's sample indices per global batch; advances the position."""
        while self.position < self.end_sample:
            stop = min(self.end_sample, self._batch_end(self.position))
            indices = self.order.indices(self._my_positions(self.position, stop))
            self.position = stop
            yield indices

    def _batch_end(self, position: int) -> int:
        return (position // self.global_batch + 1) * self.global_batch

    def __len__(self) -> int:
        """Samples this rank has left."""
        return len(self._my_positions(self.position, self.end_sample))

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "global_batch": self.global_batch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at a stored global position; refuses a state from another data order.

        The world size may differ (elastic); n_samples and seed may not — they define the
        order. A different global_batch is allowed: positions stay valid, batches regroup.
        """
        for key in ("n_samples", "seed"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state was saved with {key}={state[key]}, this "
                    f"sampler has {key}={getattr(self, key)}: a different data "
                    "order cannot be resumed"
                )
        self._set_position(int(state["position"]))
