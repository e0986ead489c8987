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
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsi_tumor import contract
from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.outputs import write_json
from wsi_tumor.client.slide_job import SlideJob
from wsi_tumor.client.transport import ModelInfo, TritonTransport
from wsi_tumor.errors import ConfigError, ModelMismatchError, ServerUnavailableError
from wsi_tumor.slide import SLIDE_SUFFIXES

log = logging.getLogger(__name__)

SUMMARY_NAME = "cohort_summary.json"


@dataclass
class SlideResult:
    """What happened to one slide.

    Attributes:
        slide: The slide path.
        status: ``complete``, ``skipped`` (outputs already complete) or ``failed``.
        error: One-line reason of a failure.
        error_type: Exception class name of a failure.
        report: The slide's JSON report (counts, timings) when complete.
    """

    slide: Path
    status: str
    error: str | None = None
    error_type: str | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Summary line of the cohort report."""
        line: dict[str, Any] = {"slide": str(self.slide), "status": self.status}
        if self.error is not None:
            line.update(error=self.error, error_type=self.error_type)
        if self.report:
            line["counts"] = self.report.get("counts")
            line["patches_per_s"] = self.report.get("patches_per_s")
        return line


@dataclass
class CohortResult:
    """Results of every slide of one run, in input order."""

    slides: list[SlideResult]
    summary_path: Path | None = None

    @property
    def failed(self) -> list[SlideResult]:
        """The slides that failed."""
        return [result for result in self.slides if result.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every slide is complete or skipped, 1 when any failed."""
        return 1 if self.failed else 0


def discover_slides(paths: Sequence[Path]) -> list[Path]:
    """Expand directories into their slide files (non-recursive, sorted).

    A file argument is kept whatever its suffix; a path that does not exist is kept too,
    so that it is reported as a failed slide.

    Raises:
        ConfigError: when nothing is found, or two slides share an output name (stem).
    """
    slides: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if not found:
                log.warning("%s: no slide files (%s)", path, ", ".join(sorted(SLIDE_SUFFIXES)))
            slides.extend(found)
        else:
            slides.append(path)
    if not slides:
        raise ConfigError(f"no slides found in {', '.join(str(p) for p in paths)}")
    seen: dict[str, Path] = {}
    for slide in slides:
        other = seen.setdefault(slide.stem, slide)
        if other != slide:
            raise ConfigError(
                f"{other} and {slide} would write the same outputs ({slide.stem}.*): "
                "run them into different --out directories"
            )
    return list(dict.fromkeys(slides))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(config: InferConfig, *, progress: Callable[[int], None] | None = None) -> CohortResult:
    """Process every slide of ``config`` and write the cohort summary.

    Starts the embedded server on ``config.model_repository`` when ``config.url`` is None
    (and only when some slide needs computing) and stops it afterwards.

    Args:
        config: The run's configuration.
        progress: Called on the event loop with the patch count of each finished request
            (tests use it to act mid-slide).

    Returns:
        Per-slide results; ``exit_code`` is 0 when none failed.

    Raises:
        ConfigError: no slides, clashing names.
        ServerError: the embedded server cannot start, or the server stays unreachable.
        ModelMismatchError: the served ensemble differs from the contract.
    """
    slides = discover_slides(config.slides)
    config.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    jobs = [SlideJob(slide, config) for slide in slides]
    pending = [job for job in jobs if config.overwrite or not job.outputs.complete()]
    results: dict[Path, SlideResult] = {
        job.slide: SlideResult(job.slide, "skipped") for job in jobs if job not in pending
    }
    for slide in results:
        log.info("%s: outputs complete, skipped (use --overwrite to recompute)", slide)
    if pending:
        if config.url is not None:
            computed = asyncio.run(_run_jobs(config, config.url, pending, progress))
        else:
            from wsi_tumor.serving.local_server import LocalTritonServer

            with LocalTritonServer(config.model_repository) as server:
                computed = asyncio.run(_run_jobs(config, server.grpc_url, pending, progress))
        results.update((result.slide, result) for result in computed)
    ordered = [results[job.slide] for job in jobs]
    cohort = CohortResult(ordered)
    cohort.summary_path = write_json(
        config.out / SUMMARY_NAME,
        {
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "server": config.url or f"embedded ({config.model_repository})",
            "slides": [result.to_json() for result in ordered],
            "complete": sum(r.status == "complete" for r in ordered),
            "skipped": sum(r.status == "skipped" for r in ordered),
            "failed": len(cohort.failed),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "config": config.to_json(),
        },
    )
    return cohort


def _regions_per_request(config: InferConfig, info: ModelInfo) -> int:
    wanted = config.request_regions
    if info.max_regions is None or wanted <= info.max_regions:
        return wanted
    if config.regions_per_request is not None:
        raise ModelMismatchError(
            f"model {info.name!r} accepts at most {info.max_regions} regions per request "
            f"(max_batch_size), --regions-per-request is {wanted}"
        )
    return info.max_regions


async def _run_jobs(
    config: InferConfig,
    url: str,
    jobs: Sequence[SlideJob],
    progress: Callable[[int], None] | None,
) -> list[SlideResult]:
    transport = TritonTransport(
        url,
        model_name=config.served_model,
        endpoint=config.endpoint,
        retry_timeout=config.retry_timeout,
        request_timeout=config.request_timeout,
    )
    results = []
    try:
        info = await transport.check_model(config.region_cells)
        per_request = _regions_per_request(config, info)
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
                    results.append(SlideResult(job.slide, "failed", reason, type(exc).__name__))
                    if isinstance(exc, ServerUnavailableError):
                        # The server stayed away for the whole retry window: the other slides
                        # would each wait as long again. Report them as not attempted.
                        for rest in jobs[index + 1 :]:
                            log.error("%s: FAILED: not attempted, %s", rest.slide, reason)
                            results.append(
                                SlideResult(
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
                    results.append(SlideResult(job.slide, "complete", report=report))
                bar.update(1)
    finally:
        await transport.close()
    log.debug("mask level %d, k = %d", contract.MASK_LEVEL, config.region_cells)
    return results
