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
