"""Figures quoted in the README and docs/ must equal the committed reports they cite.

A quoted figure carries its source right after it, as an HTML comment that Markdown does not
show::

    the recipe's FROC is 0.812<!-- accuracy/results.json summary.recipe.froc.mean -->

The path is relative to ``benchmarks/results/``; the key path walks the JSON (dots between
keys, list indices as numbers; a key may hold spaces and ``#``, as the soak's part names
do). The figure is compared with the value rounded to as many decimals as it is quoted with
(thousands separators and a trailing ``%`` or ``x`` are allowed; a ``%`` figure is the value
times 100). ``make docs-check`` and the test suite run :func:`check`; every mismatch, unknown
file or key is reported with its file and line.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = ROOT / "benchmarks" / "results"
MARKER: Final = re.compile(
    r"(?P<figure>[-+]?\d[\d,]*(?:\.\d+)?) ?(?P<unit>%|x)?\*{0,2}\s*"
    r"<!--\s*(?P<file>[\w./-]+\.json)\s+(?P<key>[\w.\-# ]+?)\s*-->"
)


@dataclass(frozen=True)
class Problem:
    """One figure that does not match its report."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _matches(figure: str, unit: str | None, value: float) -> bool:
    quoted = float(figure.replace(",", ""))
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    expected = value * 100 if unit == "%" else value
    return round(expected, decimals) == round(quoted, decimals)


def check_text(text: str, source: str, results: Path = RESULTS) -> tuple[int, list[Problem]]:
    """Check every marked figure of one document; returns (figures checked, problems)."""
    problems, cache, checked = [], {}, 0
    for number, line in enumerate(text.splitlines(), start=1):
        for match in MARKER.finditer(line):
            checked += 1
            where = f"{source}:{number}"
            path = results / match["file"]
            try:
                if path not in cache:
                    cache[path] = json.loads(path.read_text(encoding="utf-8"))
                value = _lookup(cache[path], match["key"])
            except (OSError, ValueError) as exc:
                problems.append(Problem(where, f"cannot read {path}: {exc}"))
                continue
            except (KeyError, IndexError, TypeError):
                problems.append(Problem(where, f"{match['file']} has no {match['key']}"))
                continue
            if not isinstance(value, int | float) or not _matches(
                match["figure"], match["unit"], float(value)
            ):
                problems.append(
                    Problem(
                        where,
                        f"quotes {match['figure']}{match['unit'] or ''} but "
                        f"{match['file']} {match['key']} is {value!r}",
                    )
                )
    return checked, problems


def documents(root: Path = ROOT) -> list[Path]:
    """The README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check(root: Path = ROOT) -> tuple[int, list[Problem]]:
    """Check the README and docs/; returns (figures checked, problems)."""
    total, problems = 0, []
    for path in documents(root):
        checked, found = check_text(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
        total += checked
        problems += found
    return total, problems


def main() -> int:
    """``make docs-check``: 0 when every quoted figure matches its report, else 1."""
    checked, problems = check()
    for problem in problems:
        sys.stderr.write(f"docs-check: {problem}\n")
    print(f"docs-check: {checked} quoted figures checked, {len(problems)} mismatched")
    return 1 if problems or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
