"""The task side of a Ray cohort: one slide job on the node Ray chose, and its outcome."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wsi_tumor.client.config import InferConfig
from wsi_tumor.client.outputs import SlideOutputs, output_stem
from wsi_tumor.client.runner import SlideOutcome, run_slides
from wsi_tumor.cluster.progress import PatchReporter
from wsi_tumor.errors import WsiTumorError

log = logging.getLogger(__name__)


@dataclass
class RaySlideOutcome(SlideOutcome):
    """A :class:`~wsi_tumor.client.runner.SlideOutcome` and where its task ran.

    Attributes:
        node_id: Ray node id (hex) of the attempt that returned the result.
        node_ip: That node's IP address.
        attempt: Its attempt number (1 = first; 0 = unknown); > 1 after a retry.
        task_s: Wall seconds of that attempt.
        earlier_attempt: The slide was found complete: an earlier attempt of this cohort
            finished it before its node died, so this one computed nothing.
    """

    node_id: str | None = None
    node_ip: str | None = None
    attempt: int = 0
    task_s: float | None = None
    earlier_attempt: bool = False

    def to_json(self) -> dict[str, Any]:
        """The summary line of :class:`SlideOutcome`, plus the node and attempt."""
        line = super().to_json()
        if self.node_id is not None:
            line["ray"] = {
                "node_id": self.node_id,
                "node_ip": self.node_ip,
                "attempt": self.attempt,
                "task_s": self.task_s,
                "earlier_attempt": self.earlier_attempt,
            }
        return line


def run_slide_task(
    config: InferConfig, slide: Path, node_urls: dict[str, str], ledger: Any = None
) -> RaySlideOutcome:
    """The body of one slide's Ray task: :func:`run_slides` on ``slide``, on this node.

    The servers are ``config.urls``, else this node's entry of ``node_urls`` (its per-node
    server), else an embedded server started for this task. Computes nothing when the slide
    is already complete (an earlier attempt finished it) and then returns that attempt's
    report as a complete outcome. Never blocks on another task or actor: a task blocked in
    ``ray.get`` lends its CPUs to more tasks than the node has.

    Raises:
        ServerError, ModelMismatchError: as :func:`run_slides` (no server reachable, a
            model that differs from the contract); a slide's own failure is returned.
    """
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    urls = config.urls
    if not urls and node_urls:
        url = node_urls.get(node_id)
        if url is None:
            log.warning("%s: node %s has no Triton server; starting one", slide, node_id[:8])
        urls = (url,) if url else ()
    task_config = replace(config, slides=(slide,), urls=urls, quiet=True, overwrite=False)
    reporter = PatchReporter(ledger, str(slide), node_id)
    start = time.perf_counter()
    try:
        [outcome] = run_slides(task_config, [slide], progress=reporter)
    finally:
        reporter.close()
    result = RaySlideOutcome(
        slide=outcome.slide,
        status=outcome.status,
        error=outcome.error,
        error_type=outcome.error_type,
        report=outcome.report,
        reader=outcome.reader,
        node_id=node_id,
        node_ip=_node_ip(ray),
        task_s=round(time.perf_counter() - start, 3),
    )
    if outcome.status == "skipped":  # only incomplete slides are submitted
        result.status, result.earlier_attempt = "complete", True
        result.report = _read_report(SlideOutputs(config.out, output_stem(slide)).report)
    return result


def _node_ip(ray: Any) -> str | None:
    try:
        return str(ray.util.get_node_ip_address())
    except Exception:
        return None


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WsiTumorError(f"{path}: cannot read the report of a complete slide: {exc}") from exc
    return report
