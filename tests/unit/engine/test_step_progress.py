"""Progress in the steps a caller asked for, whatever the scheduler does internally."""

from __future__ import annotations

import pytest

from serve_app.engine.step_progress import requested_step


@pytest.mark.parametrize(("requested", "iterations"), [(30, 30), (30, 59), (3, 5), (1, 1), (7, 13), (10, 4)])
def test_progress_is_in_requested_steps_and_never_passes_the_total(requested: int, iterations: int) -> None:
    shown = [requested_step(i, iterations, requested) for i in range(1, iterations + 1)]
    assert all(1 <= step <= requested for step in shown), shown
    assert shown == sorted(shown), "progress never goes back"
    assert shown[-1] == requested


def test_heun_thirty_steps_end_at_thirty() -> None:
    assert requested_step(59, 59, 30) == 30
    assert requested_step(58, 59, 30) == 29
    assert requested_step(1, 59, 30) == 1
