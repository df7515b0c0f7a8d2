"""Copy model weights from S3 to the node's disk before ``from_pretrained`` loads them.

GPU nodes come and go with autoscaling; each cold start must fetch several GB of weights. From an
S3 bucket in the cluster's region that is fast and free of hub rate limits, and a node that already
has the files (a restarted replica, a second replica on the node) skips them. Constraints:

- Only what the load needs is fetched (``weight_files.select_files``: configs, and per component
  the configured variant's weights, else the defaults); a folder that lacks the variant is loaded
  with its default weights and a warning, rather than crash-looping the replica on load.
- A file is up to date when the ETag recorded beside it (``.<name>.etag``) matches the object's
  and the file is still the size and age it was written with: an object replaced by one of the
  same size is fetched again, a file damaged on disk too.
- Object keys are names chosen by whoever wrote the bucket: a key with ``..``, an absolute or an
  empty part is refused, so nothing is written outside the cache folder.
- A destination that resolves outside the cache folder (a symlinked folder or file in the cache)
  is refused too, for whole models and single objects (LoRAs) alike.
- Each file is written under a temporary name and renamed, so a crash or a concurrent replica
  never sees half a file. Temporary names are unique per call (process, thread and a random
  part): two threads of one replica fetching the same LoRA never write into one file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from serve_app.engine.model.weight_files import select_files

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class SyncReport:
    path: Path
    downloaded: int
    skipped: int  # already present and up to date
    bytes_downloaded: int
    variant: str | None = None  # what from_pretrained should load: None when the folder lacks it
    not_needed: int = 0  # objects left in S3: other variants and formats
    refused: int = 0  # keys that would have escaped the cache folder


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def contained_relative_path(relative: str) -> PurePosixPath | None:
    """The key's path below the prefix, or None when it is absolute or climbs out (``..``)."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or "\\" in relative or "\0" in relative:
        return None
    if any(part in ("", ".", "..") for part in parts):
        return None
    return PurePosixPath(*parts)


def _partial(destination: Path) -> Path:
    """A temporary name of this call's own, beside ``destination`` (same file system: rename is atomic)."""
    unique = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
    return destination.with_name(f".{destination.name}.{unique}.partial")


def _inside(cache_root: Path, destination: Path) -> Path:
    """``destination`` unless it resolves (symlinks followed) outside ``cache_root``."""
    if cache_root not in destination.resolve().parents:
        raise ValueError(f"refusing to write {destination}: outside {cache_root}")
    return destination


def _etag_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.etag")


def is_current(destination: Path, etag: str) -> bool:
    try:
        recorded = json.loads(_etag_path(destination).read_text())
        stat = destination.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("etag") == etag
        and recorded.get("size") == stat.st_size
        and recorded.get("mtime_ns") == stat.st_mtime_ns
    )


def _record_etag(destination: Path, etag: str) -> None:
    stat = destination.stat()
    marker = _etag_path(destination)
    partial = _partial(marker)
    partial.write_text(json.dumps({"etag": etag, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    os.replace(partial, marker)


def sync_s3_model(
    uri: str,
    cache_dir: str | Path,
    endpoint_url: str | None = None,
    client: Any = None,
    variant: str | None = None,
) -> SyncReport:
    """Mirror what a load of ``s3://bucket/prefix/`` needs into ``cache_dir/bucket/prefix``."""
    import boto3

    bucket, prefix = parse_s3_uri(uri)
    s3 = client or boto3.client("s3", endpoint_url=endpoint_url)
    cache_root = Path(cache_dir).expanduser().resolve()
    target = cache_root / bucket / prefix
    if contained_relative_path(f"{bucket}/{prefix}" if prefix else bucket) is None:
        raise ValueError(f"refusing to sync {uri!r}: its path would leave the cache folder")
    listing_prefix = f"{prefix}/" if prefix else ""
    objects: dict[str, dict[str, Any]] = {}
    refused = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listing_prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue  # a "folder" marker
            relative = contained_relative_path(obj["Key"][len(listing_prefix) :])
            if relative is None:
                refused += 1
                logger.warning("skipping S3 key %r: it would be written outside %s", obj["Key"], target)
                continue
            objects[str(relative)] = obj
    if not objects:
        raise FileNotFoundError(f"no model files under {uri}")
    selection = select_files(objects, variant)
    if variant is not None and selection.variant is None:
        logger.warning(
            "%s has no %r weights; loading its default weights instead (set variant to match the folder)",
            uri,
            variant,
        )
    wanted = [(relative, objects[relative]) for relative in selection.files]
    total_bytes = sum(obj["Size"] for _, obj in wanted)
    logger.info(
        "syncing %s (%d of %d files, %.1f MB) to %s",
        uri,
        len(wanted),
        len(objects),
        total_bytes / 1e6,
        target,
    )
    downloaded = skipped = done_bytes = 0
    started = time.monotonic()
    for relative, obj in wanted:
        destination = _inside(cache_root, target / relative)  # e.g. a symlinked folder in the cache
        etag = obj.get("ETag", "")
        if etag and is_current(destination, etag):
            skipped += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        _inside(cache_root, destination)  # what mkdir created is inside too
        partial = _partial(destination)
        s3.download_file(bucket, obj["Key"], str(partial))
        os.replace(partial, destination)
        if etag:
            _record_etag(destination, etag)
        downloaded += 1
        done_bytes += obj["Size"]
        logger.info(
            "  %s (%.1f MB) [%d/%d, %.0f s]",
            obj["Key"],
            obj["Size"] / 1e6,
            downloaded + skipped,
            len(wanted),
            time.monotonic() - started,
        )
    # Cold start, weight sync phase: one line with its duration (README "Cold-start budget").
    logger.info(
        "synced %s from S3: %d files, %.1f MB in %.1f s (%d already present)",
        uri,
        downloaded,
        done_bytes / 1e6,
        time.monotonic() - started,
        skipped,
    )
    return SyncReport(
        target,
        downloaded,
        skipped,
        done_bytes,
        variant=selection.variant,
        not_needed=len(selection.skipped),
        refused=refused,
    )


def sync_s3_object(
    uri: str, cache_dir: str | Path, endpoint_url: str | None = None, client: Any = None
) -> Path:
    """One object (a LoRA's ``.safetensors``) into ``cache_dir/bucket/key``, skipped when current."""
    import boto3

    bucket, key = parse_s3_uri(uri)
    relative = contained_relative_path(f"{bucket}/{key}")
    if not key or relative is None:
        raise ValueError(f"refusing to fetch {uri!r}: not an object key inside the cache folder")
    s3 = client or boto3.client("s3", endpoint_url=endpoint_url)
    cache_root = Path(cache_dir).expanduser().resolve()
    destination = _inside(cache_root, cache_root / relative)  # a symlinked folder or file in the cache
    etag = s3.head_object(Bucket=bucket, Key=key).get("ETag", "")
    if etag and is_current(destination, etag):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    _inside(cache_root, destination)
    partial = _partial(destination)
    s3.download_file(bucket, key, str(partial))
    os.replace(partial, destination)
    if etag:
        _record_etag(destination, etag)
    logger.info("fetched %s to %s", uri, destination)
    return destination
