"""Drop the few third-party log lines that read like faults on a healthy start, and nothing else.

A first ``make run`` printed each of these in every process (driver, ingress, model replicas), and
a new user cannot tell them from a broken install:

- transformers 5 warns that ``CLIPImageProcessor`` / ``SiglipImageProcessor`` "require torchvision"
  when diffusers imports those names. Serving never runs them on torchvision (the safety checker's
  feature extractor works on PIL, the fallback transformers picks), and torchvision is a large
  install the service does not need.
- Ray Serve warns that ``max_batch_size * max_concurrent_batches`` exceeds ``max_ongoing_requests``.
  Our ``@serve.batch`` only feeds the replica's render queue (``serve_app/engine/deployment.py``:
  many small batches may wait while the pipeline runs, ``MAX_WAITING_BATCHES``), and the render loop
  forms the real batch of up to ``max_batch_size``, so the warning's premise does not hold here.

Each filter matches one message by its exact wording on the one logger that emits it; anything
else those loggers say still gets through. ``serve_app/__init__.py`` installs them, so every
process that imports our code (Serve replicas included) has them before the first import of
diffusers or the first batch.
"""

from __future__ import annotations

import logging

# (logger name, a phrase only the unwanted message contains)
QUIETED: tuple[tuple[str, str], ...] = (
    ("transformers.utils.import_utils", "requires torchvision (not installed); falling back to"),
    ("ray.serve", "* `max_concurrent_batches` ("),
)


class _DropMessage(logging.Filter):
    def __init__(self, phrase: str) -> None:
        super().__init__()
        self.phrase = phrase

    def filter(self, record: logging.LogRecord) -> bool:
        return self.phrase not in record.getMessage()


def install() -> None:
    """Idempotent: a second call (a re-imported module, a test) adds no second filter."""
    for name, phrase in QUIETED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.phrase == phrase for f in logger.filters):
            logger.addFilter(_DropMessage(phrase))
