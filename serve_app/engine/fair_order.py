"""Which waiting image a model replica renders next: fair shares across callers, not arrival order.

First come, first served lets one caller that sends ``n: 64`` (or a script looping on ``/imagine``)
put everyone else behind its whole flood. Here the waiting images are ordered by start-time fair
queueing (Goyal et al., SFQ): each image of caller ``c`` gets a start tag
``max(V, finish[c])`` and moves ``finish[c]`` on by ``1 / weight``, where ``V`` (virtual time) is
the largest start tag already taken for rendering. Sorting by ``(-priority, start tag, arrival)``
gives a round-robin across callers (two images of a caller with weight 2 per image of a caller with
weight 1) that is also an ordinary total order, so:

- batching is kept: the render loop still takes the first ``max_batch_size`` images, which come
  from many callers and are then grouped by model, size and steps as before;
- a caller who arrives while a flood waits starts at ``V``: it is served within about one batch,
  however many images the flood has queued;
- places in line and wait estimates are computed from this same order (``ReplicaQueue.places``),
  so what a caller is told is where it really stands (a newcomer can move ahead of a flood's
  images; that is the point).

Priority is strict: a waiting image of a higher priority class is always taken before any of a
lower one (interactive Discord above bulk API, say), fairness applies within a class.

Pure logic, no Ray: ``serve_app/engine/deployment.py`` keeps its waiting list sorted by ``key``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# Images sent with no caller (older ingresses, direct handle calls) share one anonymous flow.
ANONYMOUS = ""

OrderKey = tuple[int, float, int]


@dataclass(frozen=True)
class Share:
    """A caller's claim on the replica: who, how much (weight), and which class (priority)."""

    caller: str = ANONYMOUS
    weight: float = 1.0
    priority: int = 0


class FairOrder:
    def __init__(self) -> None:
        self._virtual = 0.0
        self._finish: dict[str, float] = {}  # per caller: the start tag its next image gets
        self._arrival = itertools.count()

    def key(self, share: Share) -> OrderKey:
        """The sort key of one more waiting image of ``share.caller`` (smaller renders first)."""
        start = max(self._virtual, self._finish.get(share.caller, 0.0))
        self._finish[share.caller] = start + 1.0 / max(share.weight, 1e-6)
        return (-share.priority, start, next(self._arrival))

    def taken(self, keys: list[OrderKey]) -> None:
        """Images left the queue for rendering: virtual time moves to the latest start among them.

        Callers whose finish tag virtual time has passed are forgotten (they would start at ``V``
        anyway), so the table holds only callers with images still waiting or just served.
        """
        if not keys:
            return
        self._virtual = max(self._virtual, max(start for _, start, _ in keys))
        for caller in [c for c, finish in self._finish.items() if finish <= self._virtual]:
            del self._finish[caller]

    @property
    def virtual_time(self) -> float:
        return self._virtual
