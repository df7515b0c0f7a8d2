"""Split a dynamic batch into pipeline calls.

Serve batches whatever arrives within the wait window, but one pipeline call can only render images
of one size, step count, guidance scale and scheduler. This groups a batch by those, keeping arrival
order inside each group and ordering groups by their first arrival, so nobody waits behind a group
that came later.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol


class Groupable(Protocol):
    @property
    def group_key(self) -> Hashable: ...


def group_indices(jobs: Sequence[Groupable]) -> list[list[int]]:
    """Indices of ``jobs`` grouped by ``group_key``, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault(job.group_key, []).append(index)
    return list(groups.values())


def take_batch(keys: Sequence[Hashable], size: int) -> list[int]:
    """Which of the waiting jobs (their group keys, in queue order) the next batch takes.

    The first job's group is filled from the whole queue, then what room is left goes to the jobs
    next in order. Taking only the first ``size`` arrivals would split a group whose members are
    interleaved with another's (two models, two sizes) into half-empty pipeline calls; this keeps the
    head of the queue first, so nobody's turn is passed, and makes its call as full as the queue allows.
    """
    if size < 1 or not keys:
        return []
    head = keys[0]
    picked = [index for index, key in enumerate(keys) if key == head][:size]
    if len(picked) < size:
        chosen = set(picked)
        rest = [index for index in range(len(keys)) if index not in chosen]
        picked += rest[: size - len(picked)]
    return sorted(picked)
