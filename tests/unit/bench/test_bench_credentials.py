"""The credential-lookup bench runs end to end against moto and really hangs its second phase."""

from __future__ import annotations

import json
from pathlib import Path

from bench import credentials


def test_bench_credentials_measures_both_phases(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{credentials.START}\nold\n{credentials.END}\nafter\n")
    assert credentials.main(["--seconds", "1.5", "--out", str(tmp_path), "--no-readme"]) == 0
    (written,) = tmp_path.glob("*-credentials.json")
    report = json.loads(written.read_text())
    for phase in ("answering", "hung"):
        assert report[phase]["lookups"] > 10
        assert report[phase]["p50_ms"] <= report[phase]["p99_ms"] <= report[phase]["max_ms"]
    # The second phase did what it is named after: refreshes went out and hung, lookups went on.
    assert report["hung"]["refreshes_that_hung"] >= 1
    assert report["hung"]["answered_while_a_refresh_was_in_flight"] >= 1
    credentials.update_readme(readme, credentials.section(report, written.stem))
    text = readme.read_text()
    assert "old" not in text and "accepting, never answering" in text and text.endswith("after\n")
