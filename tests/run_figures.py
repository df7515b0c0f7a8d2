"""A pytest plugin: what this run measured, for the generated sections of RELIABILITY.md and README.

Tests record figures with pytest's own ``record_property("figure:<name>", {...})`` (a dict of
measured values plus a ``summary`` sentence built from them). Properties travel in the test
reports, so this works the same under xdist: the controller, never a worker, collects every
test's outcome and figures and writes ``.cache/run_figures.json`` when the session ends.
``python -m bench.reliability`` (run by ``make test`` after pytest) writes the documents' generated
sections from that file alone: a figure not measured in the run shows as not measured, never as
an older value.

Loaded with ``-p run_figures`` (pyproject's addopts).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

FIGURES_FILE = Path(__file__).resolve().parent.parent / ".cache" / "run_figures.json"
PREFIX = "figure:"

_outcomes: dict[str, dict[str, Any]] = {}
_figures: dict[str, dict[str, Any]] = {}
_started = time.time()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[report.nodeid] = {"outcome": report.outcome, "duration_s": round(report.duration, 2)}
    for name, value in report.user_properties:
        if isinstance(name, str) and name.startswith(PREFIX) and isinstance(value, dict):
            _figures[name[len(PREFIX) :]] = {**value, "test": report.nodeid}


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or not _outcomes:
        return  # an xdist worker (the controller gets its reports), or nothing ran
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    partial = FIGURES_FILE.with_suffix(".partial")
    partial.write_text(
        json.dumps(
            {
                "started_at": _started,
                "finished_at": time.time(),
                "commit": _commit(),
                "exitstatus": int(exitstatus),
                "outcomes": _outcomes,
                "figures": _figures,
            },
            indent=1,
            sort_keys=True,
        )
    )
    partial.replace(FIGURES_FILE)
