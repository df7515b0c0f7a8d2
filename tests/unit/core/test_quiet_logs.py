"""The start-up noise filters drop exactly the misleading messages, and nothing else."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from serve_app.core import quiet_logs


@pytest.mark.parametrize(
    ("logger_name", "message", "kept"),
    [
        (
            "ray.serve",
            "`max_batch_size` (8) * `max_concurrent_batches` (256) is larger than "
            "`max_ongoing_requests` (256).",
            False,
        ),
        ("ray.serve", "Replica died unexpectedly.", True),
        (
            "transformers.utils.import_utils",
            "`CLIPImageProcessor` requires torchvision (not installed); falling back to "
            "`CLIPImageProcessorPil`",
            False,
        ),
        ("transformers.utils.import_utils", "Could not import module 'x'.", True),
    ],
)
def test_only_the_misleading_message_is_dropped(logger_name: str, message: str, kept: bool) -> None:
    quiet_logs.install()
    quiet_logs.install()  # idempotent
    logger = logging.getLogger(logger_name)
    assert sum(isinstance(f, quiet_logs._DropMessage) for f in logger.filters) == 1
    record = logger.makeRecord(logger_name, logging.WARNING, __file__, 1, message, None, None)
    assert bool(logger.filter(record)) is kept


def test_importing_diffusers_through_our_package_prints_no_torchvision_warning() -> None:
    """What a replica does: our package first, then diffusers' pipelines (which import the CLIP names)."""
    code = "import serve_app, diffusers; from diffusers import StableDiffusionPipeline"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torchvision" not in result.stderr, result.stderr
