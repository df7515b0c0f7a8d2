"""A prediction as Replicate clients expect it."""

from __future__ import annotations

from pathlib import Path

from serve_app.api.predictions.protocol import prediction_view
from serve_app.jobs.records import JobRecord
from serve_app.storage import LocalImageStore


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
