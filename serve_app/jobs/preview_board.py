"""The latest live preview of each image of the jobs this ingress replica runs, kept in memory.

A preview is superseded a few steps later and worthless once the job ends, so it never goes into
the job store: writing each one would cost a store write (an S3 PUT) per preview, and the record,
which heartbeats rewrite every second, would grow by kilobytes per image. The replica running the
job already receives every preview on its progress stream; it keeps only the newest per image and
forgets them when the job ends. A poll answered by that replica shows them; one answered by another
ingress replica (several run only when configured so) shows none until the image is done.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class Preview:
    step: int
    jpeg: bytes

    @property
    def data_url(self) -> str:
        """What a browser ``<img>`` and Replicate-style clients show as is, with no second request
        (and no API key, which an ``<img>`` could not send)."""
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode()


class PreviewBoard:
    def __init__(self) -> None:
        self._latest: dict[str, dict[int, Preview]] = {}

    def put(self, prediction_id: str, index: int, step: int, jpeg: bytes) -> None:
        """The newest arrival wins: one image's events come in order, and a retry's after the last try's."""
        self._latest.setdefault(prediction_id, {})[index] = Preview(step, jpeg)

    def latest(self, prediction_id: str) -> dict[int, Preview]:
        return dict(self._latest.get(prediction_id, {}))

    def forget(self, prediction_id: str) -> None:
        self._latest.pop(prediction_id, None)

    def __len__(self) -> int:
        return len(self._latest)
