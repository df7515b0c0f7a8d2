"""The local store, image ids, credential precedence and the public prediction shape."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serve_app.api.predictions.router import prediction_view
from serve_app.config.credentials import merge_credentials
from serve_app.config.settings import AppSettings
from serve_app.jobs.records import JobRecord
from serve_app.storage.store import IMAGE_ID, LocalImageStore, new_image_id


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


def test_secret_values_win_and_settings_fill_the_gaps() -> None:
    settings = AppSettings(api_keys=["env"], discord_public_key="env-pk", discord_application_id="env-app")
    both = merge_credentials({"RAYDIFFUSION_API_KEYS": "s1, s2", "DISCORD_PUBLIC_KEY": "secret-pk"}, settings)
    assert both.api_keys == ("s1", "s2")
    assert both.discord_public_key == "secret-pk" and both.discord_application_id == "env-app"
    assert merge_credentials({}, settings).api_keys == ("env",)
    assert merge_credentials({"API_KEYS": ["a"]}, settings).api_keys == ("a",)


def test_prediction_view_has_replicates_shape(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    record = JobRecord(
        id="pred_abc",
        input={"prompt": "x", "n": 1},
        jobs=[{"seed": 4}],
        created_at=1_700_000_000.25,
        status="succeeded",
        image_ids=["img_1"],
        started_at=1_700_000_001.0,
        completed_at=1_700_000_002.5,
        predict_time_s=1.5,
    )
    view = prediction_view(record, store, "http://host/")
    assert view["output"] == ["http://host/images/img_1.png"]
    assert view["urls"] == {
        "get": "http://host/v1/predictions/pred_abc",
        "cancel": "http://host/v1/predictions/pred_abc/cancel",
    }
    assert view["created_at"] == "2023-11-14T22:13:20.250Z"
    assert view["metrics"] == {"predict_time": 1.5} and view["seeds"] == [4]
    assert prediction_view(record.model_copy(update={"status": "failed"}), store, "")["output"] is None
