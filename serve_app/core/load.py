"""How busy the model is, as seen from one ingress replica, and how fast it renders.

The Discord bot must refuse up front a job that cannot finish within the interaction token's 15
minutes (``bot_gateway.admission`` turns these measurements into a wait). Render time grows with
steps and pixels, so speed is kept per unit of work (one denoising step of a 512x512 image), a
moving average of render time divided by the batch it shared; a 50-step 768x768 job then costs
what it costs, not what the last 4-step thumbnail did.
"""

from __future__ import annotations

REFERENCE_PIXELS = 512 * 512


def work_units(steps: int, width: int, height: int) -> float:
    return steps * width * height / REFERENCE_PIXELS


class LoadTracker:
    def __init__(self, smoothing: float = 0.2) -> None:
        self._smoothing = smoothing
        self.in_flight = 0
        self.completed = 0  # images that left the queue (rendered, failed or cancelled): see queue_position
        self.seconds_per_unit: float | None = None  # None until a render was measured
        self.units_per_image: float | None = None

    def started(self, count: int = 1) -> None:
        self.in_flight += count

    def finished(self, count: int = 1) -> None:
        self.in_flight = max(0, self.in_flight - count)
        self.completed += count

    def observe(self, render_s: float, batch_size: int, units: float = 1.0) -> None:
        units = max(units, 1e-6)
        sample = render_s / max(1, batch_size) / units
        if self.seconds_per_unit is None or self.units_per_image is None:
            self.seconds_per_unit, self.units_per_image = sample, units
            return
        self.seconds_per_unit += self._smoothing * (sample - self.seconds_per_unit)
        self.units_per_image += self._smoothing * (units - self.units_per_image)
