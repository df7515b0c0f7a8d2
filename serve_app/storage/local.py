"""The image store on a local folder: one node, or a folder every node mounts."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from serve_app.storage.base import IMAGE_ID

# Temporary files start with this; no key's last part does (keys are ids and numbers).
PARTIAL_PREFIX = "."


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

    @staticmethod
    def _partial(path: Path) -> Path:
        # Hidden (a leading dot) and never ending in a key's suffix: listings skip it, so a
        # half-written file, or one a crash left behind, is never taken for a key.
        return path.with_name(f"{PARTIAL_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._partial(path)
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
        ids = sorted(p.stem for p in (self._root / "images").glob("img_*.json") if IMAGE_ID.fullmatch(p.stem))
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
        partial = self._partial(path)
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
        return sorted(
            str(p.relative_to(self._root))
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(PARTIAL_PREFIX)
        )
