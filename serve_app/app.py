"""Where the application is wired: ``import_path: serve_app.app:build_app`` in every config file.

Serve passes the config file's ``args:`` here; they are validated into ``AppSettings`` (environment
variables fill what the file leaves out) before any replica starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application

from bot_gateway.surface import DiscordSurface
from serve_app.api.ingress import ingress_deployment
from serve_app.config.settings import AppSettings, BatchingSettings
from serve_app.engine.deployment import DiffusionModel


def resolved_sources(settings: AppSettings) -> AppSettings:
    """Model and LoRA sources as every replica can read them.

    Replicas may not share the driver's working directory: local paths become absolute. The
    bucket reaches a cluster as RAYDIFFUSION_S3_BUCKET, so a config file writes it ``{s3_bucket}``.
    """

    def resolve(source: str) -> str:
        if "{s3_bucket}" in source:
            if not settings.s3_bucket:
                raise ValueError(f"{source!r} names {{s3_bucket}}, but no s3_bucket is configured")
            return source.replace("{s3_bucket}", settings.s3_bucket)
        path = Path(source).expanduser()
        return str(path.resolve()) if not source.startswith("s3://") and path.exists() else source

    models = [
        entry.model_copy(
            update={
                "model": resolve(entry.model),
                "loras": [lora.model_copy(update={"source": resolve(lora.source)}) for lora in entry.loras],
            }
        )
        for entry in settings.models
    ]
    # Every other weight source a config file may point at the bucket (the standalone safety
    # checker, dedicated pipelines, VAEs): each is read by replicas as given.
    extra = {
        name: resolve(value)
        for name in ("safety_checker_model", "inpainting_model", "upscaler_model")
        if (value := getattr(settings, name))
    }
    vaes = ("fp16_vae", "preview_vae")
    speed = settings.speed.model_copy(
        update={name: resolve(value) for name in vaes if (value := getattr(settings.speed, name))}
    )
    return settings.model_copy(
        update={"model": resolve(settings.model), "models": models, "speed": speed, **extra}
    )


def build_app(args: dict[str, Any] | None = None) -> Application:
    """``import_path: serve_app.app:build_app``: the config file's ``args:`` in, the application out."""
    settings = resolved_sources(AppSettings.model_validate(args or {}))
    if settings.image_store == "local":
        settings = settings.model_copy(
            update={"data_dir": str(Path(settings.data_dir).expanduser().resolve())}
        )
    return compose(settings)


def compose(
    settings: AppSettings,
    model_options: dict[str, Any] | None = None,
    ingress_options: dict[str, Any] | None = None,
) -> Application:
    """The one place the deployments are bound: the ingress in front of the model deployment, with
    Discord plugged in as a client of the job runner. Options are what a config file's
    ``deployments:`` section would set (tests use them for small, easily overloaded apps)."""
    # Batching travels as the model's user_config, never as a constructor argument, so retuning it
    # (here or in a config file's `deployments:` section) reconfigures live replicas instead of
    # restarting them: every replica gets the settings without it.
    batching = settings.batching.model_dump()
    settings = settings.model_copy(update={"batching": BatchingSettings()})
    model = DiffusionModel.options(**{"user_config": batching, **(model_options or {})}).bind(settings)
    # One deployment per GPU class the catalogue names beyond the default model's: its own
    # replicas, node type (ray_actor_options in the config's `deployments:` under
    # DiffusionModel-<class>) and autoscaling, so a FLUX class scales to zero apart from SD 1.5's.
    class_models = {
        gpu_class: DiffusionModel.options(
            **{"user_config": batching, **(model_options or {}), "name": f"DiffusionModel-{gpu_class}"}
        ).bind(settings, gpu_class)
        for gpu_class in settings.catalogue.gpu_classes[1:]
    }
    ingress = ingress_deployment(settings)
    if ingress_options:
        ingress = ingress.options(**ingress_options)
    # Discord is one more client of the job runner: the API never imports it, it is plugged in here.
    return ingress.bind(model, settings, [DiscordSurface()], class_models)
