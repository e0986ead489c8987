"""Write a FROC report: ``froc.json``, ``froc_curve.csv``, ``froc_curve.png``, detections."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from wsi_tumor.evaluation.evaluate import FrocReport
from wsi_tumor.evaluation.nms import write_detections
from wsi_tumor.evaluation.slide_level import SlideLevel
from wsi_tumor.fileio import atomic_path, write_json, write_text

log = logging.getLogger(__name__)


def _fp_key(rate: float) -> str:
    """0.25 -> "0.25", 1.0 -> "1" (the keys of ``sensitivity_at_fp``)."""
    return f"{rate:g}"


def report_dict(report: FrocReport) -> dict[str, Any]:
    """The content of ``froc.json``."""
    slides = []
    for rec in report.slides:
        r = rec.result
        slides.append(
            {
                "slide": r.name,
                "ground_truth": rec.ground_truth,
                "detections_file": rec.detections_file,
                "detections": r.num_detections,
                "tp_detections": r.num_tp_detections,
                "fp": r.num_fp,
                "itc_detections_ignored": r.num_itc_detections,
                "lesions": r.num_lesions,
                "lesions_hit": r.num_lesions_hit,
                "itc": len(r.itc_labels),
                "mpp": rec.mpp,
                "mpp_source": rec.mpp_source,
            }
        )
    results = [rec.result for rec in report.slides]
    return {
        "froc": report.score,
        "sensitivity_at_fp": {_fp_key(k): v for k, v in report.sensitivity_at_fp.items()},
        "slides_evaluated": len(results),
        "tumour_slides": sum(r.is_tumour for r in results),
        "lesions": sum(r.num_lesions for r in results),
        "itc": sum(len(r.itc_labels) for r in results),
        "lesions_hit": sum(r.num_lesions_hit for r in results),
        "fp": sum(r.num_fp for r in results),
        "settings": report.settings(),
        "per_slide": slides,
    }


def write_curve_csv(path: Path, report: FrocReport) -> None:
    """One row per curve point: threshold (empty for the final (0, 0)), FPs/slide, sens."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["threshold", "fps_per_slide", "sensitivity"])
        points = zip(report.thresholds, report.fps_per_slide, report.sensitivity, strict=True)
        for t, f, s in points:
            threshold = "" if math.isnan(t) else repr(float(t))
            writer.writerow([threshold, repr(float(f)), repr(float(s))])


def write_curve_png(path: Path, report: FrocReport) -> None:
    """Plot the curve (matplotlib Agg) with the six evaluation points marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(report.fps_per_slide, report.sensitivity, "-", color="black", label="FROC")
    rates = list(report.sensitivity_at_fp)
    ax.plot(rates, [report.sensitivity_at_fp[r] for r in rates], "o", color="tab:red",
            label=f"score {report.score:.4f}")  # fmt: skip
    right = max(10.0, float(report.fps_per_slide.max(initial=0.0)))
    if report.fps_per_slide.size and report.fps_per_slide[0] < right:
        # np.interp holds the last sensitivity beyond the curve: show it dashed
        ax.plot([report.fps_per_slide[0], right], [report.sensitivity[0]] * 2, "--", color="gray")
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlim(0, right)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Average number of false positives per slide")
    ax.set_ylabel("Metastasis detection sensitivity")
    ax.set_title(f"FROC ({report.config.protocol}, level {report.config.level})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_roc(out: Path, slide_level: SlideLevel) -> dict[str, Path]:
    """``roc_curve.csv`` (fpr, tpr) and ``roc_curve.png`` of the slide-level task."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    paths = {"roc_csv": out / "roc_curve.csv", "roc_png": out / "roc_curve.png"}
    rows = "".join(f"{f!r},{t!r}\n" for f, t in zip(slide_level.fpr, slide_level.tpr, strict=True))
    write_text(paths["roc_csv"], "fpr,tpr\n" + rows)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(slide_level.fpr, slide_level.tpr, "-", color="black", drawstyle="default")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("False positive rate (normal slides)")
    ax.set_ylabel("True positive rate (tumour slides)")
    ax.set_title(f"Slide-level ROC ({slide_level.score_rule}), AUC {slide_level.auc:.4f}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(paths["roc_png"]) as temporary:
        fig.savefig(temporary, format="png")
    return paths


def write_report(
    out_dir: str | Path, report: FrocReport, slide_level: SlideLevel | None = None
) -> dict[str, Path]:
    """Write every output under ``out_dir`` (created if needed).

    Writes ``froc.json``, ``froc_curve.csv``, ``froc_curve.png``, with ``slide_level`` also
    ``roc_curve.csv`` and ``roc_curve.png`` (and a ``slide_level`` block in the JSON), and,
    when detections came from probability maps, ``detections/<slide>.csv`` (what NMS
    produced).

    Returns:
        Name -> path of each file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "froc.json",
        "csv": out / "froc_curve.csv",
        "png": out / "froc_curve.png",
    }
    data = report_dict(report)
    if slide_level is not None:
        data["slide_level"] = slide_level.to_json()
        paths.update(write_roc(out, slide_level))
    with atomic_path(paths["csv"]) as temporary:
        write_curve_csv(temporary, report)
    with atomic_path(paths["png"]) as temporary:
        write_curve_png(temporary, report)
    write_json(paths["json"], data)
    if report.config.map_level is not None:
        det_dir = out / "detections"
        det_dir.mkdir(exist_ok=True)
        for slide, det in report.detections.items():
            write_detections(det_dir / f"{slide}.csv", det)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
