"""Exponential moving average of the trainable weights, kept on CPU in fp32 (gathered first
under ZeRO-3); the loop updates it only after the configured start step."""

from __future__ import annotations

import contextlib


def trainable_named_parameters(engine) -> dict:
    """Trainable parameters by name (a tied embedding appears once; frozen ones never move)."""
    return {k: p for k, p in engine.module.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def gathered(engine, params):
    """Full parameters in this block (ZeRO-3 partitions them; other stages hold them whole)."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=None):
            yield
    else:
        yield


def update_ema(ema: dict | None, params: dict, engine, decay: float) -> dict:
    import torch

    with torch.no_grad(), gathered(engine, params.values()):
        if ema is None:  # the first averaged step starts the average at the weights
            return {k: p.detach().float().cpu().clone() for k, p in params.items()}
        for k, p in params.items():
            ema[k].mul_(decay).add_(p.detach().float().cpu(), alpha=1 - decay)
    return ema


def full_state_dict(engine) -> dict:
    """The model's full state dict on CPU (gathered under ZeRO-3); every rank must call it."""
    module = engine.module
    with gathered(engine, module.parameters()):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
