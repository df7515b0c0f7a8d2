"""Denoising progress in the steps a caller asked for, whatever the scheduler does internally.

Second-order schedulers (Heun, DPM++ SDE) evaluate the model twice per step: asked for ``n``
steps they run ``2n - 1`` iterations, and the pipeline's step callback fires for each. Progress
must stay in the caller's units ("step 12/30", never "step 59/30"), so iterations are scaled to the
requested steps, and clamped so it can never pass the total.
"""

from __future__ import annotations


def requested_step(iterations_done: int, iterations_total: int, requested_steps: int) -> int:
    """Steps of ``requested_steps`` completed after ``iterations_done`` of ``iterations_total``."""
    if requested_steps <= 0:
        return 0
    if iterations_total <= 0:
        return min(iterations_done, requested_steps)
    done = iterations_done * requested_steps // iterations_total
    return max(1 if iterations_done > 0 else 0, min(done, requested_steps))
