"""Online serving: a trained run behind HTTP (FastAPI on uvicorn) with dynamic batching, hot
checkpoint reloads and Prometheus metrics. Above generation: it imports ``Recommender``, never
the reverse."""

from onerec.serving.app import ServeConfig, create_app
from onerec.serving.batcher import Batcher, run_batch
from onerec.serving.models import LoadedModel, ModelStore, load_model, run_version
from onerec.serving.server import serve

__all__ = [
    "Batcher",
    "LoadedModel",
    "ModelStore",
    "ServeConfig",
    "create_app",
    "load_model",
    "run_batch",
    "run_version",
    "serve",
]
