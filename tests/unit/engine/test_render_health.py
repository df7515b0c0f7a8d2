"""A replica whose renders keep failing fails its health check; request errors do not count."""

from __future__ import annotations

import pytest

from serve_app.engine.render_health import RenderHealth


def test_consecutive_replica_failures_make_the_replica_unhealthy() -> None:
    health = RenderHealth(limit=3)
    for _ in range(2):
        health.failed(RuntimeError("CUDA error: an illegal memory access was encountered"))
    health.check()  # two is not yet three
    health.succeeded()
    for _ in range(2):
        health.failed(RuntimeError("CUDA out of memory"))
    health.check()  # the success reset the count
    health.failed(MemoryError())
    with pytest.raises(RuntimeError, match="last 3 pipeline calls failed"):
        health.check()


def test_request_errors_do_not_count_and_zero_disables() -> None:
    health = RenderHealth(limit=1)
    health.failed(ValueError("bad input"))
    health.failed(ImportError("scheduler needs torchsde"))
    health.check()
    never = RenderHealth(limit=0)
    for _ in range(10):
        never.failed(RuntimeError("boom"))
    never.check()
