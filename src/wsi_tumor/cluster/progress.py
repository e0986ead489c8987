"""Progress of a cohort spread over a Ray cluster: slides done, patches/s per node and summed.

Each slide task reports to one small actor (:class:`ProgressLedger`, run as a Ray actor on
the driver's node): when an attempt starts (which also numbers the attempts of a slide, so a
retry after a node died is visible) and, batched, how many patches its requests answered.
The driver reads a :class:`CohortSnapshot` from it while it waits for the tasks.

Tasks only send (``actor.method.remote``) and never wait for an answer: a task blocked in
``ray.get`` hands its CPUs back to Ray, which would then start more tasks on its node than
it has CPUs. Progress is best effort: a task that cannot reach the ledger still processes its
slide.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
"""A task sends its patch count to the ledger at most this often."""


@dataclass(frozen=True)
class RunningSlide:
    """The latest attempt of a slide that has not reported its end.

    Attributes:
        node: Node id (hex) the attempt runs on.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        patches: Patches answered so far in this attempt.
    """

    node: str
    attempt: int
    patches: int


@dataclass(frozen=True)
class CohortSnapshot:
    """The cohort's progress at one moment (what the driver shows and hands to a hook).

    Attributes:
        elapsed_s: Seconds since the cohort's tasks were submitted.
        slides_total: Slides submitted as tasks (complete slides are not submitted).
        slides_done: Tasks finished (complete or failed).
        patches_by_node: Patches answered per node id, over all attempts.
        running: Slides whose latest attempt started and has not finished, by slide path.
        attempts: Attempts started per slide path.
    """

    elapsed_s: float
    slides_total: int
    slides_done: int
    patches_by_node: dict[str, int] = field(default_factory=dict)
    running: dict[str, RunningSlide] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    @property
    def patches(self) -> int:
        """Patches answered over the whole cluster."""
        return sum(self.patches_by_node.values())

    @property
    def patches_per_s(self) -> float:
        """Cohort throughput: the per-node rates summed (patches / elapsed wall time)."""
        return self.patches / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def node_rates(self) -> dict[str, float]:
        """Patches/s of each node since the cohort started."""
        if self.elapsed_s <= 0:
            return {node: 0.0 for node in self.patches_by_node}
        return {node: n / self.elapsed_s for node, n in self.patches_by_node.items()}

    def describe(self) -> str:
        """``12.3 patches/s (2 nodes: 1a2b3c4d 6.1, 5e6f7a8b 6.2)`` for a progress bar."""
        rates = ", ".join(f"{node[:8]} {rate:.1f}" for node, rate in self.node_rates().items())
        nodes = len(self.patches_by_node)
        return f"{self.patches_per_s:.1f} patches/s" + (
            f" ({nodes} node{'s' if nodes != 1 else ''}: {rates})" if nodes else ""
        )


class ProgressLedger:
    """Counts of a running cohort; the body of a Ray actor (see :func:`start_ledger`).

    Args:
        slides_total: Slides submitted.
    """

    def __init__(self, slides_total: int) -> None:
        self._start = time.monotonic()
        self._total = slides_total
        self._done = 0
        self._patches: dict[str, int] = {}
        self._running: dict[str, RunningSlide] = {}
        self._attempts: dict[str, int] = {}
        self._tokens: dict[str, str] = {}

    def start(self, slide: str, node: str, token: str) -> None:
        """Record that an attempt of ``slide`` (unique ``token``) starts on ``node``."""
        attempt = self._attempts.get(slide, 0) + 1
        self._attempts[slide] = attempt
        self._tokens[slide] = token
        self._running[slide] = RunningSlide(node, attempt, 0)
        self._patches.setdefault(node, 0)

    def add(self, slide: str, node: str, token: str, patches: int) -> None:
        """Count ``patches`` answered by attempt ``token`` of ``slide`` on ``node``."""
        self._patches[node] = self._patches.get(node, 0) + patches
        current = self._running.get(slide)
        if current is not None and self._tokens.get(slide) == token:
            self._running[slide] = RunningSlide(node, current.attempt, current.patches + patches)

    def attempts(self, slide: str) -> int:
        """Attempts of ``slide`` started so far (0: none reported)."""
        return self._attempts.get(slide, 0)

    def finish(self, slide: str) -> None:
        """The driver collected the result of ``slide`` (complete or failed)."""
        self._running.pop(slide, None)
        self._done += 1

    def snapshot(self) -> CohortSnapshot:
        """The current counts."""
        return CohortSnapshot(
            elapsed_s=time.monotonic() - self._start,
            slides_total=self._total,
            slides_done=self._done,
            patches_by_node=dict(self._patches),
            running=dict(self._running),
            attempts=dict(self._attempts),
        )


def start_ledger(ray: Any, slides_total: int) -> Any:
    """Start a :class:`ProgressLedger` actor on the driver's node; return its handle.

    It takes no CPU, so it also fits on a head node started with ``--num-cpus=0``; it is
    pinned there (the driver's node lives as long as the cohort) so that a worker node's
    death does not take the cohort's counts with it.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(ProgressLedger).options(
        num_cpus=0,
        max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    )
    return actor.remote(slides_total)


class PatchReporter:
    """Task side: count a slide attempt's patches, send them to the ledger in batches.

    Announces the attempt on creation. Use as the ``progress`` callback of
    :func:`wsi_tumor.client.runner.run_slides`; call :meth:`close` when the slide ends.

    Args:
        ledger: The ledger actor's handle (None: report nothing).
        slide: The slide's key (its path as a string).
        node: This node's id.
    """

    def __init__(self, ledger: Any, slide: str, node: str) -> None:
        self.ledger = ledger
        self.slide = slide
        self.node = node
        self.token = uuid.uuid4().hex
        self.total = 0
        self._pending = 0
        self._last = time.monotonic()
        self._send("start", slide, node, self.token)

    def _send(self, method: str, *args: Any) -> None:
        if self.ledger is None:
            return
        try:  # fire and forget: never ray.get in a task (see the module docstring)
            getattr(self.ledger, method).remote(*args)
        except Exception as exc:  # progress must never fail a slide
            log.debug("progress ledger unreachable: %s", exc)

    def __call__(self, patches: int) -> None:
        self.total += patches
        self._pending += patches
        if time.monotonic() - self._last >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Send the patches counted since the last flush (fire and forget)."""
        if self._pending:
            self._send("add", self.slide, self.node, self.token, self._pending)
        self._pending = 0
        self._last = time.monotonic()

    def close(self) -> None:
        """Flush what is left."""
        self.flush()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


class Ledger:
    """The driver's side of the progress ledger: best effort, given up after 5 failures."""

    TIMEOUT_S = 10.0
    GIVE_UP_AFTER = 5

    def __init__(self, ray: Any, actor: Any) -> None:
        self.ray, self.actor = ray, actor
        self.failures = 0

    def call(self, method: str, *args: Any) -> Any:
        """The method's answer, or None when the ledger is unreachable."""
        if self.failures >= self.GIVE_UP_AFTER:
            return None
        try:
            answer = self.ray.get(getattr(self.actor, method).remote(*args), timeout=self.TIMEOUT_S)
        except Exception as exc:
            self.failures += 1
            log.warning("progress ledger unreachable (%d): %s", self.failures, first_line(exc))
            if self.failures == self.GIVE_UP_AFTER:
                log.warning("cohort progress off: the ledger does not answer")
            return None
        self.failures = 0
        return answer

    def send(self, method: str, *args: Any) -> None:
        """Call without waiting for the answer."""
        with contextlib.suppress(Exception):
            getattr(self.actor, method).remote(*args)
