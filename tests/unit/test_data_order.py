"""Sample order: a pure function of (seed, epoch), the same for any world size, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.data_order import GlobalOrder, ResumableSampler, epoch_permutation

N, SEED, BATCH = 37, 5, 12  # N not a multiple of BATCH: batches straddle epoch boundaries
END = 4 * N + 5  # a bit over four epochs; the last batch is partial
WHOLE = 12 * BATCH  # training ends on a step boundary: end = steps x global batch


def global_batches(world_size: int, start: int = 0, end: int = END) -> list[list[int]]:
    """Each global batch's samples gathered from every rank, in global position order."""
    by_batch: dict[int, list[tuple[int, int]]] = {}
    for rank in range(world_size):
        sampler = ResumableSampler(N, SEED, BATCH, world_size, rank, start, end)
        steps = [
            s.tolist()
            for s in ResumableSampler(N, SEED, BATCH, world_size, rank, start, end).steps()
        ]
        samples = list(sampler)
        # steps() and per-sample iteration agree, step by step
        assert [i for step in steps for i in step] == [s.index for s in samples]
        for s in samples:
            by_batch.setdefault(s.position // BATCH, []).append((s.position, s.index))
    return [[i for _, i in sorted(by_batch[b])] for b in sorted(by_batch)]


def test_the_permutation_is_stable_per_seed_and_epoch_and_differs_across_epochs():
    first = epoch_permutation(1000, seed=1, epoch=0)
    assert sorted(first.tolist()) == list(range(1000))
    np.testing.assert_array_equal(first, epoch_permutation(1000, seed=1, epoch=0))
    assert not np.array_equal(first, epoch_permutation(1000, seed=1, epoch=1))
    assert not np.array_equal(first, epoch_permutation(1000, seed=2, epoch=0))


def test_the_global_order_concatenates_epoch_permutations():
    order = GlobalOrder(N, SEED)
    expected = np.concatenate([epoch_permutation(N, SEED, e) for e in range(3)])
    np.testing.assert_array_equal(order.indices(np.arange(3 * N)), expected)
    assert order.sample_at(N + 2) == (1, N + 2, int(expected[N + 2]))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_world_size_sees_the_same_global_batches(world_size):
    reference = [s.tolist() for s in ResumableSampler(N, SEED, BATCH, end_sample=END).steps()]
    assert global_batches(world_size) == reference
    flat = [i for step in reference for i in step]
    order = GlobalOrder(N, SEED)
    assert flat == order.indices(np.arange(END)).tolist()  # no gaps, no duplicates
    assert len(reference) == -(-END // BATCH)


def test_ranks_split_a_batch_by_stride():
    rank1 = ResumableSampler(N, SEED, BATCH, world_size=4, rank=1)
    positions = [s.position for s in rank1][:6]
    assert positions == [1, 5, 9, 13, 17, 21]
    assert len(next(ResumableSampler(N, SEED, BATCH, 4, 3).steps())) == BATCH // 4


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_resuming_anywhere_yields_exactly_the_remaining_samples(world_size):
    rng = np.random.default_rng(0)
    full = GlobalOrder(N, SEED).indices(np.arange(END)).tolist()
    for start in sorted(set(rng.integers(0, END, size=8).tolist()) | {0, BATCH, END - 1, END}):
        seen = sorted(
            (s.position, s.index)
            for rank in range(world_size)
            for s in ResumableSampler(
                N, SEED, BATCH, world_size, rank, start_sample=start, end_sample=END
            )
        )
        assert [p for p, _ in seen] == list(range(start, END))
        assert [i for _, i in seen] == full[start:]


def test_state_dict_round_trip_resumes_mid_run_with_another_world_size():
    sampler = ResumableSampler(N, SEED, BATCH, world_size=2, rank=0, end_sample=WHOLE)
    steps = sampler.steps()
    for _ in range(5):
        next(steps)
    state = sampler.state_dict()
    assert state["position"] == 5 * BATCH
    # the job restarts on 4 ranks: together they see exactly what the 2-rank job had left
    reference = [
        s.tolist()
        for s in ResumableSampler(N, SEED, BATCH, end_sample=WHOLE, start_sample=5 * BATCH).steps()
    ]
    resumed = []
    for rank in range(4):
        s = ResumableSampler(N, SEED, BATCH, world_size=4, rank=rank, end_sample=WHOLE)
        s.load_state_dict(state)
        resumed.append(list(s.steps()))
    merged = [
        [int(x) for x in np.stack(per_step, axis=1).ravel()]
        for per_step in zip(*resumed, strict=False)
    ]
    assert merged == reference


def test_per_sample_iteration_keeps_the_position_at_block_ends():
    sampler = ResumableSampler(N, SEED, BATCH, world_size=2, rank=1, end_sample=END)
    it = iter(sampler)
    sample = next(it)
    assert sample.position == 1 and sampler.position == 2
    for _ in range(5):
        sample = next(it)
    assert sample.position == 11 and sampler.state_dict()["position"] == 12
    assert len(sampler) == (END - 12) // 2


def test_bad_arguments_and_foreign_states_are_refused():
    with pytest.raises(ValueError, match="global_batch 10 is not divisible by world_size 4"):
        ResumableSampler(N, SEED, 10, world_size=4, rank=0)
    with pytest.raises(ValueError, match="rank 4"):
        ResumableSampler(N, SEED, BATCH, world_size=4, rank=4)
    sampler = ResumableSampler(N, SEED, BATCH)
    with pytest.raises(ValueError, match="seed=6"):
        sampler.load_state_dict({"position": 3, "n_samples": N, "seed": 6})
    with pytest.raises(ValueError, match="n_samples=40"):
        sampler.load_state_dict({"position": 3, "n_samples": 40, "seed": SEED})
