"""Run a cohort: find slides, reach or start the server, process each slide, summarise.

One event loop drives the whole cohort; slides are processed one after another, each
streaming its regions through :func:`wsi_tumor.client.stream.stream_slide`. A slide that
fails (unreadable, no tissue, server errors after retries) is recorded and the next one
starts; only a problem that concerns every slide (bad flags, a server that cannot be
started, a model that does not match the contract) stops the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsi_tumor import contract
from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.endpoints import Endpoint
from wsi_tumor.client.outputs import output_stem
from wsi_tumor.client.pool import ServerPool
from wsi_tumor.client.slide_job import SlideJob
from wsi_tumor.client.transport import ModelInfo
from wsi_tumor.errors import ConfigError, ModelMismatchError, ServerUnavailableError
from wsi_tumor.fileio import peak_rss_mib, write_json
from wsi_tumor.slide import SLIDE_SUFFIXES
from wsi_tumor.slide.formats import dicom_files

log = logging.getLogger(__name__)

SUMMARY_NAME = "cohort_summary.json"


@dataclass
class SlideOutcome:
    """What happened to one slide.

    Attributes:
        slide: The slide path.
        status: ``complete``, ``skipped`` (outputs already complete) or ``failed``.
        error: One-line reason of a failure.
        error_type: Exception class name of a failure.
        report: The slide's JSON report (counts, timings) when complete.
        reader: What opened the slide (reader, format, fallbacks), when it was opened.
    """

    slide: Path
    status: str
    error: str | None = None
    error_type: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    reader: dict[str, object] | None = None

    def to_json(self) -> dict[str, Any]:
        """Summary line of the cohort report."""
        line: dict[str, Any] = {"slide": str(self.slide), "status": self.status}
        if self.error is not None:
            line.update(error=self.error, error_type=self.error_type)
        if self.report:
            line["counts"] = self.report.get("counts")
            line["patches_per_s"] = self.report.get("patches_per_s")
            scored = self.report.get("slide_classifier") or {}
            line["tumour_probability"] = scored.get("probability")
            line["map_max"] = scored.get("map_max")
        reader = self.report.get("reader", self.reader)
        if reader:
            line["reader"] = reader
        return line


@dataclass
class CohortResult:
    """Results of every slide of one run, in input order."""

    slides: list[SlideOutcome]
    summary_path: Path | None = None

    @property
    def failed(self) -> list[SlideOutcome]:
        """The slides that failed."""
        return [result for result in self.slides if result.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every slide is complete or skipped, 1 when any failed."""
        return 1 if self.failed else 0


def discover_slides(paths: Sequence[Path]) -> list[Path]:
    """Expand directories into their slides (non-recursive, sorted).

    A directory gives its files with a slide ending (:data:`SLIDE_SUFFIXES`, ``.dcm``
    aside) and its sub-folders that hold a DICOM WSI; a directory that is itself a DICOM
    WSI is one slide. A file argument is kept whatever its suffix; a path that does not
    exist is kept too, so that it is reported as a failed slide.

    Raises:
        ConfigError: when nothing is found, or two slides share an output name.
    """
    slides: list[Path] = []
    for path in paths:
        if not path.is_dir() or dicom_files(path):
            slides.append(path)
        else:
            found = sorted(
                p
                for p in path.iterdir()
                if (p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES and p.suffix != ".dcm")
                or (p.is_dir() and dicom_files(p))
            )
            if not found:
                log.warning("%s: no slides (%s)", path, ", ".join(sorted(SLIDE_SUFFIXES)))
            slides.extend(found)
    if not slides:
        raise ConfigError(f"no slides found in {', '.join(str(p) for p in paths)}")
    seen: dict[str, Path] = {}
    for slide in slides:
        stem = output_stem(slide)
        other = seen.setdefault(stem, slide)
        if other != slide:
            raise ConfigError(
                f"{other} and {slide} would write the same outputs ({stem}.*): "
                "run them into different --out directories"
            )
    return list(dict.fromkeys(slides))


def run(
    config: InferConfig,
    *,
    endpoint: Endpoint | None = None,
    progress: Callable[[int], None] | None = None,
) -> CohortResult:
    """Process every slide of ``config`` and write the cohort summary.

    Args:
        config: The run's configuration.
        endpoint: The served endpoint; default: the one of ``config.mode``.
        progress: Called on the event loop with the patch count of each finished request
            (tests use it to act mid-slide).

    Returns:
        Per-slide results; ``exit_code`` is 0 when none failed.

    Raises:
        ConfigError: no slides, clashing names.
        ServerError: the embedded server cannot start, or no server becomes reachable.
        ModelMismatchError: a served model differs from the contract.
    """
    slides = discover_slides(config.slides)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    endpoint = endpoint or config.endpoint()
    outcomes = run_slides(config, slides, endpoint=endpoint, progress=progress)
    cohort = CohortResult(outcomes)
    cohort.summary_path = write_summary(config, outcomes, started, endpoint)
    return cohort


def run_slides(
    config: InferConfig,
    slides: Sequence[Path],
    *,
    endpoint: Endpoint | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SlideOutcome]:
    """Process ``slides`` (already discovered) in order; write no cohort summary.

    Complete slides are skipped unless ``config.overwrite``. The servers are
    ``config.urls``; without one, an embedded server on ``config.model_repository`` is
    started (only when some slide needs computing) and stopped afterwards. This is the unit
    of work everywhere: the local cohort and each task of a cluster cohort.

    Raises:
        ServerError, ModelMismatchError: as :func:`run`.
    """
    config.out.mkdir(parents=True, exist_ok=True)
    endpoint = endpoint or config.endpoint()
    jobs = [SlideJob(slide, config) for slide in slides]
    pending = []
    for job in jobs:
        problem = job.outputs.problem()
        if config.overwrite or problem is not None:
            if problem not in (None, "no report"):
                log.warning("%s: outputs not intact (%s): recomputing", job.slide, problem)
            pending.append(job)
    results: dict[Path, SlideOutcome] = {
        job.slide: SlideOutcome(job.slide, "skipped") for job in jobs if job not in pending
    }
    for slide in results:
        log.info("%s: outputs complete, skipped (use --overwrite to recompute)", slide)
    if pending:
        if config.urls:
            computed = asyncio.run(_run_jobs(config, endpoint, config.urls, pending, progress))
        else:
            from wsi_tumor.serving.local_server import LocalTritonServer

            with LocalTritonServer(config.model_repository) as server:
                computed = asyncio.run(
                    _run_jobs(config, endpoint, [server.grpc_url], pending, progress)
                )
        results.update((result.slide, result) for result in computed)
    return [results[job.slide] for job in jobs]


def write_summary(
    config: InferConfig, outcomes: Sequence[SlideOutcome], started: str, endpoint: Endpoint
) -> Path:
    """Write ``cohort_summary.json`` (every slide's outcome) atomically; return its path."""
    return write_json(
        config.out / SUMMARY_NAME,
        {
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "servers": list(config.urls) or [f"embedded ({config.model_repository})"],
            "endpoint": endpoint.model_name,
            "slides": [result.to_json() for result in outcomes],
            "complete": sum(r.status == "complete" for r in outcomes),
            "skipped": sum(r.status == "skipped" for r in outcomes),
            "failed": sum(r.status == "failed" for r in outcomes),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "config": config.to_json(),
        },
    )


REQUEST_BYTES = 24 << 20
"""Pixel bytes one request may carry by default (with ``--inflight`` it bounds memory): the
model's limit or this, whichever allows fewer regions (4 regions of k = 8, 5 of k = 16,
one of k = 32)."""


def _regions_per_request(config: InferConfig, info: ModelInfo) -> int:
    wanted = config.regions_per_request
    if wanted is None:
        region_bytes = contract.region_size(config.cells) ** 2 * contract.CHANNELS
        by_bytes = max(1, REQUEST_BYTES // region_bytes)
        return min(info.max_regions or by_bytes, by_bytes)
    if info.max_regions is not None and wanted > info.max_regions:
        raise ModelMismatchError(
            f"model {info.name!r} accepts at most {info.max_regions} regions of k = "
            f"{config.cells} per request, --regions-per-request is {wanted}"
        )
    return wanted


async def _run_jobs(
    config: InferConfig,
    endpoint: Endpoint,
    urls: Sequence[str],
    jobs: Sequence[SlideJob],
    progress: Callable[[int], None] | None,
) -> list[SlideOutcome]:
    transport = ServerPool(
        urls,
        endpoint,
        retry_timeout=config.retry_timeout,
        request_timeout=config.request_timeout,
    )
    results = []
    try:
        info = await transport.start(config.cells)
        classifier = info.slide_classifier  # a mismatched one stops the run before any slide
        log.info(
            "slide classifier: %s",
            f"fitted on {classifier.fitted_on.get('slides', '?')} slides"
            if classifier
            else "none in the repository",
        )
        per_request = _regions_per_request(config, info)
        transport.regions_per_request = per_request
        with tqdm(
            total=len(jobs), desc="cohort", unit="slide", position=0, disable=config.quiet
        ) as bar:
            for index, job in enumerate(jobs):
                start = time.perf_counter()
                try:
                    report = await job.run(transport, info, per_request, progress)
                except Exception as exc:  # one slide's failure must not stop the cohort
                    reason = str(exc).splitlines()[0] if str(exc) else repr(exc)
                    log.error("%s: FAILED (%s): %s", job.slide, type(exc).__name__, reason)
                    log.debug("traceback of %s", job.slide, exc_info=True)
                    results.append(
                        SlideOutcome(
                            job.slide, "failed", reason, type(exc).__name__, reader=job.reader
                        )
                    )
                    if isinstance(exc, ServerUnavailableError):
                        # No server came back in the whole retry window: the other slides
                        # would each wait as long again. Report them as not attempted.
                        for rest in jobs[index + 1 :]:
                            log.error("%s: FAILED: not attempted, %s", rest.slide, reason)
                            results.append(
                                SlideOutcome(
                                    rest.slide,
                                    "failed",
                                    f"not attempted: {reason}",
                                    type(exc).__name__,
                                )
                            )
                        bar.update(len(jobs) - index)
                        break
                else:
                    log.info(
                        "%s: %d patches in %.1f s (%.1f patches/s), %d detections",
                        job.slide,
                        report["counts"]["patches"],
                        time.perf_counter() - start,
                        report["patches_per_s"],
                        report["counts"]["detections"],
                    )
                    results.append(SlideOutcome(job.slide, "complete", report=report))
                bar.update(1)
    finally:
        await transport.close()
    log.debug("mask level %d, k = %d", contract.MASK_LEVEL, config.cells)
    return results
