"""The run's time: one global budget, each stage's slice of what is left, and the watchdog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

STAGE_SHARES = {
    "slide": 0.05,
    "decode_cpu": 0.07,
    "decode_device": 0.07,
    "reference": 0.06,
    "check": 0.04,
    "network": 0.28,
    "graphs": 0.08,
    "tiler": 0.03,
    "pipeline": 0.05,
    "compile": 0.27,
}
"""Each stage's share of the budget left when it starts, relative to the stages after it."""

GRACE_S = 30.0
"""The watchdog ends a run still going this long after its budget (the report says which stage
it cut), so the script's wall time is bounded by budget + GRACE_S + start-up."""


class Budget:
    """The run's global deadline and each stage's slice of what is left.

    Args:
        total_s: The budget in seconds, counted from construction.
    """

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
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
        names = list(STAGE_SHARES)
        later = sum(STAGE_SHARES[n] for n in names[names.index(stage) :])
        return time.monotonic() + self.remaining() * STAGE_SHARES[stage] / later


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
        self._timer = threading.Timer(budget.total_s + GRACE_S, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        note = f"still running {GRACE_S:g} s past the {self._budget.total_s:g} s budget"
        with self.lock:
            self.fired = True
            self._record(note)
        if self._then is not None:
            self._then()

    def cancel(self) -> None:
        """Stop the timer (a fired watchdog stays fired)."""
        self._timer.cancel()
