"""How busy the model is, as seen from one ingress replica, and how long a new job would wait.

The Discord bot must refuse up front a job that cannot finish within the interaction token's 15
minutes. The estimate is deliberately simple and conservative: jobs this ingress has in flight,
times a moving average of seconds per image (render time divided by the batch it shared), as if
one replica served them all. More replicas only make the real wait shorter.
"""

from __future__ import annotations


class LoadTracker:
    def __init__(self, smoothing: float = 0.2) -> None:
        self._smoothing = smoothing
        self.in_flight = 0
        self.seconds_per_image: float | None = None

    def started(self, count: int = 1) -> None:
        self.in_flight += count

    def finished(self, count: int = 1) -> None:
        self.in_flight = max(0, self.in_flight - count)

    def observe(self, render_s: float, batch_size: int) -> None:
        sample = render_s / max(1, batch_size)
        if self.seconds_per_image is None:
            self.seconds_per_image = sample
        else:
            self.seconds_per_image += self._smoothing * (sample - self.seconds_per_image)

    def expected_wait_s(self, new_jobs: int = 1) -> float:
        """Seconds until ``new_jobs`` more would be done; 0 before anything was measured."""
        if self.seconds_per_image is None:
            return 0.0
        return (self.in_flight + new_jobs) * self.seconds_per_image
