"""Queue position and expected wait: a replica's real queue, the ingress's fallback (pure logic)."""

from __future__ import annotations

import pytest

from serve_app.core.images import ImageSpec, ProgressEvent, RenderTicket
from serve_app.core.load import LoadTracker
from serve_app.engine.render_queue import ReplicaQueue
from serve_app.jobs.queue_position import QueueSnapshot


def job(steps: int = 10, size: int = 512) -> ImageSpec:
    return ImageSpec(
        prompt="p", negative_prompt="", width=size, height=size, steps=steps, guidance_scale=7.5,
        scheduler="ddim", seed=1,
    )


def test_position_counts_down_as_images_ahead_finish() -> None:
    load = LoadTracker()
    load.started(3)  # three images in flight before ours
    snapshot = QueueSnapshot(load, [job()], grace_s=0)
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
    info = QueueSnapshot(load, [job()], grace_s=0).now(load)
    assert info.position == 2
    assert info.expected_wait_s is None


def test_expected_wait_is_the_work_ahead_plus_our_own_at_the_measured_speed() -> None:
    load = LoadTracker()
    load.observe(render_s=4.0, batch_size=2, units=10.0)  # 0.2 s per unit, 10 units per image
    load.started(3)
    snapshot = QueueSnapshot(load, [job(steps=20), job(steps=20)], grace_s=0)  # 40 units of our own
    assert snapshot.now(load).expected_wait_s == pytest.approx((3 * 10 + 40) * 0.2)
    load.finished(3)
    assert snapshot.now(load).expected_wait_s == pytest.approx(40 * 0.2)


# --- the ingress: a replica's figures win, the estimate waits out a grace period -------------------


def queued(ahead: int, wait: float | None) -> ProgressEvent:
    return ProgressEvent(state="queued", total=10, ahead=ahead, expected_wait_s=wait)


def test_a_replicas_place_replaces_the_ingress_estimate() -> None:
    load = LoadTracker()
    load.started(1)  # the ingress knows of one image ahead; the replica holds more (other senders)
    snapshot = QueueSnapshot(load, [job()], grace_s=0, at=0.0)
    assert snapshot.now(load, at=0).position == 1
    assert snapshot.observe(0, queued(ahead=4, wait=20.0), at=100.0)
    info = snapshot.now(load, at=100.0)
    assert (info.position, info.expected_wait_s) == (4, 20.0)
    # The wait counts down between the replica's updates, never below zero.
    assert snapshot.now(load, at=105.0).expected_wait_s == 15.0
    assert snapshot.now(load, at=130.0).expected_wait_s == 0.0
    assert not snapshot.observe(0, ProgressEvent(state="rendering", step=1, total=10))


def test_before_any_replica_placed_the_job_the_estimate_waits_for_the_grace_period() -> None:
    load = LoadTracker()
    load.started(2)
    snapshot = QueueSnapshot(load, [job()], grace_s=1.0, at=0.0)
    assert snapshot.now(load, at=0.5) is None  # submitted just now: a replica will say in a moment
    later = snapshot.now(load, at=1.0)
    assert later is not None and later.position == 2  # nobody placed it: the router holds it


def test_a_job_of_several_images_stands_at_its_first_image_and_waits_for_its_last() -> None:
    load = LoadTracker()
    snapshot = QueueSnapshot(load, [job(), job()], grace_s=0, at=0.0)
    snapshot.observe(0, queued(ahead=3, wait=8.0), at=0.0)
    assert snapshot.now(load, at=0.0).position == 0  # image 1 is on no replica yet: estimate
    snapshot.observe(1, queued(ahead=5, wait=12.0), at=0.0)
    info = snapshot.now(load, at=0.0)
    assert (info.position, info.expected_wait_s) == (3, 12.0)
    snapshot.observe(1, queued(ahead=6, wait=None), at=0.0)  # a replica that measured nothing yet
    assert snapshot.now(load, at=0.0).expected_wait_s is None


# --- the replica: places in its own queue ---------------------------------------------------------


def ticket() -> RenderTicket:
    return RenderTicket(loop=None, wants_progress=True)  # type: ignore[arg-type]  # never reports here


def test_places_count_the_rendering_batch_and_the_jobs_waiting_before() -> None:
    queue = ReplicaQueue()
    rendering = [job(), job()]
    queue.batch_started(rendering, [ticket(), ticket()], at=0.0)
    waiting, tickets = [job(), job(), job()], [ticket(), ticket(), ticket()]
    assert [p.ahead for p in queue.places(waiting, tickets, at=0.0)] == [2, 3, 4]
    assert all(p.expected_wait_s is None for p in queue.places(waiting, tickets, at=0.0))  # unmeasured
    tickets[0].cancelled = True  # a caller that left is nobody's place and nobody ahead
    places = queue.places(waiting, tickets, at=0.0)
    assert places[0] is None and [p.ahead for p in places[1:]] == [2, 3]


def test_waits_come_from_the_replicas_measured_batches() -> None:
    queue = ReplicaQueue()
    batch = [job(), job()]
    queue.batch_started(batch, [ticket(), ticket()], at=0.0)
    queue.batch_finished(completed=True, at=4.0)  # two images in 4 s: 2 s per image
    per_image = 2.0
    queue.batch_started([job()], [ticket()], at=10.0)
    waiting = [job(), job()]
    places = queue.places(waiting, [ticket(), ticket()], at=11.0)
    # The rendering image has 1 s left; then each waiting image's own 2 s.
    assert [p.expected_wait_s for p in places] == [
        pytest.approx(1.0 + per_image),
        pytest.approx(1.0 + 2 * per_image),
    ]


def test_an_interrupted_batch_does_not_count_as_a_speed() -> None:
    queue = ReplicaQueue()
    tickets = [ticket()]
    queue.batch_started([job()], tickets, at=0.0)
    tickets[0].cancelled = True
    queue.batch_finished(completed=True, at=0.1)
    assert queue.speed.seconds_per_unit is None
    queue.batch_started([job()], [ticket()], at=0.0)
    queue.batch_finished(completed=False, at=0.1)  # a failed render
    assert queue.speed.seconds_per_unit is None
