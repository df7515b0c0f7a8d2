"""One picture of a grid's images: what a Discord message shows for ``/imagine count:4``.

A message shows one attachment as its embed image, so the images of a grid are composed into one
(2x2 for four, as the image bots people know show them), in seed order, left to right and top to
bottom: U1-U4 and V1-V4 number them the same way. The individual images stay in the store; the
grid is only what the message shows. Live previews are composed the same way, so the grid fills
in where its images will appear.
"""

from __future__ import annotations

import io
import math

from PIL import Image

EMPTY = (47, 49, 54)  # Discord's dark embed background: a tile with no preview yet


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) for ``count`` tiles, as square as possible (2x2 for four)."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return columns, math.ceil(count / columns)


def _compose(tiles: list[Image.Image | None], size: tuple[int, int]) -> Image.Image:
    columns, rows = grid_shape(len(tiles))
    width, height = size
    grid = Image.new("RGB", (columns * width, rows * height), EMPTY)
    for index, tile in enumerate(tiles):
        if tile is None:
            continue
        if tile.size != size:
            tile = tile.resize(size, Image.Resampling.LANCZOS)
        grid.paste(tile.convert("RGB"), ((index % columns) * width, (index // columns) * height))
    return grid


def compose_grid(pngs: list[bytes]) -> bytes:
    """The images (PNG bytes, one size) as one PNG grid, in order."""
    images = [Image.open(io.BytesIO(png)) for png in pngs]
    grid = _compose(list(images), images[0].size)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def compose_preview_grid(previews: dict[int, bytes], count: int) -> bytes:
    """The latest preview of each image (JPEG bytes by image index) as one small JPEG grid."""
    tiles: list[Image.Image | None] = [None] * count
    for index, jpeg in previews.items():
        if 0 <= index < count:
            tiles[index] = Image.open(io.BytesIO(jpeg))
    size = next(tile.size for tile in tiles if tile is not None)
    buffer = io.BytesIO()
    _compose(tiles, size).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def tile(grid_png: bytes, index: int, count: int) -> Image.Image:
    """The ``index``-th (0-based) image cut back out of a grid: what tests compare with the store."""
    grid = Image.open(io.BytesIO(grid_png))
    columns, rows = grid_shape(count)
    width, height = grid.width // columns, grid.height // rows
    left, top = (index % columns) * width, (index // columns) * height
    return grid.crop((left, top, left + width, top + height))
