"""What a rank's command line does around the training function: workspace environment,
config file, logging; prints the summary as JSON."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.training.config import TrainerConfig


def rank_main(
    config_model: type[TrainerConfig],
    config_file: str,
    workspace: str | None,
    run: Callable[[TrainerConfig], dict],
) -> int:
    """What a rank's CLI does around ``run``: workspace environment, config, logging."""
    if workspace:
        os.environ["GENAI_HOME"] = workspace
    from infra.settings import apply_environment

    apply_environment()  # offline HF, temp and extension dirs inside the workspace
    try:
        config = config_model.model_validate_json(Path(config_file).read_text())
    except (OSError, ValueError) as err:
        print(f"error: config {config_file}: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per export would flood the task's log
    print(json.dumps(run(config)))
    return 0
