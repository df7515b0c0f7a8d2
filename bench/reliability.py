"""RELIABILITY.md's and README's measured figures, written from what one test run recorded.

``make test`` runs this after pytest: ``tests/run_figures.py`` left ``.cache/run_figures.json``
(every test's outcome, and the figures tests recorded with ``record_property("figure:...")``).
The guarantees table in RELIABILITY.md is prose; which of its tests passed in this run, and what
they measured, is the generated section between its markers. A test the run did not include shows
as "not run"; a figure it did not record, as not measured: nothing is carried over from older runs.

    python -m bench.reliability [--figures .cache/run_figures.json] [--check]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / ".cache" / "run_figures.json"
RELIABILITY = ROOT / "RELIABILITY.md"
README = ROOT / "README.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
PREVIEW_START, PREVIEW_END = "<!-- previews:start -->", "<!-- previews:end -->"
_REF = re.compile(r"`([A-Za-z0-9_./]+\.py)?(?:::)?([A-Za-z0-9_]+)?`")


def table_rows(document: str) -> list[list[tuple[str, str | None]]]:
    """The guarantees table's rows, each as the (file, test or None for the module) it names.

    A bare ``test_name`` inherits the file named before it in the same cell.
    """
    rows = []
    for line in document.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split(" | ", 1)[0]
        refs: list[tuple[str, str | None]] = []
        current: str | None = None
        for match in _REF.finditer(cell):
            file, name = match.group(1), match.group(2)
            if file:
                current = file
            if current is None:
                continue
            refs.append((current, name if name and name.startswith("test_") else None))
        if refs:
            rows.append(refs)
    return rows


def matching(outcomes: dict[str, dict[str, Any]], file: str, name: str | None) -> list[str]:
    """The run's node ids for ``file::name`` (all parameters) or the whole module."""
    found = []
    for nodeid in outcomes:
        path, _, test = nodeid.partition("::")
        if Path(path).name != file:
            continue
        if name is None or test.split("[", 1)[0] == name:
            found.append(nodeid)
    return found


def outcome_of(outcomes: dict[str, dict[str, Any]], nodeids: list[str]) -> str:
    if not nodeids:
        return "not run"
    states = [outcomes[n]["outcome"] for n in nodeids]
    if "failed" in states:
        return f"**failed** ({states.count('failed')} of {len(states)})"
    if all(state == "skipped" for state in states):
        return "skipped"
    passed = states.count("passed")
    return "passed" if passed == len(states) else f"passed ({passed} of {len(states)}, others skipped)"


def figures_for(figures: dict[str, dict[str, Any]], nodeids: list[str]) -> str:
    summaries = [
        str(figure["summary"])
        for _, figure in sorted(figures.items())
        if figure.get("test") in nodeids and figure.get("summary")
    ]
    return "; ".join(summaries) or "(no figure: the test's assertions are the result)"


def without_section(text: str, start: str, end: str) -> str:
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + rest.split(end, 1)[1]
    return text


def reliability_section(run: dict[str, Any], document: str) -> str:
    outcomes, figures = run["outcomes"], run["figures"]
    document = without_section(document, START, END)  # its own rows are not the table's
    when = datetime.datetime.fromtimestamp(run["finished_at"], datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    counted = [o["outcome"] for o in outcomes.values()]
    lines = [
        f"Written by `python -m bench.reliability` from the test run that finished {when}"
        f" (commit `{run.get('commit') or 'unknown'}`): {len(counted)} tests, "
        f"{counted.count('passed')} passed, {counted.count('failed')} failed, "
        f"{counted.count('skipped')} skipped. Nothing here is typed by hand or kept from an earlier run.",
        "",
        "| tests | result in this run | measured in this run |",
        "|---|---|---|",
    ]
    for refs in table_rows(document):
        nodeids = [n for file, name in refs for n in matching(outcomes, file, name)]
        names = ", ".join(f"`{name or file}`" for file, name in refs)
        measured = figures_for(figures, nodeids) if nodeids else "not measured"
        lines.append(f"| {names} | {outcome_of(outcomes, nodeids)} | {measured} |")
    return "\n".join(lines)


def preview_section(run: dict[str, Any]) -> str:
    figure = run["figures"].get("live_previews")
    if not figure:
        return (
            "CPU preview cost: not measured in the last recorded test run "
            "(`tests/serve/test_live_previews.py` records it)."
        )
    return (
        f"Measured on this 2-core CPU by `tests/serve/test_live_previews.py` in the last recorded test run "
        f"(tiny model, {figure['size']}, not a GPU figure): {figure['summary']}."
    )


def replace_between(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"markers {start} ... {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, default=FIGURES)
    parser.add_argument("--check", action="store_true", help="exit 1 if the documents would change")
    args = parser.parse_args(argv)
    if not args.figures.exists():
        print(f"{args.figures} does not exist: run the tests first", file=sys.stderr)
        return 2
    run = json.loads(args.figures.read_text())
    changed = False
    for path, start, end, make in (
        (RELIABILITY, START, END, lambda text: reliability_section(run, text)),
        (README, PREVIEW_START, PREVIEW_END, lambda text: preview_section(run)),
    ):
        text = path.read_text()
        new = replace_between(text, start, end, make(text))
        if new != text:
            changed = True
            if not args.check:
                path.write_text(new)
                print(f"rewrote the generated section of {path.name}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
