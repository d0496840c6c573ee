"""A trained model as an HF model dir (safetensors + config + tokenizer), raw or EMA weights,
written to a temp dir and renamed into place."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from pipelines.training.checkpoints import load_safetensors, remove_dir
from pipelines.training.hf import load_tokenizer


def export_model(
    engine_or_model,
    tokenizer_dir: Path | str,
    out_dir: Path | str,
    use_ema: bool = False,
    ema_weights: dict | Path | str | None = None,
    state_dict: dict | None = None,
) -> Path:
    """An HF model dir (safetensors + config + tokenizer) loadable by AutoModelForCausalLM.

    ``use_ema`` exports ``ema_weights`` (a dict by parameter name, or an ``ema.safetensors``
    path) instead of the raw weights; ``state_dict`` overrides the raw weights (ZeRO-3 callers
    pass the gathered one). Written to a temp dir and renamed into place.
    """
    model = getattr(engine_or_model, "module", engine_or_model)
    if use_ema:
        if ema_weights is None:
            raise ValueError("use_ema=True needs ema_weights (EMA was not enabled or not reached)")
        if not isinstance(ema_weights, dict):
            from safetensors.torch import load_file

            ema_weights = load_safetensors(Path(ema_weights), load_file)
        raw = state_dict or {k: v.detach().cpu() for k, v in model.state_dict().items()}
        owner = {id(p): n for n, p in model.named_parameters()}  # tied: one object, one name
        state_dict = dict(raw)
        for k, v in model.state_dict(keep_vars=True).items():
            name = k if k in ema_weights else owner.get(id(v))
            if name in ema_weights:  # a tied output projection follows its averaged embedding
                state_dict[k] = ema_weights[name]
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        load_tokenizer(tokenizer_dir).save_pretrained(str(tmp))
        if out_dir.exists():
            remove_dir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
