"""Where generated images and job records live: a local folder or an S3 bucket.

Images are kept so they can be fetched by URL, listed in a gallery and linked from Discord, and
async jobs keep their records here so any ingress replica (or one restarted after a crash) can
answer for them. Both stores have the same small, synchronous interface; async callers run it in
a thread (``asyncio.to_thread``) since boto3 blocks.

Image ids sort newest first: they start with an inverted millisecond timestamp, so a plain
lexicographic listing (what S3 gives) is the gallery's order and a key is a pagination cursor.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Protocol

_INVERT_MS = 10**13
# Ids a caller gives become keys: always ``fullmatch`` (``match`` with ``$`` accepts a trailing
# newline); ``\Z`` keeps a stray ``match`` safe too.
IMAGE_ID = re.compile(r"img_[0-9]{13}[0-9a-f]{10}\Z")
JSON_KEY = re.compile(r"[A-Za-z0-9_./-]+\.json\Z")


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
