"""Where the application is wired: ``import_path: serve_app.app:build_app`` in every config file.

Serve passes the config file's ``args:`` here; they are validated into ``AppSettings`` (environment
variables fill what the file leaves out) before any replica starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from serve_app.diffusion_model import DiffusionModel
from serve_app.ingress import ingress_deployment
from serve_app.settings import AppSettings, BatchingSettings


def build_app(args: dict[str, Any] | None = None) -> Application:
    settings = AppSettings.model_validate(args or {})
    if not settings.model.startswith("s3://") and Path(settings.model).expanduser().is_dir():
        # Replicas may not share the driver's working directory: hand them an absolute path.
        settings = settings.model_copy(update={"model": str(Path(settings.model).expanduser().resolve())})
    if settings.image_store == "local":
        settings = settings.model_copy(
            update={"data_dir": str(Path(settings.data_dir).expanduser().resolve())}
        )
    # Batching travels as the model's user_config, never as constructor args, so retuning it
    # (here or in a config file's `deployments:` section) reconfigures live replicas instead of
    # restarting them.
    batching = settings.batching.model_dump()
    settings = settings.model_copy(update={"batching": BatchingSettings()})
    model = DiffusionModel.options(user_config=batching).bind(settings)
    return ingress_deployment(settings).bind(model, settings)
