"""Send the soak's own requests and tally what came back.

:func:`send` sends one :class:`~wsi_bench.soak_requests.SoakRequest` with
``tritonclient.grpc`` and reports its status (``OK`` or the gRPC status name) and latency.
:class:`RequestStream` is a thread sending an endless sequence of requests until the
soak's clock stops it; two run at once, one of malformed requests (:func:`bad_requests`)
and one of good requests (:func:`good_cycle`), so slow good answers under load do not thin
out the malformed stream. Each good request's first answer is its reference: every later
answer must be identical to it, bit for bit.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from wsi_bench.soak_load import Clock, References
from wsi_bench.soak_requests import MIB, BadRequestGenerator, SoakRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the server did with one request."""

    kind: str
    model: str
    status: str
    latency_s: float
    message: str = ""
    output: npt.NDArray[Any] | None = None


def status_name(exc: BaseException) -> str:
    """``INVALID_ARGUMENT`` for a tritonclient error of that gRPC status, else the type name."""
    status = getattr(exc, "status", None)
    text = str(status() or "") if callable(status) else ""
    return text.removeprefix("StatusCode.") or f"client:{type(exc).__name__}"


def send(client: Any, request: SoakRequest, timeout_s: float) -> Outcome:
    """Send ``request`` with ``client`` (a ``tritonclient.grpc.InferenceServerClient``)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for tensor in request.inputs:
        item = grpcclient.InferInput(
            tensor.name, list(tensor.array.shape), np_to_triton_dtype(tensor.array.dtype)
        )
        item.set_data_from_numpy(tensor.array)
        if tensor.shape is not None:
            item.set_shape(list(tensor.shape))
        inputs.append(item)
    start = time.perf_counter()
    try:
        result = client.infer(
            request.model, inputs, model_version=request.version, client_timeout=timeout_s
        )
    except Exception as exc:
        elapsed = time.perf_counter() - start
        return Outcome(request.kind, request.model, status_name(exc), elapsed, str(exc)[:300])
    elapsed = time.perf_counter() - start
    output = result.as_numpy(request.output) if request.good else None
    return Outcome(request.kind, request.model, "OK", elapsed, output=output)


def bad_requests(generator: BadRequestGenerator) -> Iterator[SoakRequest]:
    """One request of every kind (in random order), then kinds drawn at random, forever."""
    yield from generator.round()
    while True:
        yield generator.random()


def good_cycle(goods: Sequence[SoakRequest]) -> Iterator[SoakRequest]:
    """The good requests in turn, forever, with the first (the canary) before each other one,
    so even a short run under heavy load compares some answers with their reference."""
    canary, others = goods[0], list(goods[1:]) or [goods[0]]
    for request in itertools.cycle(others):
        yield canary
        yield request


class RequestStream(threading.Thread):
    """Sends ``requests`` one after the other (``pause_s`` apart) until the clock stops.

    Attributes:
        counts: Per request kind, responses per status.
        latencies: Per good kind, seconds of each OK answer.
        compared: Per good kind, answers compared with the reference.
        changed: Per good kind, answers that differed from it.
        examples: First error message of each (kind, model, status).
        huge: One line per ``bad:huge_n`` request (model, MiB, shape, status, latency).
        bytes_sent: Tensor payload bytes sent.
    """

    def __init__(
        self,
        name: str,
        url: str,
        requests: Iterator[SoakRequest],
        clock: Clock,
        *,
        pause_s: float = 0.05,
        timeout_s: float = 600.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.requests, self.clock = url, requests, clock
        self.pause_s, self.timeout_s = pause_s, timeout_s
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.compared: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.huge: list[dict[str, Any]] = []
        self.bytes_sent = 0
        self._references = References()

    def run(self) -> None:
        """Send until the clock stops the load."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        try:
            for request in self.requests:
                if not self.clock.running():
                    break
                self.record(request, send(client, request, self.timeout_s))
                self.clock.stop.wait(self.pause_s)
        finally:
            client.close()

    def record(self, request: SoakRequest, outcome: Outcome) -> None:
        """Tally one outcome; compare a good answer with its kind's first answer."""
        self.counts[request.kind][outcome.status] += 1
        self.bytes_sent += request.nbytes
        key = f"{request.kind} -> {request.model}: {outcome.status}"
        if outcome.message and key not in self.examples:
            self.examples[key] = outcome.message
        if request.kind == "bad:huge_n":
            self.huge.append(
                {"model": request.model, "mib": round(request.nbytes / MIB, 1),
                 "shape": list(request.inputs[0].array.shape), "status": outcome.status,
                 "latency_s": round(outcome.latency_s, 3)}
            )  # fmt: skip
        if not request.good or outcome.status != "OK" or outcome.output is None:
            return
        self.latencies[request.kind].append(outcome.latency_s)
        status, _ = self._references.check("stream", request.kind, outcome.output)
        if status == "reference":
            return
        self.compared[request.kind] += 1
        if status == "changed":
            self.changed[request.kind] += 1
            log.error("stream: %s answered differently from its reference", request.kind)


def summarize_streams(streams: Sequence[RequestStream], huge_mib: float) -> dict[str, Any]:
    """The streams' tallies merged: kinds, statuses, accepted bad and lost good requests,
    compared and changed answers, good latencies, the huge requests."""
    from wsi_bench.soak_report import percentiles

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    compared: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    examples: dict[str, str] = {}
    huge: list[dict[str, Any]] = []
    for stream in streams:
        for kind, statuses in stream.counts.items():
            counts[kind].update(statuses)
        for kind, values in stream.latencies.items():
            latencies[kind] += values
        compared.update(stream.compared)
        changed.update(stream.changed)
        examples |= stream.examples
        huge += stream.huge
    bad = {k: v for k, v in counts.items() if k.startswith("bad:")}
    good = {k: v for k, v in counts.items() if k.startswith("good:")}
    bad_by_status: Counter[str] = Counter()
    for statuses in bad.values():
        bad_by_status.update({k: v for k, v in statuses.items() if k != "OK"})
    by_model = {
        model: dict(Counter(h["status"] for h in huge if h["model"] == model))
        for model in sorted({h["model"] for h in huge})
    }
    return {
        "by_kind": {k: dict(v) for k, v in sorted(counts.items())},
        "bad_kinds": sorted(bad),
        "bad_sent": sum(sum(v.values()) for v in bad.values()),
        "bad_by_status": dict(bad_by_status),
        "bad_accepted": sum(v.get("OK", 0) for v in bad.values()),
        "good_sent": sum(sum(v.values()) for v in good.values()),
        "good_lost": sum(n for v in good.values() for s, n in v.items() if s != "OK"),
        "compared": sum(compared.values()),
        "changed": sum(changed.values()),
        "changed_by_kind": dict(changed),
        "good_latency": percentiles([x for values in latencies.values() for x in values]),
        "good_latency_by_kind": {k: percentiles(v) for k, v in sorted(latencies.items())},
        "largest_mib": max((h["mib"] for h in huge), default=0.0),
        "bytes_sent": sum(s.bytes_sent for s in streams),
        "examples": dict(sorted(examples.items())),
        "huge": huge,
        "huge_note": f"{len(huge)} huge requests of up to {huge_mib:.0f} MiB, statuses by "
        f"model: {by_model}; what the server said is in the section above (`bad:huge_n`).",
    }
