"""``/imagine ar:``: aspect ratios turned into sizes the model draws well, so nobody does arithmetic.

A checkpoint draws best near the pixel area it was trained at (SD 1.5 512x512, SDXL 1024x1024): far
below it images lose detail, far above it they repeat subjects. So a ratio becomes the size of
that shape with about the model's native area (its default size), each side on the latent grid
(a multiple of 8: the VAE downsamples by 8, and the service refuses other sizes). When a side
would fall outside ``min_size``..``max_size`` the whole size is scaled, keeping the shape, until
it fits.
"""

from __future__ import annotations

import math

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21")
GRID = 8  # pixels per latent cell


class AspectRatioError(ValueError):
    """Not a ratio we offer; the message names the choices."""


def parse_ratio(ratio: str) -> tuple[int, int]:
    if ratio not in ASPECT_RATIOS:
        raise AspectRatioError(f"option 'ar' must be one of {', '.join(ASPECT_RATIOS)}, got {ratio!r}")
    width, height = ratio.split(":")
    return int(width), int(height)


def _on_grid(value: float) -> int:
    return max(GRID, round(value / GRID) * GRID)


def size_for_ratio(ratio: str, native: tuple[int, int], min_size: int, max_size: int) -> str:
    """``"WxH"`` of ``ratio`` at about the area of ``native`` (the model's default size)."""
    rw, rh = parse_ratio(ratio)
    shape = rw / rh
    area = native[0] * native[1]
    width, height = math.sqrt(area * shape), math.sqrt(area / shape)
    # Keep the shape inside the configured bounds: the short side at least min_size, the long
    # side at most max_size (a bound wins over the area; min wins over max when both bind).
    scale = min(1.0, max_size / max(width, height))
    scale = max(scale, min_size / min(width, height))
    width, height = width * scale, height * scale
    # The short side goes on the grid first, the long one follows the shape from it: the ratio
    # stays as close as the grid allows.
    if width >= height:
        height_px = min(max(_on_grid(height), min_size), max_size)
        width_px = min(max(_on_grid(height_px * shape), min_size), max_size)
    else:
        width_px = min(max(_on_grid(width), min_size), max_size)
        height_px = min(max(_on_grid(width_px / shape), min_size), max_size)
    return f"{width_px}x{height_px}"
