"""What a ``wsi-infer`` run left in its output directory, read once for the viewer.

A slide of the cohort is one a ``<stem>.json`` report or a line of ``cohort_summary.json``
names. Its status is ``complete`` (report present, every output matching its checksum),
``failed`` (the summary's one-line reason) or ``incomplete`` (outputs damaged or cut short).
Its slide file is the one ``--slides DIR`` holds under the same name, else the path its
report recorded. Only files inside those folders and the output directory are ever handed
out: a path whose real location (symbolic links followed) lies outside is refused.

The tumour score is the slide classifier's probability where the report has one
(``"slide_classifier": {"probability": p, ...}``), else the probability map's maximum; the
page says which.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_tumor.client.outputs import SlideOutputs, output_stem
from wsi_tumor.client.runner import SUMMARY_NAME
from wsi_tumor.errors import ConfigError
from wsi_tumor.slide import SLIDE_SUFFIXES
from wsi_tumor.slide.formats import dicom_files

log = logging.getLogger(__name__)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location (links followed) lies within ``root``'s."""
    try:
        path.resolve(strict=True).relative_to(root.resolve(strict=True))
    except (OSError, ValueError, RuntimeError):
        return False
    return True


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read (%s)", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class SlideEntry:
    """One slide of the cohort as the viewer shows it.

    Attributes:
        name: The output stem (``tumor_001``), the slide's name in every URL.
        status: ``complete``, ``failed`` or ``incomplete``.
        reason: One line: why failed or incomplete.
        report: The ``<stem>.json`` report, when there is one.
        slide_path: The slide file to read tiles from, when it is found and allowed.
        slide_problem: Why there is no slide file to show.
        score: Tumour score, None without a map or classifier.
        score_source: ``slide classifier`` or ``map maximum``.
        score_note: Why the classifier gave none, when it did not.
    """

    name: str
    status: str
    reason: str | None = None
    report: dict[str, Any] | None = None
    slide_path: Path | None = None
    slide_problem: str | None = None
    score: float | None = None
    score_source: str | None = None
    score_note: str | None = None
    recorded_slide: str | None = field(default=None, repr=False)

    @property
    def precision(self) -> str:
        """``fp32``/``int8`` as the report (or its model entry) states; else ``unknown``."""
        report = self.report or {}
        model = report.get("model")
        for value in (report.get("precision"), model.get("precision") if model else None):
            if isinstance(value, str) and value:
                return value
        return "unknown"

    def row(self) -> dict[str, Any]:
        """The slide's line on the cohort page."""
        report = self.report or {}
        counts = report.get("counts") or {}
        damaged = report.get("damaged") or {}
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "score": self.score,
            "score_source": self.score_source,
            "candidates": counts.get("detections"),
            "damaged_regions": damaged.get("regions"),
            "mode": report.get("mode"),
            "precision": self.precision,
            "slide_available": self.slide_path is not None,
            "slide_problem": self.slide_problem,
        }


class Cohort:
    """The slides of one output directory, with the files the viewer may serve.

    Args:
        out: The ``wsi-infer --out`` directory.
        slide_dirs: Folders holding the slide files (``--slides``); empty: the paths the
            reports recorded.

    Raises:
        ConfigError: ``out`` is not a directory or holds no slide of a cohort.
    """

    def __init__(self, out: Path, slide_dirs: Sequence[Path] = ()) -> None:
        if not out.is_dir():
            raise ConfigError(f"{out}: not a directory (give the wsi-infer --out directory)")
        for folder in slide_dirs:
            if not folder.is_dir():
                raise ConfigError(f"--slides {folder}: not a directory")
        self.out = out
        self.slide_dirs = tuple(slide_dirs)
        self.summary = _load_json(out / SUMMARY_NAME) if (out / SUMMARY_NAME).is_file() else None
        self.entries: dict[str, SlideEntry] = {}
        for entry in self._discover():
            self.entries[entry.name] = entry
        if not self.entries:
            raise ConfigError(
                f"{out}: no slide reports (<slide>.json) and no {SUMMARY_NAME}: "
                "not a wsi-infer output directory"
            )
        files = self._slide_files()
        for entry in self.entries.values():
            self._locate(entry, files)
            self._score(entry)

    def __getitem__(self, name: str) -> SlideEntry:
        return self.entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def outputs(self, name: str) -> SlideOutputs:
        """The output paths of slide ``name``."""
        return SlideOutputs(self.out, name)

    def output_file(self, name: str, file_name: str) -> Path | None:
        """The output ``file_name`` of slide ``name`` when it is one of its outputs, exists
        and lies inside the output directory; else None."""
        if name not in self.entries:
            return None
        for path in self.outputs(name).all_paths():
            if path.name == file_name:
                if path.is_file() and inside(path, self.out):
                    return path
                if path.exists():
                    log.warning("%s: refused, it leads out of %s", path, self.out)
                return None
        return None

    def rows(self) -> list[dict[str, Any]]:
        """Every slide's line on the cohort page, in name order."""
        return [self.entries[name].row() for name in sorted(self.entries)]

    # --- reading the directory --------------------------------------------------------
    def _discover(self) -> list[SlideEntry]:
        found: dict[str, SlideEntry] = {}
        for line in (self.summary or {}).get("slides", []):
            if not isinstance(line, dict) or not isinstance(line.get("slide"), str):
                continue
            recorded = line["slide"]
            name = output_stem(Path(recorded))
            status = line.get("status")
            reason = line.get("error") if status == "failed" else None
            entry = SlideEntry(name, "failed" if status == "failed" else "complete", reason)
            entry.recorded_slide = recorded
            found[name] = entry
        for path in sorted(self.out.glob("*.json")):
            if path.name == SUMMARY_NAME or not inside(path, self.out):
                continue
            report = _load_json(path)
            if report is None or "checksums" not in report or "slide" not in report:
                continue
            name = path.stem
            entry = found.setdefault(name, SlideEntry(name, "complete"))
            entry.report = report
            entry.recorded_slide = str(report["slide"])
        for entry in found.values():
            if entry.report is None:
                if entry.status != "failed":
                    entry.status, entry.reason = "incomplete", "no report"
                continue
            problem = self.outputs(entry.name).problem()
            if problem is not None:
                entry.status, entry.reason = "incomplete", problem
            else:
                entry.status, entry.reason = "complete", None
        return list(found.values())

    def _slide_files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for folder in self.slide_dirs:
            for path in sorted(folder.iterdir()):
                if (path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES) or (
                    path.is_dir() and dicom_files(path)
                ):
                    files.setdefault(output_stem(path), path)
        return files

    def _locate(self, entry: SlideEntry, files: dict[str, Path]) -> None:
        if self.slide_dirs:
            path = files.get(entry.name)
            roots = self.slide_dirs
            if path is None:
                entry.slide_problem = (
                    f"no slide named {entry.name} in {', '.join(map(str, self.slide_dirs))}"
                )
                return
        elif entry.recorded_slide:
            path = Path(entry.recorded_slide)
            roots = (path.parent,)
        else:
            entry.slide_problem = "the report records no slide file"
            return
        if not path.exists():
            entry.slide_problem = (
                f"slide file {path} not found (moved or deleted?); the map and candidates "
                "are shown without it. Give its folder with --slides DIR"
            )
        elif not any(inside(path, root) for root in roots):
            log.warning("%s: refused, it leads out of its folder", path)
            entry.slide_problem = f"slide file {path} leads out of its folder: not served"
        else:
            entry.slide_path = path

    def _score(self, entry: SlideEntry) -> None:
        classifier = (entry.report or {}).get("slide_classifier")
        if isinstance(classifier, dict):
            probability = _number(classifier.get("probability"))
            if probability is not None:
                entry.score, entry.score_source = probability, "slide classifier"
                return
            reason = classifier.get("reason")
            entry.score_note = f"no slide classifier score: {reason}" if reason else None
        prob_map = self.output_file(entry.name, self.outputs(entry.name).prob_map.name)
        if entry.report is None or prob_map is None:
            return
        try:
            values = np.load(prob_map, mmap_mode="r", allow_pickle=False)
            entry.score = float(values.max()) if values.size else 0.0
            entry.score_source = "map maximum"
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot read the map (%s)", prob_map, exc)
