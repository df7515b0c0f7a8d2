"""Write what bootstrap resolved (region, AMI, security group, image) into cluster.yaml in place.

`ray up cluster.yaml` has to stay the command, and Ray reads no variables or includes from a
cluster config, so the resolved ids must land in the file itself. Only lines that end in a marker
comment ``# raydiffusion-aws: <key>`` are rewritten, value only: every other line, comment and
knob of the user's is left byte for byte as it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MARKER = "raydiffusion-aws:"
# "<indent><key>: <value>  # raydiffusion-aws: name"  or  "<indent>- <value>  # raydiffusion-aws: name"
_LINE = re.compile(
    r"^(?P<head>\s*(?:-\s+|[A-Za-z_][\w.-]*:\s+))(?P<value>.*?)(?P<tail>\s+#\s*"
    + MARKER
    + r"\s*(?P<key>[\w-]+)\s*)$"
)


class StampError(Exception):
    """cluster.yaml lacks a marker bootstrap needs, or a value would not round-trip through YAML."""


def marked_keys(text: str) -> dict[str, int]:
    """How many lines carry each marker key."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            counts[match["key"]] = counts.get(match["key"], 0) + 1
    return counts


def stamp_text(text: str, values: dict[str, Any]) -> str:
    """Return ``text`` with every marked line's value replaced by ``values[key]``.

    Values are written as JSON, which is valid YAML flow syntax, so strings with ``|`` or ``:`` and
    lists survive the round trip; the result is parsed again to prove it.
    """
    missing = set(values) - set(marked_keys(text))
    if missing:
        raise StampError(f"cluster.yaml has no '# {MARKER} <key>' line for: {', '.join(sorted(missing))}")
    out = []
    for line in text.splitlines(keepends=True):
        ending = "\n" if line.endswith("\n") else ""
        match = _LINE.match(line.rstrip("\n"))
        if match and match["key"] in values:
            line = f"{match['head']}{json.dumps(values[match['key']])}{match['tail']}{ending}"
        out.append(line)
    stamped = "".join(out)
    yaml.safe_load(stamped)  # a value that breaks the YAML must fail here, not in `ray up`
    return stamped


def stamp_file(path: Path, values: dict[str, Any], dry_run: bool = False) -> list[str]:
    """Stamp ``path``; returns the keys whose value changed (nothing is written on a dry run)."""
    before = path.read_text()
    after = stamp_text(before, values)
    changed = [key for key in sorted(values) if _values_of(before, key) != _values_of(after, key)]
    if changed and not dry_run:
        path.write_text(after)
    return changed


def current_values(text: str) -> dict[str, list[Any]]:
    """Every marked key with the values its lines hold now (for `status`)."""
    return {key: _values_of(text, key) for key in marked_keys(text)}


def _values_of(text: str, key: str) -> list[Any]:
    values = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match["key"] == key:
            values.append(yaml.safe_load(match["value"]) if match["value"] else None)
    return values
