"""Where the application is wired: ``import_path: serve_app.app:build_app`` in every config file.

Serve passes the config file's ``args:`` here; they are validated into ``AppSettings`` (environment
variables fill what the file leaves out) before any replica starts.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.diffusion_model import DiffusionModel
from serve_app.ingress import Ingress
from serve_app.settings import AppSettings


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = AppSettings.model_validate(args or {})
    model = DiffusionModel.options(user_config=settings.batching.model_dump()).bind(settings)
    return Ingress.bind(model, settings)
