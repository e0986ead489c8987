"""A cohort on a Ray cluster: one task per slide, each a normal slide job (``wsi-infer --ray``).

The driver (this process) discovers the slides, skips those whose outputs are complete, and
submits one Ray task per remaining slide. A task runs
:func:`wsi_tumor.client.runner.run_slides` on its one slide, exactly as a single-process run
would: the same readers, mask, requests and atomic outputs, ``<stem>.json`` written last.
Its servers are the ``--url`` list when one is given (least-loaded routing and failover over
all of them), else the Triton server of its own node (``--ray-servers per-node``, see
:mod:`wsi_tumor.cluster.server_actor`), else an embedded server of its own
(``--ray-servers per-task``).

When a node dies, Ray retries its tasks on the nodes that are left (``max_retries``; a
slide's own failure, such as an unreadable file, is a result, not an exception, and is never
retried). A retried slide starts from scratch: the slide job removes the marker and any
temporary files first, every file is renamed into place only when whole, and the marker comes
last, so a slide is either complete or visibly unfinished, never a mix. A slide whose first
attempt finished writing just before its node died is found complete by the retry and not
computed again. Re-submitting the cohort redoes only the slides without a marker.

Every path (slides, ``--out``, ``--model-repository``) must name the same file on every node
(shared storage mounted at the same path); relative paths are made absolute on the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsi_tumor.client.config import RAY_MAX_RETRIES, RAY_SERVER_MODES, InferConfig
from wsi_tumor.client.outputs import SlideOutputs, output_stem
from wsi_tumor.client.runner import (
    CohortResult,
    SlideOutcome,
    discover_slides,
    write_summary,
)
from wsi_tumor.cluster import import_ray
from wsi_tumor.cluster.progress import CohortSnapshot, Ledger, first_line, start_ledger
from wsi_tumor.cluster.server_actor import (
    NodeServers,
    start_node_servers,
    stop_node_servers,
    task_nodes,
)
from wsi_tumor.cluster.task import RaySlideOutcome, run_slide_task
from wsi_tumor.errors import (
    ConfigError,
    ModelMismatchError,
    ServerUnavailableError,
)

log = logging.getLogger(__name__)

SERVER_READY_TIMEOUT_S = 180.0
"""Seconds a per-node Triton server may take to become ready."""
POLL_S = 0.5
"""How often the driver refreshes the progress while it waits for tasks."""
FATAL_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ModelMismatchError)
"""Task errors that concern every slide: the cohort stops (as a single-process run does)."""


def run_on_ray(
    config: InferConfig,
    address: str | None = None,
    *,
    slides: Sequence[Path] | None = None,
    servers: str = "per-node",
    task_cpus: float = 1.0,
    max_retries: int = RAY_MAX_RETRIES,
    progress: Callable[[CohortSnapshot], None] | None = None,
) -> CohortResult:
    """Process a cohort with one Ray task per slide; write ``cohort_summary.json`` once.

    Args:
        config: The run's configuration (as for :func:`wsi_tumor.client.runner.run`).
        address: Ray cluster address (``auto``, ``host:port``, ``ray://host:port``); None:
            Ray's default (``$RAY_ADDRESS``, a cluster started on this machine, else a new
            local one). Ignored when this process is already connected to Ray.
        slides: The slides (default: discovered from ``config.slides``).
        servers: Without ``config.urls``: ``per-node`` (one Triton server per node, run by
            an actor on ``config.model_repository``) or ``per-task`` (each task starts an
            embedded server).
        task_cpus: CPUs Ray reserves for each slide task (tasks per node = its CPUs / this).
        max_retries: Re-runs of a task whose worker or node died.
        progress: Called on the driver about twice a second with the cohort's progress
            (tests use it to act mid-cohort).

    Returns:
        Per-slide results in input order; the cohort summary's path.

    Raises:
        ConfigError: Ray is not installed or not reachable, bad arguments, no slides.
        ModelMismatchError: a task found a server whose model differs from the contract.
        ServerError: no per-node server could be started.
    """
    ray = import_ray()
    if servers not in RAY_SERVER_MODES:
        known = ", ".join(RAY_SERVER_MODES)
        raise ConfigError(f"--ray-servers must be one of {known}, got {servers}")
    if task_cpus <= 0:
        raise ConfigError(f"--ray-task-cpus must be > 0, got {task_cpus}")
    if max_retries < 0:
        raise ConfigError(f"--ray-max-retries must be >= 0, got {max_retries}")
    config = absolute_paths(config)
    found = discover_slides(config.slides) if slides is None else [Path(s) for s in slides]
    found = [s.absolute() for s in found]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    endpoint = config.endpoint()
    config.out.mkdir(parents=True, exist_ok=True)

    outcomes: dict[Path, SlideOutcome] = {}
    todo = []
    for slide in found:
        outputs = SlideOutputs(config.out, output_stem(slide))
        if config.overwrite:
            # recompute from here on; tasks never overwrite, so that the retry of an attempt
            # that finished its slide just before its node died keeps that slide
            outputs.invalidate()
            todo.append(slide)
        elif outputs.complete():
            log.info("%s: outputs complete, skipped (use --overwrite to recompute)", slide)
            outcomes[slide] = SlideOutcome(slide, "skipped")
        else:
            todo.append(slide)

    if todo:
        owns_connection = not ray.is_initialized()
        if owns_connection:
            connect(ray, address)
        try:
            outcomes.update(
                _run_tasks(ray, config, todo, servers, task_cpus, max_retries, progress)
            )
        finally:
            if owns_connection:
                ray.shutdown()
    results = [outcomes[slide] for slide in found]
    cohort = CohortResult(results)
    cohort.summary_path = write_summary(config, results, started, endpoint)
    return cohort


def absolute_paths(config: InferConfig) -> InferConfig:
    """``config`` with slides, output folder and repository made absolute (tasks run elsewhere)."""
    return replace(
        config,
        slides=tuple(Path(s).absolute() for s in config.slides),
        out=Path(config.out).absolute(),
        model_repository=Path(config.model_repository).absolute(),
    )


def connect(ray: Any, address: str | None) -> None:
    """Connect this process to the Ray cluster at ``address``.

    Raises:
        ConfigError: no cluster there.
    """
    try:
        ray.init(address=address or None, logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--ray {address or '(default)'}: cannot connect to Ray: {exc}") from None
    log.info(
        "Ray cluster: %d alive node(s), %s CPUs",
        sum(1 for node in ray.nodes() if node.get("Alive")),
        ray.cluster_resources().get("CPU", 0),
    )


def _run_tasks(
    ray: Any,
    config: InferConfig,
    slides: list[Path],
    servers: str,
    task_cpus: float,
    max_retries: int,
    progress: Callable[[CohortSnapshot], None] | None,
) -> dict[Path, SlideOutcome]:
    node_servers = NodeServers()
    try:
        if not config.urls and servers == "per-node":
            nodes = task_nodes(ray, task_cpus)
            if not nodes:
                raise ConfigError(f"no alive Ray node has the {task_cpus} CPUs a slide task needs")
            start_node_servers(
                ray, node_servers, config.model_repository, nodes, SERVER_READY_TIMEOUT_S
            )
        return _gather(ray, config, slides, node_servers.urls, task_cpus, max_retries, progress)
    finally:
        stop_node_servers(ray, node_servers)


def _gather(
    ray: Any,
    config: InferConfig,
    slides: list[Path],
    node_urls: dict[str, str],
    task_cpus: float,
    max_retries: int,
    progress: Callable[[CohortSnapshot], None] | None,
) -> dict[Path, SlideOutcome]:
    ledger = Ledger(ray, start_ledger(ray, len(slides)))
    task = ray.remote(run_slide_task).options(
        num_cpus=task_cpus, max_retries=max_retries, retry_exceptions=False
    )
    pending = {task.remote(config, slide, node_urls, ledger.actor): slide for slide in slides}
    log.info("submitted %d slide tasks (%s CPU each)", len(pending), task_cpus)
    results: dict[Path, SlideOutcome] = {}
    snapshot: CohortSnapshot | None = None
    try:
        with tqdm(total=len(slides), desc="cohort", unit="slide", disable=config.quiet) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
                for ref in ready:
                    slide = pending.pop(ref)
                    outcome = _collect(ray, ref, slide)
                    if isinstance(outcome, RaySlideOutcome):
                        outcome.attempt = ledger.call("attempts", str(slide)) or 0
                        _log_outcome(outcome)
                    ledger.send("finish", str(slide))
                    results[slide] = outcome
                    bar.update(1)
                    if config.urls and outcome.error_type == ServerUnavailableError.__name__:
                        # no --url server came back in a whole retry window: the other
                        # slides would each wait as long again (as in a single-process run)
                        results.update(_give_up(ray, pending, outcome.error or ""))
                        bar.update(len(pending))
                        pending.clear()
                        break
                snapshot = ledger.call("snapshot") or snapshot
                if snapshot is not None:
                    bar.set_postfix_str(snapshot.describe())
                    if progress is not None:
                        progress(snapshot)
    except BaseException:
        _cancel(ray, pending)
        raise
    finally:
        with contextlib.suppress(Exception):
            ray.kill(ledger.actor)
    if snapshot is not None:
        log.info("cohort: %d patches, %s", snapshot.patches, snapshot.describe())
    return results


def _cancel(ray: Any, pending: dict[Any, Path]) -> None:
    """Cancel tasks: a running one gets KeyboardInterrupt, so its temporary files go too."""
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)


def _give_up(ray: Any, pending: dict[Any, Path], reason: str) -> dict[Path, SlideOutcome]:
    """Cancel the pending tasks; report their slides as failed, not attempted."""
    _cancel(ray, pending)
    failed = {}
    for slide in pending.values():
        log.error("%s: FAILED: not attempted, %s", slide, reason)
        failed[slide] = SlideOutcome(
            slide, "failed", f"not attempted: {reason}", ServerUnavailableError.__name__
        )
    return failed


def _collect(ray: Any, ref: Any, slide: Path) -> SlideOutcome:
    """The outcome of a finished task; FATAL_ERRORS are raised, other errors are a failure."""
    try:
        outcome: SlideOutcome = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the task raised: run_slides' start-up errors
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        if isinstance(cause, FATAL_ERRORS):
            raise cause from None
        reason = first_line(cause)
        log.error("%s: FAILED (%s): %s", slide, type(cause).__name__, reason)
        return SlideOutcome(slide, "failed", reason, type(cause).__name__)
    except ray.exceptions.RayError as exc:  # worker or node died more than max_retries times
        reason = f"task lost after its retries: {first_line(exc)}"
        log.error("%s: FAILED (%s): %s", slide, type(exc).__name__, reason)
        return SlideOutcome(slide, "failed", reason, type(exc).__name__)
    return outcome


def _log_outcome(outcome: RaySlideOutcome) -> None:
    where = f"node {(outcome.node_id or '?')[:8]}" + (
        f", attempt {outcome.attempt}" if outcome.attempt > 1 else ""
    )
    if outcome.status == "failed":
        log.error(
            "%s: FAILED (%s): %s (%s)", outcome.slide, outcome.error_type, outcome.error, where
        )
        return
    if outcome.earlier_attempt:
        log.warning("%s: completed by an earlier attempt (%s)", outcome.slide, where)
        return
    log.info(
        "%s: %d patches, %.1f patches/s (%s)",
        outcome.slide,
        outcome.report.get("counts", {}).get("patches", 0),
        outcome.report.get("patches_per_s", 0.0),
        where,
    )
