"""A prediction's public shape: Replicate's fields, and never a flagged image."""

from __future__ import annotations


def test_a_prediction_never_hands_out_a_flagged_image(tmp_path) -> None:
    from serve_app.api.predictions.protocol import prediction_view
    from serve_app.jobs.records import JobRecord
    from serve_app.storage import LocalImageStore

    record = JobRecord(
        id="pred_abc",
        status="succeeded",
        input={"prompt": "p", "n": 3},
        jobs=[{"seed": s} for s in (1, 2, 3)],
        image_ids=["img_1", "img_2", "img_3"],
        nsfw_content_detected=[False, True, False],
        created_at=0.0,
    )
    view = prediction_view(record, LocalImageStore(tmp_path), "http://host")
    assert view["output"] == ["http://host/images/img_1.png", "http://host/images/img_3.png"]
    assert view["nsfw_content_detected"] == [False, True, False]
