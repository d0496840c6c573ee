"""What the shared loop trains for: an objective turns a batch into a loss and says what its
throughput counts. Language-model pretraining and LoRA fine-tuning use ``NextTokenPrediction``;
other stages (U-Net diffusion) bring their own objective with the same four members.

Every random draw an objective makes comes from the ``rng`` the loop hands it: a generator
seeded by (seed, global step, rank), so a resumed run draws exactly what an uninterrupted one
would, with no random state to checkpoint. Dropout inside the model draws from torch's global
generator, which the loop seeds once and checkpoints per rank (``training.checkpoints``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from pipelines.training.config import IGNORE_INDEX

TRAIN_STREAM, EVAL_STREAM = 0, 1  # separate seed streams: evaluation never shifts training draws


class Objective(Protocol):
    unit: str  # what throughput counts: "tokens" (tokens_per_s) or "samples" (samples_per_s)

    def loss(self, engine, batch, step: int, rng) -> Any:
        """The scalar loss of one micro-batch at global optimizer step ``step`` (1-based)."""

    def eval_terms(self, engine, batch, rng) -> tuple[float, float]:
        """(summed loss, weight) of one validation micro-batch: val_loss = sum / weight."""

    def count(self, batch) -> int:
        """Units (tokens, samples) in one rank's batch, for the throughput figure."""

    def units_per_sample(self, data) -> int:
        """Units one sample of ``data`` holds (its padded width for text, 1 for images)."""

    def flops_per_unit(self, engine, data) -> float | None:
        """Model FLOPs per unit (forward + backward) for MFU; None when unknown."""


def step_generator(seed: int, step: int, rank: int, device="cpu", stream: int = TRAIN_STREAM):
    """A torch generator that is a pure function of (seed, step, rank, stream)."""
    import torch

    (state,) = np.random.SeedSequence([seed, step, rank, stream]).generate_state(1, np.uint64)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(state))
    return generator


class NextTokenPrediction:
    """Causal-LM loss on (input_ids, labels) batches; labels of IGNORE_INDEX are not scored."""

    unit = "tokens"

    def loss(self, engine, batch, step: int, rng):
        input_ids, labels = batch
        return engine(input_ids=input_ids, labels=labels).loss

    def eval_terms(self, engine, batch, rng) -> tuple[float, float]:
        input_ids, labels = batch
        loss = engine(input_ids=input_ids, labels=labels).loss.double().cpu()
        scored = int((labels[:, 1:] != IGNORE_INDEX).sum())  # the model shifts labels by one
        return float(loss) * scored, scored

    def count(self, batch) -> int:
        return batch[0].numel()  # fine-tuning batches are cut to their longest row

    def units_per_sample(self, data) -> int:
        return data.seq_len

    def flops_per_unit(self, engine, data) -> float | None:
        from pipelines.training.models import flops_per_token

        return flops_per_token(engine.module.config, data.seq_len)
