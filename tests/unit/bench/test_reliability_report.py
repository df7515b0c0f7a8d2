"""RELIABILITY.md's measured section comes from one run's record, and only from it."""

from __future__ import annotations

from bench.reliability import END, START, reliability_section, replace_between

DOCUMENT = f"""| test | what it injects | what is guaranteed |
|---|---|---|
| `test_a.py::test_one`, `test_two` | x | y |
| `test_b.py` | x | y |
| `test_c.py::test_gone` | x | y |

{START}
| `test_stale.py::test_old` | from an older run | must not be read as a row |
{END}
"""

RUN = {
    "finished_at": 1_796_400_000.0,
    "commit": "abc1234",
    "outcomes": {
        "tests/serve/test_a.py::test_one": {"outcome": "passed", "duration_s": 1.0},
        "tests/serve/test_a.py::test_two[local]": {"outcome": "passed", "duration_s": 1.0},
        "tests/serve/test_a.py::test_two[s3]": {"outcome": "failed", "duration_s": 1.0},
        "tests/unit/test_b.py::test_x": {"outcome": "passed", "duration_s": 0.1},
    },
    "figures": {
        "kill": {
            "summary": "15 requests after the kill, 0 failed",
            "test": "tests/serve/test_a.py::test_one",
        },
    },
}


def test_the_section_reports_this_run_only() -> None:
    section = reliability_section(RUN, DOCUMENT)
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `test_one`, `test_two` | **failed** (1 of 3) | 15 requests after the kill, 0 failed |",
        "| `test_b.py` | passed | (no figure: the test's assertions are the result) |",
        "| `test_gone` | not run | not measured |",
    ]
    assert "abc1234" in section and "4 tests, 3 passed, 1 failed" in section


def test_writing_the_section_twice_changes_nothing() -> None:
    once = replace_between(DOCUMENT, START, END, reliability_section(RUN, DOCUMENT))
    twice = replace_between(once, START, END, reliability_section(RUN, once))
    assert once == twice and "test_old" not in once
