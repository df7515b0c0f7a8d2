"""Fair order of a replica's waiting images: round-robin across callers, weights, priority, places."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from serve_app.core.images import ImageSpec
from serve_app.engine.fair_order import FairOrder, OrderKey, Share


@dataclass
class Queue:
    """The replica's waiting list as deployment.py keeps it: sorted by fair-order key."""

    order: FairOrder = field(default_factory=FairOrder)
    waiting: list[tuple[OrderKey, str]] = field(default_factory=list)

    def send(self, caller: str, count: int = 1, weight: float = 1.0, priority: int = 0) -> None:
        for _ in range(count):
            key = self.order.key(Share(caller, weight, priority))
            bisect.insort(self.waiting, (key, caller))

    def take(self, size: int) -> list[str]:
        taken, self.waiting = self.waiting[:size], self.waiting[size:]
        self.order.taken([key for key, _ in taken])
        return [caller for _, caller in taken]


def test_a_newcomer_waits_about_one_batch_behind_a_flood() -> None:
    queue = Queue()
    queue.send("flood", 64 * 3)
    assert queue.take(8) == ["flood"] * 8  # rendering
    queue.send("single")
    batch = queue.take(8)
    assert "single" in batch, batch  # in the very next batch, not behind 184 images
    # ... and the batch still fills: batching across callers is kept.
    assert len(batch) == 8


def test_arrival_order_is_kept_without_contention() -> None:
    queue = Queue()
    queue.send("a", 3)
    assert queue.take(8) == ["a", "a", "a"]
    queue.send("a", 2)
    assert queue.take(1) == ["a"]


def test_waiting_callers_alternate_round_robin() -> None:
    queue = Queue()
    queue.send("a", 6)
    queue.send("b", 3)
    queue.send("c", 1)
    assert queue.take(10) == ["a", "b", "c", "a", "b", "a", "b", "a", "a", "a"]


def test_weights_give_proportional_shares() -> None:
    queue = Queue()
    queue.send("heavy", 20, weight=3.0)
    queue.send("light", 20, weight=1.0)
    first = queue.take(12)
    assert first.count("heavy") == 9 and first.count("light") == 3, first


def test_higher_priority_is_taken_first_and_fair_within_its_class() -> None:
    queue = Queue()
    queue.send("bulk", 16)
    queue.send("discord-1", 2, priority=10)
    queue.send("discord-2", 1, priority=10)
    assert queue.take(4) == ["discord-1", "discord-2", "discord-1", "bulk"]


def test_a_caller_idle_for_a_while_gets_no_credit_for_it() -> None:
    """Virtual time moved on: a returning caller starts now, it cannot claim a burst of saved turns."""
    queue = Queue()
    queue.send("a", 1)
    queue.take(1)
    queue.send("b", 20)
    queue.take(10)
    queue.send("a", 5)
    batch = queue.take(4)
    assert batch.count("a") == 2 and batch.count("b") == 2, batch


def test_the_table_forgets_callers_that_were_served() -> None:
    order = FairOrder()
    keys = [order.key(Share(f"caller-{i}")) for i in range(100)]
    order.taken(keys)
    assert len(order._finish) == 100  # each may still be owed nothing until virtual time passes
    order.taken([order.key(Share("caller-0"))])  # the next round starts: everyone else is even
    assert order._finish == {"caller-0": 2.0}


def test_places_follow_the_fair_order() -> None:
    """The replica tells each waiting caller the images ahead of it in the order it will render."""
    from serve_app.core.images import RenderTicket
    from serve_app.engine.render_queue import ReplicaQueue

    order = FairOrder()

    def spec(caller: str) -> ImageSpec:
        return ImageSpec("p", 64, 64, 2, 7.5, "ddim", 1, caller=caller)

    waiting: list[tuple[OrderKey, ImageSpec]] = []
    for job in [spec("flood")] * 5 + [spec("single")]:
        bisect.insort(waiting, (order.key(Share(job.caller)), job), key=lambda item: item[0])
    jobs = [job for _, job in waiting]
    loop = None
    tickets = [RenderTicket(loop=loop) for _ in jobs]  # type: ignore[arg-type]
    places = ReplicaQueue().places(jobs, tickets)
    single = next(i for i, job in enumerate(jobs) if job.caller == "single")
    assert places[single] is not None and places[single].ahead == 1  # only the flood's first image
    assert [p.ahead for p in places if p is not None] == list(range(6))
