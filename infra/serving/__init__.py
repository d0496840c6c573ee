"""The model server (OpenAI-compatible, plus later stages' routes); ``app`` builds and runs it."""

from infra.serving.answer_routes import answer_router
from infra.serving.app import create_app, default_model_name, serve
from infra.serving.batching import DEFAULT_BATCH_WINDOW_MS, DEFAULT_MAX_BATCH
from infra.serving.guards import ServerLimits

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_MAX_BATCH",
    "ServerLimits",
    "answer_router",
    "create_app",
    "default_model_name",
    "serve",
]
