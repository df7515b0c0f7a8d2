"""Whether a model replica can still render: the basis of its Serve health check.

A replica whose pipeline object exists can still fail every render (a broken CUDA context, out of
memory on every batch, a model folder whose parts do not fit together); Serve replaces a replica
only when ``check_health`` raises, so the replica counts consecutive failed pipeline calls and
reports itself unhealthy past ``limit``. Only failures of the replica count (RuntimeError, which
covers CUDA errors and torch's OutOfMemoryError, and MemoryError): a request the pipeline rejects
(ValueError, a scheduler's missing optional package) says nothing about the replica, and one
success resets the count.
"""

from __future__ import annotations

REPLICA_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, MemoryError)


class RenderHealth:
    def __init__(self, limit: int) -> None:
        self._limit = limit  # 0: never unhealthy because of renders
        self.consecutive_failures = 0
        self.last_failure: str | None = None

    def succeeded(self) -> None:
        self.consecutive_failures = 0

    def failed(self, error: BaseException) -> None:
        if isinstance(error, REPLICA_FAILURES):
            self.consecutive_failures += 1
            self.last_failure = f"{type(error).__name__}: {str(error)[:200]}"

    def check(self) -> None:
        if self._limit and self.consecutive_failures >= self._limit:
            raise RuntimeError(
                f"the last {self.consecutive_failures} pipeline calls failed "
                f"(last: {self.last_failure}); asking Serve for a fresh replica"
            )
