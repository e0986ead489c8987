"""The README and docs/ quote figures from the committed reports, and quote them right."""

from __future__ import annotations

import json
from pathlib import Path

from wsi_bench import figures


def test_every_quoted_figure_matches_its_report() -> None:
    checked, problems = figures.check()
    assert checked > 0, "the README quotes no figure from a report"
    assert problems == [], "\n".join(map(str, problems))


def test_the_readme_stays_a_short_users_guide() -> None:
    """Method and history go to docs/ (issue 32): the README holds at most 250 lines."""
    lines = (figures.ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move method to docs/"


def test_a_changed_figure_is_found(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(
        json.dumps({"a": {"froc": 0.8123, "share": 0.4567, "rows": [{"n": 1234}], "b #0": 7}})
    )
    text = (
        "FROC 0.812<!-- r/results.json a.froc --> and 45.7 %<!-- r/results.json a.share -->\n"
        "| **1,234**<!-- r/results.json a.rows.0.n --> | 7<!-- r/results.json a.b #0 --> |\n"
        "wrong 0.813<!-- r/results.json a.froc -->, gone 1<!-- r/results.json a.nothing -->\n"
    )
    checked, problems = figures.check_text(text, "doc.md", tmp_path)
    assert checked == 6
    assert [str(p) for p in problems] == [
        "doc.md:3: quotes 0.813 but r/results.json a.froc is 0.8123",
        "doc.md:3: r/results.json has no a.nothing",
    ]
