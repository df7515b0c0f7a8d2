"""Copy model weights from S3 to the node's disk before ``from_pretrained`` loads them.

GPU nodes come and go with autoscaling; each cold start must fetch several GB of weights. From an
S3 bucket in the cluster's region that is fast and free of hub rate limits, and a node that already
has the files (a restarted replica, a second replica on the node) skips them. Each file is written
under a temporary name and renamed, so a crash or a concurrent replica never sees half a file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class SyncReport:
    path: Path
    downloaded: int
    skipped: int
    bytes_downloaded: int


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def sync_s3_model(
    uri: str, cache_dir: str | Path, endpoint_url: str | None = None, client: Any = None
) -> SyncReport:
    """Mirror ``s3://bucket/prefix/`` into ``cache_dir/bucket/prefix``; returns what it did."""
    import boto3

    bucket, prefix = parse_s3_uri(uri)
    s3 = client or boto3.client("s3", endpoint_url=endpoint_url)
    target = Path(cache_dir).expanduser() / bucket / prefix
    listing_prefix = f"{prefix}/" if prefix else ""
    objects = [
        obj
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listing_prefix)
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")
    ]
    if not objects:
        raise FileNotFoundError(f"no model files under {uri}")
    total_bytes = sum(obj["Size"] for obj in objects)
    logger.info("syncing %s (%d files, %.1f MB) to %s", uri, len(objects), total_bytes / 1e6, target)
    downloaded = skipped = done_bytes = 0
    started = time.monotonic()
    for obj in objects:
        destination = target / obj["Key"][len(listing_prefix) :]
        if destination.is_file() and destination.stat().st_size == obj["Size"]:
            skipped += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
        s3.download_file(bucket, obj["Key"], str(partial))
        os.replace(partial, destination)
        downloaded += 1
        done_bytes += obj["Size"]
        logger.info(
            "  %s (%.1f MB) [%d/%d, %.0f s]",
            obj["Key"],
            obj["Size"] / 1e6,
            downloaded + skipped,
            len(objects),
            time.monotonic() - started,
        )
    logger.info("synced %s: %d downloaded, %d already present", uri, downloaded, skipped)
    return SyncReport(target, downloaded, skipped, done_bytes)
