"""The local store: image ids sort newest first, paging, keys that cannot escape the folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serve_app.storage import IMAGE_ID, LocalImageStore, new_image_id


def test_image_ids_sort_newest_first_and_match_the_public_pattern() -> None:
    now = time.time()
    older, newer = new_image_id(now - 10), new_image_id(now)
    assert newer < older
    assert IMAGE_ID.match(older) and IMAGE_ID.match(newer)


def test_local_store_pages_through_images(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    ids = [new_image_id(1_000_000 + i) for i in range(5)]
    for image_id in ids:
        store.put_image(image_id, b"png", {"id": image_id})
    pages, cursor = [], None
    while True:
        records, cursor = store.list_images(2, cursor)
        pages.append([r["id"] for r in records])
        if cursor is None:
            break
    assert pages == [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]
    assert store.get_image(ids[0]) == b"png"
    assert store.get_image(new_image_id()) is None


def test_local_store_keys_cannot_escape_its_folder(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "store")
    with pytest.raises(ValueError, match="escapes"):
        store.put_json("../outside.json", {})
    store.put_json("predictions/a.json", {"x": 1})
    assert store.list_keys("predictions/") == ["predictions/a.json"]
    store.delete("predictions/a.json")
    assert store.get_json("predictions/a.json") is None
