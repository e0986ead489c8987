"""Several Triton servers behind one client: least-loaded routing, failover, retries.

Every request goes to the ready server with the fewest requests in flight. A transient
failure (the server stops, restarts, is unreachable or too slow) marks that server down for
a backoff (0.25 s doubling to 4 s) and the request is sent again to another ready server at
once, or to the same one when it is the only one; a server that is down is tried again
when its backoff has passed. A request fails only when no server answered it within
``retry_timeout`` seconds (:class:`ServerUnavailableError`) or a server rejected it
outright (a malformed request, a model error: :class:`ServerError`). A finished request is
never sent again, so the map is the same whichever servers answered.

At start every server's model is checked concurrently; the run starts as soon as one
matches, and servers still unreachable join when their check succeeds. A server whose
model differs from the contract stops the run (ModelMismatchError) before any request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from tritonclient.utils import InferenceServerException

from wsi_tumor.client.endpoints import Encoded, Endpoint
from wsi_tumor.client.transport import (
    INITIAL_BACKOFF_S,
    MAX_BACKOFF_S,
    ModelInfo,
    TritonTransport,
)
from wsi_tumor.errors import ModelMismatchError, ServerError, ServerUnavailableError

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.25
"""How often a request waiting for any server to come back looks again."""


@dataclass
class Server:
    """One server of the pool and what the pool knows of it."""

    transport: TritonTransport
    info: ModelInfo | None = None
    inflight: int = 0
    down_until: float = 0.0
    backoff: float = INITIAL_BACKOFF_S
    answered: int = 0
    check: asyncio.Task[ModelInfo] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``host:port``."""
        return self.transport.url

    def ready(self, now: float) -> bool:
        """Checked, and not within a backoff after a failure."""
        return self.info is not None and now >= self.down_until


class ServerPool:
    """Requests to one or more Triton servers (use inside one event loop).

    Args:
        urls: ``host:port`` of each server's gRPC endpoint (at least one).
        endpoint: The served endpoint (model, tensors, decoding).
        retry_timeout: Seconds a request keeps being retried while no server answers it.
        request_timeout: Client-side deadline of one call in seconds.
    """

    def __init__(
        self,
        urls: Sequence[str],
        endpoint: Endpoint,
        retry_timeout: float = 120.0,
        request_timeout: float = 600.0,
    ) -> None:
        if not urls:
            raise ValueError("a server pool needs at least one URL")
        self.endpoint = endpoint
        self.retry_timeout = retry_timeout
        self.servers = [
            Server(TritonTransport(url, endpoint, retry_timeout, request_timeout))
            for url in dict.fromkeys(urls)
        ]
        self.retries = 0
        self.info: ModelInfo | None = None
        self.regions_per_request: int | None = None

    @property
    def urls(self) -> list[str]:
        """Every server's ``host:port``."""
        return [server.url for server in self.servers]

    def answered(self) -> dict[str, int]:
        """Requests each server has answered so far."""
        return {server.url: server.answered for server in self.servers}

    async def start(self, cells: int) -> ModelInfo:
        """Check every server's model; return as soon as one matches.

        Raises:
            ModelMismatchError: a server's model differs from the contract.
            ServerError: no server became ready within ``retry_timeout``.
        """
        for server in self.servers:
            server.check = asyncio.create_task(server.transport.check_model(cells))
        pending = {server.check for server in self.servers if server.check is not None}
        first_error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                server = next(s for s in self.servers if s.check is task)
                error = task.exception()
                if isinstance(error, ModelMismatchError):
                    await self.close()
                    raise error
                if error is not None:
                    log.warning("%s: not available: %s", server.url, error)
                    first_error = first_error or error
                    continue
                server.info = task.result()
                if self.info is None:
                    self.info = server.info
            if self.info is not None:
                for task in pending:  # the others join when (if) their check succeeds
                    task.add_done_callback(self._joined)
                return self.info
        await self.close()
        raise first_error or ServerError(f"{', '.join(self.urls)}: no server became ready")

    def _joined(self, task: asyncio.Task[ModelInfo]) -> None:
        server = next(s for s in self.servers if s.check is task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.warning("%s: left out of the pool: %s", server.url, error)
            return
        info = task.result()
        first = self.info.precision if self.info is not None else info.precision
        if info.precision != first:
            log.error(
                "%s: serves %s weights, the pool %s: left out (one map, one precision)",
                server.url,
                info.precision,
                first,
            )
            return
        limit = info.max_regions
        if limit is not None and self.regions_per_request and limit < self.regions_per_request:
            log.error(
                "%s: takes at most %d regions per request, fewer than the %d in use; left out",
                server.url,
                limit,
                self.regions_per_request,
            )
            return
        server.info = info
        log.info("%s: joined the pool", server.url)

    def _pick(self, now: float) -> Server | None:
        ready = [server for server in self.servers if server.ready(now)]
        return min(ready, key=lambda s: s.inflight) if ready else None

    async def infer(
        self, request: Encoded, cell_mask: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float32]:
        """Send one request to the least-loaded ready server, failing over on errors.

        Raises:
            ServerUnavailableError: no server answered within ``retry_timeout``.
            ServerError: a server rejected the request (not a transient failure).
        """
        what = f"inference on {len(cell_mask)} regions"
        deadline: float | None = None
        last: BaseException | None = None
        while True:
            now = time.monotonic()
            server = self._pick(now)
            if server is None:
                deadline = deadline if deadline is not None else now + self.retry_timeout
                if now >= deadline:
                    raise ServerUnavailableError(
                        f"{', '.join(self.urls)}: {what} still failing after "
                        f"{self.retry_timeout:.0f} s of retries: {last}"
                    )
                waits = [s.down_until - now for s in self.servers if s.info is not None]
                pause = min([IDLE_POLL_S, *[w for w in waits if w > 0], deadline - now])
                await asyncio.sleep(max(pause, 0.01))
                continue
            server.inflight += 1
            try:
                grids = await server.transport.infer_once(request, cell_mask)
            except InferenceServerException as exc:
                if not server.transport.transient(exc):
                    raise ServerError(f"{server.url}: {what} failed: {exc}") from None
                last = exc
                self.retries += 1
                self._mark_down(server, exc)
                deadline = deadline if deadline is not None else now + self.retry_timeout
                continue
            finally:
                server.inflight -= 1
            server.answered += 1
            server.backoff = INITIAL_BACKOFF_S
            return grids

    def _mark_down(self, server: Server, exc: InferenceServerException) -> None:
        now = time.monotonic()
        if now >= server.down_until:
            others = [s.url for s in self.servers if s is not server and s.ready(now)]
            log.warning(
                "%s: %s; %s, trying it again in %.2f s",
                server.url,
                str(exc).splitlines()[0],
                f"resending to {', '.join(others)}" if others else "retrying",
                server.backoff,
            )
        server.down_until = now + server.backoff
        server.backoff = min(server.backoff * 2, MAX_BACKOFF_S)

    async def close(self) -> None:
        """Stop pending model checks and close every channel."""
        for server in self.servers:
            if server.check is not None and not server.check.done():
                server.check.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await server.check
        for server in self.servers:
            await server.transport.close()


def answered_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests each server answered between two :meth:`ServerPool.answered` snapshots."""
    counts = collections.Counter(after)
    counts.subtract(before)
    return {url: n for url, n in counts.items() if n > 0}
