"""How AUTOMATIC1111 prepares an inpainting mask and finishes an inpainted image, on PIL images.

A1111's conventions differ from OpenAI's and are what its clients rely on: a mask with an alpha
channel marks the *opaque* pixels (strokes drawn on a transparent layer), others are read as white =
repaint; ``inpainting_mask_invert`` swaps them; ``mask_blur`` feathers the edge; ``inpainting_fill``
0 ("fill") smears the surrounding colours into the masked area before it is noised; and the result
is composited over the original, so pixels outside the mask come back exactly as they were sent.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter, ImageOps


def a1111_mask(mask: Image.Image, invert: bool, blur_x: int, blur_y: int) -> Image.Image:
    """A1111's ``create_binary_mask``, invert and Gaussian blur: single channel, white = repaint."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A").point(lambda a: 255 if a > 128 else 0)
    else:
        mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if blur_x or blur_y:
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
    return mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``inpainting_fill: 0``: the masked area painted with ever finer blurs of what surrounds it."""
    filled = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(blurred)
    return filled.convert("RGB")


def overlay(result_png: bytes, original: Image.Image, mask: Image.Image) -> bytes:
    """The rendered pixels where the mask is (its feathered edge doubled, as A1111 does), the
    original everywhere else."""
    result = Image.open(io.BytesIO(result_png)).convert("RGB")
    blend = mask.convert("L").point(lambda v: min(255, v * 2))
    buffer = io.BytesIO()
    Image.composite(result, original.convert("RGB"), blend).save(buffer, format="PNG")
    return buffer.getvalue()
