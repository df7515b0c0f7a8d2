"""Where images and job records live: ``create_store`` picks the local folder or the S3 bucket."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.storage.base import IMAGE_ID, ImageStore, new_image_id
from serve_app.storage.local import LocalImageStore
from serve_app.storage.s3 import S3ImageStore

__all__ = [
    "IMAGE_ID",
    "ImageStore",
    "LocalImageStore",
    "S3ImageStore",
    "create_store",
    "save_results",
    "stored_image_id",
]


def create_store(settings: AppSettings) -> ImageStore:
    if settings.image_store == "s3":
        if not settings.s3_bucket:
            raise ValueError("image_store 's3' needs s3_bucket")
        return S3ImageStore(
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_region,
            settings.s3_endpoint_url,
            settings.image_url_expiry_s,
        )
    return LocalImageStore(settings.data_dir)


def save_results(
    store: ImageStore,
    settings: AppSettings,
    jobs: list[ImageSpec],
    results: list[ImageResult],
    source: str,
    prediction_id: str | None = None,
) -> list[str]:
    """Store each image with the JSON record of how it was made; returns the new image ids."""
    image_ids = []
    for job, result in zip(jobs, results, strict=True):
        now = time.time()
        image_id = new_image_id(now)
        record = {
            "id": image_id,
            "created": now,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "width": job.width,
            "height": job.height,
            "steps": job.steps,
            "guidance_scale": job.guidance_scale,
            # FLUX.1's negative prompt applies only with it above 1: without it a stored FLUX image
            # with a negative prompt could not be varied or re-made from its record.
            "true_cfg_scale": job.true_cfg_scale,
            "scheduler": job.scheduler,
            "kind": job.kind,
            "strength": None if job.kind == "txt2img" else job.strength,
            "seed": result.seed,
            "model": job.model or settings.catalogue.default.name,
            "loras": [{"name": name, "weight": weight} for name, weight in job.loras],
            "timings": {
                "queue_s": round(result.queue_s, 3),
                "render_s": round(result.render_s, 3),
                "batch_size": result.batch_size,
            },
            "source": source,
            "prediction_id": prediction_id,
            # The safety checker flagged it: the stored PNG is its blacked-out copy.
            "nsfw_content_detected": result.nsfw_content_detected,
        }
        store.put_image(image_id, result.png, record)
        image_ids.append(image_id)
    return image_ids


def stored_image_id(url: str, store: ImageStore, base_url: str) -> str | None:
    """The id of the stored image ``url`` points to, if it is a URL this service gives out.

    The URL must be exactly what the store makes for that id (scheme, host and path; the query of a
    presigned URL may differ), or the path alone: a look-alike on another host is not ours.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    name = parts.path.rsplit("/", 1)[-1]
    image_id = name.removesuffix(".png")
    if name == image_id or not IMAGE_ID.fullmatch(image_id):
        return None
    if not parts.scheme and not parts.netloc:
        return image_id if parts.path == f"/images/{image_id}.png" else None
    ours = urlsplit(store.image_url(image_id, base_url))
    if (parts.scheme, parts.netloc.lower(), parts.path) != (ours.scheme, ours.netloc.lower(), ours.path):
        return None
    return image_id
