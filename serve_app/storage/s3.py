"""The image store on an S3 bucket: what a cluster of several nodes and ingress replicas shares."""

from __future__ import annotations

import json
from typing import Any


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
