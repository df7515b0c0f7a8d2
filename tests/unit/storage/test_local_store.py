"""The local store: image ids sort newest first, paging, keys that cannot escape the folder."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot_gateway.user_settings import USER_ID, UnknownUserError, settings_key
from serve_app.jobs.records import PREDICTION_ID, JobStore
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


def test_ids_with_a_trailing_newline_never_match() -> None:
    image_id = new_image_id()
    assert IMAGE_ID.fullmatch(image_id)
    # re.match with "$" accepted these; a newline must never reach a key or a file name.
    assert not IMAGE_ID.match(f"{image_id}\n") and not IMAGE_ID.fullmatch(f"{image_id}\n")
    assert not PREDICTION_ID.match("pred_abc\n") and not PREDICTION_ID.fullmatch("pred_abc\n")
    assert not USER_ID.match("1234\n") and not USER_ID.fullmatch("1234\n")
    with pytest.raises(UnknownUserError):
        settings_key("1234\n")


def test_listings_skip_half_written_and_left_over_temporary_files(tmp_path: Path) -> None:
    """A writer that crashed mid-write leaves its temporary file: never listed as a key, and a
    lease sweep over a folder holding one still works (it used to parse it as a lease number)."""
    store = LocalImageStore(tmp_path)
    store.put_json("predictions-active/pred_a.json", {"id": "pred_a"})
    store.put_json("predictions-lease/pred_a/00000000.json", {"owner": "dead", "expires_at": 0})
    for folder in ("predictions-active", "predictions-lease/pred_a"):
        # What a write leaves when its process dies between writing and renaming.
        (tmp_path / folder / ".zzzzzzzz.json.4242.beef").write_bytes(b'{"half')
        store._partial(tmp_path / folder / "zzzzzzzz.json").write_bytes(b'{"half')
    assert store.list_keys("predictions-active/") == ["predictions-active/pred_a.json"]
    assert store.list_keys("predictions-lease/pred_a/") == ["predictions-lease/pred_a/00000000.json"]
    jobs = JobStore(store)
    assert asyncio.run(jobs.active_ids()) == ["pred_a"]
    assert asyncio.run(jobs.claim("pred_a", "me", lease_s=60))
