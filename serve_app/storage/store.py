"""Where generated images and job records live: a local folder or an S3 bucket.

Images are kept so they can be fetched by URL, listed in a gallery and linked from Discord, and
async jobs keep their records here so any ingress replica (or one restarted after a crash) can
answer for them. Both stores have the same small, synchronous interface; async callers run it in
a thread (``asyncio.to_thread``) since boto3 blocks.

Image ids sort newest first: they start with an inverted millisecond timestamp, so a plain
lexicographic listing (what S3 gives) is the gallery's order and a key is a pagination cursor.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageResult, ImageSpec

_INVERT_MS = 10**13
IMAGE_ID = re.compile(r"^img_[0-9]{13}[0-9a-f]{10}$")
JSON_KEY = re.compile(r"^[A-Za-z0-9_./-]+\.json$")


def new_image_id(now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    return f"img_{_INVERT_MS - millis:013d}{secrets.token_hex(5)}"


class ImageStore(Protocol):
    kind: str

    def put_image(self, image_id: str, png: bytes, record: dict[str, Any]) -> None: ...

    def get_image(self, image_id: str) -> bytes | None: ...

    def image_url(self, image_id: str, base_url: str) -> str: ...

    def list_images(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]: ...

    def put_json(self, key: str, value: dict[str, Any]) -> None: ...

    def create_json(self, key: str, value: dict[str, Any]) -> bool:
        """Write ``key`` only if it does not exist yet; False when another writer got there first.

        The one primitive that lets several ingress replicas agree without a lock service: claiming
        a job (``job_records.JobStore.claim``) is creating a key that only one of them can create.
        """
        ...

    def get_json(self, key: str) -> dict[str, Any] | None: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str) -> list[str]: ...


class LocalImageStore:
    """Files under ``data_dir``; the ingress serves images at ``/images/<id>.png``."""

    kind = "local"

    def __init__(self, data_dir: str | Path) -> None:
        self._root = Path(data_dir).expanduser().resolve()
        (self._root / "images").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if self._root not in path.parents:
            raise ValueError(f"key escapes the store: {key!r}")
        return path

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        partial.write_bytes(data)
        os.replace(partial, path)  # readers never see half a file

    def put_image(self, image_id: str, png: bytes, record: dict[str, Any]) -> None:
        self._write(f"images/{image_id}.png", png)
        self._write(f"images/{image_id}.json", json.dumps(record).encode())

    def get_image(self, image_id: str) -> bytes | None:
        path = self._path(f"images/{image_id}.png")
        return path.read_bytes() if path.is_file() else None

    def image_url(self, image_id: str, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/images/{image_id}.png"

    def list_images(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        ids = sorted(p.stem for p in (self._root / "images").glob("img_*.json"))
        if cursor:
            ids = [i for i in ids if i > cursor]
        page = ids[: limit + 1]
        records = [r for i in page[:limit] if (r := self.get_json(f"images/{i}.json")) is not None]
        return records, (page[limit - 1] if len(page) > limit else None)

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        self._write(key, json.dumps(value).encode())

    def create_json(self, key: str, value: dict[str, Any]) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        partial.write_bytes(json.dumps(value).encode())
        try:
            # link() fails if the name exists, atomically, and publishes a complete file: an
            # O_EXCL create would let a reader see it empty before the content is written.
            os.link(partial, path)
        except FileExistsError:
            return False
        finally:
            partial.unlink(missing_ok=True)
        return True

    def get_json(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(self._root)) for p in folder.iterdir() if p.is_file())


class S3ImageStore:
    """Objects under ``s3://bucket/prefix/``; image URLs are presigned GETs that expire."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        url_expiry_s: int = 3600,
    ) -> None:
        import boto3

        self._s3 = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
        self._bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._url_expiry_s = url_expiry_s

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def put_image(self, image_id: str, png: bytes, record: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self._bucket, Key=self._key(f"images/{image_id}.png"), Body=png, ContentType="image/png"
        )
        self.put_json(f"images/{image_id}.json", record)

    def get_image(self, image_id: str) -> bytes | None:
        return self._get(f"images/{image_id}.png")

    def image_url(self, image_id: str, base_url: str) -> str:
        return self._s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._key(f"images/{image_id}.png")},
            ExpiresIn=self._url_expiry_s,
        )

    def list_images(self, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._key("images/img_")}
        if cursor:
            kwargs["StartAfter"] = self._key(f"images/{cursor}.json")
        for page in self._s3.get_paginator("list_objects_v2").paginate(**kwargs):
            keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json"))
            if len(keys) > limit:
                break
        ids = [k[len(self._key("images/")) : -len(".json")] for k in keys[: limit + 1]]
        records = [r for i in ids[:limit] if (r := self.get_json(f"images/{i}.json")) is not None]
        return records, (ids[limit - 1] if len(ids) > limit else None)

    def put_json(self, key: str, value: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(key),
            Body=json.dumps(value).encode(),
            ContentType="application/json",
        )

    def create_json(self, key: str, value: dict[str, Any]) -> bool:
        try:
            # S3 conditional writes: the put fails with 412 when the key already exists.
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key(key),
                Body=json.dumps(value).encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except self._s3.exceptions.ClientError as error:
            # 409 ConditionalRequestConflict: a concurrent conditional put of the same key is in flight.
            code = error.response.get("Error", {}).get("Code")
            if code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def get_json(self, key: str) -> dict[str, Any] | None:
        data = self._get(key)
        return json.loads(data) if data is not None else None

    def _get(self, key: str) -> bytes | None:
        try:
            return self._s3.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            return None

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self._bucket, Key=self._key(key))

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._key(prefix)
        ):
            keys.extend(o["Key"][len(self._prefix) :] for o in page.get("Contents", []))
        return sorted(keys)


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
