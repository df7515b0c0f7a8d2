"""Where images and job records live: ``create_store`` picks the local folder or the S3 bucket."""

from __future__ import annotations

import time

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageResult, ImageSpec
from serve_app.storage.base import IMAGE_ID, ImageStore, new_image_id
from serve_app.storage.local import LocalImageStore
from serve_app.storage.s3 import S3ImageStore

__all__ = ["IMAGE_ID", "ImageStore", "LocalImageStore", "S3ImageStore", "create_store", "save_results"]


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
