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


def test_progress_reads_per_image_and_its_total_is_known_from_the_start(tmp_path) -> None:
    """n: 2 at 6 steps: never 0/0 while processing, and each image's own steps beside the sum."""
    from serve_app.api.predictions.protocol import prediction_view
    from serve_app.jobs.records import JobRecord, Progress
    from serve_app.storage import LocalImageStore

    store = LocalImageStore(tmp_path)
    record = JobRecord(
        id="pred_two",
        status="processing",
        input={"prompt": "p", "n": 2},
        jobs=[{"seed": 1, "steps": 6}, {"seed": 2, "steps": 6}],
        created_at=0.0,
    )
    before_heartbeat = prediction_view(record, store, "http://host")["progress"]
    assert before_heartbeat == {
        "step": 0,
        "total": 12,
        "images": [{"step": 0, "total": 6}, {"step": 0, "total": 6}],
    }
    record.progress = Progress(step=9, total=12, images=[6, 3])
    assert prediction_view(record, store, "http://host")["progress"]["images"] == [
        {"step": 6, "total": 6},
        {"step": 3, "total": 6},
    ]
    record.status, record.progress = "succeeded", Progress(step=12, total=12, images=[6, 6])
    done = prediction_view(record, store, "http://host")["progress"]
    assert done["step"] == done["total"] == 12 and all(i["step"] == i["total"] for i in done["images"])
