"""Queue position and expected wait from the ingress's own load figures (pure logic)."""

from __future__ import annotations

import pytest

from serve_app.generation import ImageJob
from serve_app.load_tracking import LoadTracker
from serve_app.queue_position import QueueSnapshot


def job(steps: int = 10, size: int = 512) -> ImageJob:
    return ImageJob(
        prompt="p", negative_prompt="", width=size, height=size, steps=steps, guidance_scale=7.5,
        scheduler="ddim", seed=1,
    )


def test_position_counts_down_as_images_ahead_finish() -> None:
    load = LoadTracker()
    load.started(3)  # three images in flight before ours
    snapshot = QueueSnapshot(load, [job()])
    load.started(1)  # ours
    assert snapshot.now(load).position == 3
    load.finished(2)
    assert snapshot.now(load).position == 1
    load.started(5)  # images sent after ours are never ahead of it
    assert snapshot.now(load).position == 1
    load.finished(4)
    assert snapshot.now(load).position == 0


def test_no_wait_is_promised_before_a_render_was_measured() -> None:
    load = LoadTracker()
    load.started(2)
    info = QueueSnapshot(load, [job()]).now(load)
    assert info.position == 2
    assert info.expected_wait_s is None


def test_expected_wait_is_the_work_ahead_plus_our_own_at_the_measured_speed() -> None:
    load = LoadTracker()
    load.observe(render_s=4.0, batch_size=2, units=10.0)  # 0.2 s per unit, 10 units per image
    load.started(3)
    snapshot = QueueSnapshot(load, [job(steps=20), job(steps=20)])  # 40 units of our own
    assert snapshot.now(load).expected_wait_s == pytest.approx((3 * 10 + 40) * 0.2)
    load.finished(3)
    assert snapshot.now(load).expected_wait_s == pytest.approx(40 * 0.2)
