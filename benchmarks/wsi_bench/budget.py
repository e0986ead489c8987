"""A bounded run (the GPU probe, the GPU serve check): one global budget, each stage's slice
of what is left, each stage's status recorded, and the watchdog that ends a run still going
past the budget."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
Context = TypeVar("Context")

GRACE_S = 30.0
"""The watchdog ends a run still going this long after its budget (the report says which stage
it cut), so the script's wall time is bounded by budget + GRACE_S + start-up."""


class Budget:
    """The run's global deadline and each stage's slice of what is left.

    Args:
        total_s: The budget in seconds, counted from construction.
        shares: Each stage's share of the budget left when it starts, relative to the
            stages after it (in run order).
    """

    def __init__(self, total_s: float, shares: Mapping[str, float]) -> None:
        self.total_s = total_s
        self.shares = dict(shares)
        self.start = time.monotonic()
        self.deadline = self.start + total_s

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    def remaining(self) -> float:
        """Seconds until the global deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def stage_deadline(self, stage: str) -> float:
        """Monotonic deadline of ``stage``: its share of the time left, by the shares after it."""
        names = list(self.shares)
        later = sum(self.shares[n] for n in names[names.index(stage) :])
        return time.monotonic() + self.remaining() * self.shares[stage] / later


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``time.monotonic()`` value); negative once it passed."""
    return deadline - time.monotonic()


class Watchdog:
    """Fires once, GRACE_S after the budget ends, unless cancelled first.

    Firing sets :attr:`fired` and calls ``record`` with a note on why, both under :attr:`lock`,
    then calls ``then`` (if given) outside it: the script ends the process there.

    Args:
        budget: The run's budget (the timer starts now, for ``budget.total_s + GRACE_S``).
        record: Records the abandoned stage and writes the report.
        then: Called after ``record``, without the lock.

    Attributes:
        lock: Held while the watchdog records and by whoever rewrites the report, so the two
            never write at once.
        fired: Whether the watchdog fired.
    """

    def __init__(
        self,
        budget: Budget,
        record: Callable[[str], None],
        then: Callable[[], None] | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.fired = False
        self._budget = budget
        self._record = record
        self._then = then
        self._grace_s = GRACE_S
        self._timer = threading.Timer(budget.total_s + GRACE_S, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        note = f"still running {self._grace_s:g} s past the {self._budget.total_s:g} s budget"
        with self.lock:
            self.fired = True
            self._record(note)
        if self._then is not None:
            self._then()

    def cancel(self) -> None:
        """Stop the timer (a fired watchdog stays fired)."""
        self._timer.cancel()


def run_stage(
    name: str,
    stage: Callable[[Context, float], str | None],
    ctx: Context,
    budget: Budget,
    record: dict[str, dict[str, Any]],
) -> str:
    """Run one stage within its slice of ``budget``; record and return its status.

    The stage returns a note: "ok", "partial: ...", "skipped: ..." or "ok: ...". An exception
    marks it failed (recorded with its message; the stages that need its result skip). A
    stage may overrun its slice; the watchdog bounds the run.
    """
    if budget.remaining() <= 0.5:
        record[name] = {"status": "skipped", "seconds": 0.0, "note": "budget spent"}
        return "skipped"
    deadline, start = budget.stage_deadline(name), time.monotonic()
    logger.info("stage %s (%.0f s of %.0f s left)", name, deadline - start, budget.remaining())
    try:
        note = stage(ctx, deadline) or "ok"
        head = note.split(":")[0]
        status = head if head in ("partial", "skipped", "failed") else "ok"
    except Exception as exc:
        status, note = "failed", f"{type(exc).__name__}: {exc}"[:1500]
        logger.warning("stage %s failed: %s\n%s", name, note, traceback.format_exc(limit=5))
    seconds = time.monotonic() - start
    record[name] = {"status": status, "seconds": seconds, "note": "" if note == "ok" else note}
    return status
