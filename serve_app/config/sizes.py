"""Image sizes as people write them (``"512x512"``), parsed once for every config field and request."""

from __future__ import annotations

import re

SIZE_PATTERN = re.compile(r"^\s*(\d{1,5})\s*[xX\u00d7]\s*(\d{1,5})\s*$")


def parse_size(size: str) -> tuple[int, int]:
    """Parse OpenAI's ``"WxH"`` size string; raises ValueError with a readable reason."""
    match = SIZE_PATTERN.match(size)
    if not match:
        raise ValueError(f"size must look like '512x512' (WIDTHxHEIGHT), got {size!r}")
    return int(match.group(1)), int(match.group(2))
