"""Evaluate a directory of per-slide detections (CSV) or probability maps (.npy).

Two protocols:

- ``camelyon16`` (the organisers'): evaluation mask at ``level`` (5); ``.npy`` maps become
  detections with NCRF's NMS (radius 12 cells, threshold 0.5) at the map's level.
- ``monai`` (``monai.apps.pathology.LesionFROC`` defaults): evaluation mask at the map's
  level; NMS with MONAI's 48-cell box and row-major tie-break. Same um formulas.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsi_tumor.errors import ConfigError, EvaluationError
from wsi_tumor.evaluation.froc import (
    EVAL_FPS,
    FloatArray,
    SlideResult,
    evaluate_slide,
    froc_curve,
    froc_score,
)
from wsi_tumor.evaluation.groundtruth import (
    find_ground_truth,
    load_tumour_mask,
    slide_geometry,
)
from wsi_tumor.evaluation.masks import (
    evaluation_mask,
    grow_threshold_px,
    itc_labels,
    itc_threshold_px,
)
from wsi_tumor.evaluation.nms import (
    NMS_BOX,
    NMS_RADIUS,
    NMS_THRESHOLD,
    Detections,
    nms,
    nms_monai,
    read_detections,
)

log = logging.getLogger(__name__)

Protocol = Literal["camelyon16", "monai"]


@dataclass(frozen=True)
class FrocConfig:
    """Resolved FROC settings (written into ``froc.json``).

    Attributes:
        protocol: ``camelyon16`` or ``monai``.
        level: Evaluation-mask level (5 for camelyon16; the map level for monai).
        map_level: Level of ``.npy`` maps; None when detections are CSVs.
        mpp: Level-0 um/px forced for every slide; None = the slide's own, else 0.243.
        nms_radius: NCRF NMS radius in map cells (camelyon16).
        nms_box: MONAI NMS box size in map cells (monai).
        nms_threshold: NMS stopping probability.
        eval_fps: FP-per-slide rates averaged into the score.
    """

    protocol: Protocol = "camelyon16"
    level: int = 5
    map_level: int | None = None
    mpp: float | None = None
    nms_radius: int = NMS_RADIUS
    nms_box: int = NMS_BOX
    nms_threshold: float = NMS_THRESHOLD
    eval_fps: tuple[float, ...] = EVAL_FPS

    @classmethod
    def build(
        cls,
        protocol: str = "camelyon16",
        level: int | None = None,
        map_level: int | None = None,
        **kwargs: Any,
    ) -> FrocConfig:
        """Resolve the level from the protocol and check the combination.

        Raises:
            ConfigError: Unknown protocol, ``monai`` without ``map_level``, a ``level``
                that contradicts it, or a negative level.
        """
        if protocol not in ("camelyon16", "monai"):
            raise ConfigError(f"unknown protocol {protocol!r}; use camelyon16 or monai")
        if protocol == "monai":
            if map_level is None:
                raise ConfigError("--protocol monai evaluates at the map's level: give --map-level")
            if level is not None and level != map_level:
                raise ConfigError(
                    f"--protocol monai evaluates at the map level {map_level}, not --level {level}"
                )
            level = map_level
        elif level is None:
            level = 5
        for name, value in (("level", level), ("map level", map_level)):
            if value is not None and not 0 <= value <= 12:
                raise ConfigError(f"{name} must be between 0 and 12, got {value}")
        mpp = kwargs.get("mpp")
        if mpp is not None and not mpp > 0:
            raise ConfigError(f"--mpp must be > 0, got {mpp}")
        return cls(protocol=protocol, level=level, map_level=map_level, **kwargs)  # type: ignore[arg-type]


@dataclass
class SlideRecord:
    """One evaluated slide: its result plus where its inputs came from."""

    result: SlideResult
    ground_truth: str
    mpp: float
    mpp_source: str
    detections_file: str


@dataclass
class FrocReport:
    """Everything ``report.py`` writes."""

    config: FrocConfig
    slides: list[SlideRecord]
    fps_per_slide: FloatArray
    sensitivity: FloatArray
    thresholds: FloatArray
    score: float
    sensitivity_at_fp: dict[float, float]
    detections: dict[str, Detections] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The config as JSON-ready values, with the level-5/0.243 thresholds for reference."""
        out = asdict(self.config)
        out["eval_fps"] = list(self.config.eval_fps)
        return out


def list_detection_files(detections_dir: str | Path, map_level: int | None) -> list[Path]:
    """``<slide>.csv`` files, or ``<slide>.npy`` when ``map_level`` is given, sorted.

    Raises:
        EvaluationError: The directory is missing or holds no such file.
    """
    directory = Path(detections_dir)
    if not directory.is_dir():
        raise EvaluationError(f"{directory}: detections directory does not exist")
    suffix = ".npy" if map_level is not None else ".csv"
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == suffix)
    if not files:
        other = ".csv" if suffix == ".npy" else ".npy"
        hint = (
            " (found .npy maps: pass --map-level L)"
            if suffix == ".csv" and any(directory.glob(f"*{other}"))
            else ""
        )
        raise EvaluationError(
            f"{directory}: no detections to evaluate: expected <slide>{suffix} files{hint}"
        )
    return files


def detections_for(path: Path, config: FrocConfig) -> Detections:
    """Read a CSV, or run the protocol's NMS on a ``.npy`` map.

    Raises:
        EvaluationError: Malformed CSV or map.
    """
    if config.map_level is None:
        return read_detections(path)
    try:
        prob_map = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: cannot load probability map: {exc}") from exc
    try:
        if config.protocol == "monai":
            return nms_monai(prob_map, config.map_level, config.nms_box, config.nms_threshold)
        return nms(prob_map, config.map_level, config.nms_radius, config.nms_threshold)
    except EvaluationError as exc:
        raise EvaluationError(f"{path}: {exc}") from exc


def evaluate_directory(
    detections_dir: str | Path,
    ground_truth_dir: str | Path,
    config: FrocConfig,
    images_dir: str | Path | None = None,
    progress: bool = False,
) -> FrocReport:
    """FROC over every slide with a detections file in ``detections_dir``.

    Args:
        detections_dir: ``<slide>.csv`` (or ``<slide>.npy`` with ``config.map_level``).
        ground_truth_dir: ``<slide>_mask.tif`` or ``<slide>.xml`` for tumour slides.
        config: Resolved settings.
        images_dir: Slides (``<slide>.tif``) for XML geometry and mpp.
        progress: Show a tqdm progress bar.

    Returns:
        The :class:`FrocReport`.

    Raises:
        EvaluationError: Any malformed input (see messages).
    """
    gt_dir = Path(ground_truth_dir)
    if not gt_dir.is_dir():
        raise EvaluationError(f"{gt_dir}: ground-truth directory does not exist")
    files = list_detection_files(detections_dir, config.map_level)
    from tqdm import tqdm

    records: list[SlideRecord] = []
    all_detections: dict[str, Detections] = {}
    for path in tqdm(files, desc="FROC", unit="slide", disable=not progress):
        slide = path.stem
        gt = find_ground_truth(gt_dir, slide)
        geometry = slide_geometry(images_dir, slide, config.mpp)
        detections = detections_for(path, config)
        tumour = load_tumour_mask(gt, config.level, geometry)
        if tumour is None:
            labels, itc = None, []
        else:
            labels = evaluation_mask(tumour, config.level, geometry.mpp)
            itc = itc_labels(labels, config.level, geometry.mpp)
        result = evaluate_slide(slide, detections, labels, itc, config.level)
        log.info(
            "%s: %s, %d detections, %d FP, %d/%d lesions hit, %d ITC",
            slide, gt.kind, result.num_detections, result.num_fp,
            result.num_lesions_hit, result.num_lesions, len(result.itc_labels),
        )  # fmt: skip
        records.append(SlideRecord(result, gt.kind, geometry.mpp, geometry.mpp_source, path.name))
        all_detections[slide] = detections
    gt_slides = {p.name.lower().rsplit("_mask", 1)[0] for p in gt_dir.glob("*_[mM]ask.tif")}
    missing = sorted(gt_slides - {r.result.name.lower() for r in records})
    if missing:
        log.warning("ground truth without detections (not evaluated): %s", ", ".join(missing))
    results = [r.result for r in records]
    fps, sens, thresholds = froc_curve(results)
    score, at = froc_score(fps, sens, config.eval_fps)
    mpps = sorted({r.mpp for r in records})
    log.info(
        "level %d, mpp %s: grow < %.3f px, ITC < %.3f px (at mpp %.4g)",
        config.level, mpps, grow_threshold_px(config.level, mpps[0]),
        itc_threshold_px(config.level, mpps[0]), mpps[0],
    )  # fmt: skip
    return FrocReport(config, records, fps, sens, thresholds, score, at, all_detections)
