"""A toy objective that is not a language model, trained through the shared loop: a small 1-D
convolutional denoiser learns to predict the noise added to sine waves (a diffusion objective
in miniature), in two phases of different signal lengths.

Run as a rank: ``python tests/toy_denoiser.py --config cfg.json --out dir`` (what the
kill-and-resume tests start and kill); ``train(config, out_dir)`` runs it in-process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.training.config import TrainerConfig  # noqa: E402

LENGTHS = {"short": 16, "long": 32}  # samples per wave in each phase: the "resolution"


class Waves:
    """Sine waves of one length, a random frequency and phase each (fixed by ``seed``)."""

    def __init__(self, n: int, length: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        freq = rng.uniform(0.5, 3.0, size=(n, 1))
        shift = rng.uniform(0, 2 * np.pi, size=(n, 1))
        grid = np.linspace(0, 2 * np.pi, length)[None, :]
        self.waves = np.sin(freq * grid + shift).astype(np.float32)[:, None, :]

    def __len__(self) -> int:
        return len(self.waves)

    def batch(self, indices) -> np.ndarray:
        return self.waves[np.asarray(indices)]


class NoisePrediction:
    """Mix noise into a clean wave at a random level t; the model predicts the noise."""

    unit = "samples"

    def loss(self, engine, batch, step: int, rng):
        import torch

        noise = torch.randn(batch.shape, generator=rng, device=batch.device)
        t = torch.rand((batch.shape[0], 1, 1), generator=rng, device=batch.device)
        noisy = batch * (1 - t).sqrt() + noise * t.sqrt()
        return torch.nn.functional.mse_loss(engine(noisy), noise)

    def eval_terms(self, engine, batch, rng) -> tuple[float, float]:
        return float(self.loss(engine, batch, 0, rng)) * len(batch), len(batch)

    def count(self, batch) -> int:
        return len(batch)

    def units_per_sample(self, data) -> int:
        return 1

    def flops_per_unit(self, engine, data) -> float | None:
        return None


def build_model(seed: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv1d(1, 8, 5, padding=2),
        torch.nn.Dropout(0.1),  # draws from torch's global generator, which checkpoints keep
        torch.nn.SiLU(),
        torch.nn.Conv1d(8, 1, 5, padding=2),
    )


def train(config: TrainerConfig, out_dir: Path | str) -> dict:
    from safetensors.torch import save_file

    from pipelines.training.loop import rank_context, run_training

    out_dir = Path(out_dir)
    data = {name: Waves(64, length, seed=i) for i, (name, length) in enumerate(LENGTHS.items())}
    held_out = {
        name: Waves(16, length, seed=10 + i) for i, (name, length) in enumerate(LENGTHS.items())
    }

    def export(engine, ema) -> dict:
        if ema is not None:
            save_file(
                {k: v.contiguous() for k, v in ema.items()}, str(out_dir / "ema.safetensors")
            )
        return {}

    with rank_context(config):
        return run_training(
            config,
            build_model(config.seed),
            NoisePrediction(),
            data,
            out_dir,
            eval_data=held_out,
            export=export,
        )


def main(argv: list[str] | None = None) -> int:
    from pipelines.training.rank import rank_main

    parser = argparse.ArgumentParser(description="Train the toy denoiser as one rank.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return rank_main(TrainerConfig, args.config, None, lambda config: train(config, args.out))


if __name__ == "__main__":
    sys.exit(main())
