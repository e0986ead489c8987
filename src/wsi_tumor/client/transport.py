"""gRPC connection to one Triton server: metadata check, single requests.

The transport holds the served :class:`~wsi_tumor.client.endpoints.Endpoint` (which model,
which tensors, how an answer becomes grids) and knows nothing of modes. Built on
``tritonclient.grpc.aio`` so that many requests are on the wire at once from one event
loop. The model check retries transient failures (server unavailable, connection refused
or reset, deadline exceeded) with exponential backoff for up to ``retry_timeout`` seconds;
inference requests are sent once (:meth:`TritonTransport.infer_once`) and the
:class:`~wsi_tumor.client.pool.ServerPool` retries them, on this server or another. The
channel reconnects quickly (at most every ``MAX_RECONNECT_BACKOFF_MS``) so that a restarted
server is found again soon after it listens.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from wsi_tumor import contract
from wsi_tumor.client.endpoints import Encoded, Endpoint
from wsi_tumor.errors import ModelMismatchError, ServerError, ServerUnavailableError

if TYPE_CHECKING:
    from wsi_tumor.evaluation.slide_classifier import SlideClassifier

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
MAX_RECONNECT_BACKOFF_MS = 1000
KEEPALIVE_MS = 330_000
"""Keepalive ping interval: above the server's 5-minute minimum between pings."""
INITIAL_BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0

TRANSIENT_STATUSES = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.DEADLINE_EXCEEDED",
        "StatusCode.CANCELLED",
        "StatusCode.ABORTED",
        "StatusCode.RESOURCE_EXHAUSTED",
    }
)
"""gRPC status codes a retry can cure; Triton answers UNAVAILABLE while it stops or loads."""

TRANSIENT_MESSAGES = ("connection refused", "socket closed", "connection reset", "unavailable")
RELOADING_MESSAGES = ("no available versions", "unknown model", "is not ready")
"""NOT_FOUND answers of a server that is stopping or still loading a model it had."""


def is_transient(exc: InferenceServerException, model_checked: bool = False) -> bool:
    """Whether a failed call is worth retrying (server away, overloaded or too slow).

    Args:
        exc: The failure.
        model_checked: The model was served earlier in this run, so NOT_FOUND means it is
            being unloaded or reloaded (a server restart), not that it does not exist.
    """
    status = str(exc.status() or "")
    if status in TRANSIENT_STATUSES:
        return True
    text = str(exc).lower()
    if model_checked and status == "StatusCode.NOT_FOUND":
        return any(word in text for word in RELOADING_MESSAGES)
    return status in ("", "StatusCode.UNKNOWN", "StatusCode.INTERNAL") and any(
        word in text for word in TRANSIENT_MESSAGES
    )


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata check learned about the served ensemble.

    Attributes:
        name: Model name.
        versions: Versions the server reports.
        max_batch_size: The ensemble's ``max_batch_size`` (0: no batch dimension).
        max_regions: Most regions one request may carry (None: no limit from the config).
        parameters: The model config's string parameters (e.g. ``model_mpp``,
            ``precision``).
    """

    name: str
    versions: tuple[str, ...]
    max_batch_size: int
    max_regions: int | None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def model_mpp(self) -> float:
        """Microns per pixel the served model expects (its ``model_mpp`` parameter).

        A repository without the parameter (exported before it existed) is taken to be
        CAMELYON16-trained, ``contract.MODEL_MPP``.
        """
        value = self.parameters.get(contract.MODEL_MPP_PARAMETER)
        if not value:
            log.warning(
                "model %s states no %s parameter; assuming %s um/px",
                self.name,
                contract.MODEL_MPP_PARAMETER,
                contract.MODEL_MPP,
            )
            return contract.MODEL_MPP
        try:
            return float(value)
        except ValueError:
            raise ModelMismatchError(
                f"model {self.name!r}: parameter {contract.MODEL_MPP_PARAMETER} = {value!r} "
                "is not a number"
            ) from None

    @property
    def precision(self) -> str | None:
        """What the served graph computes in (its ``precision`` parameter: fp32, fp16, int8);
        None for a repository exported before the parameter existed.

        Raises:
            ModelMismatchError: when the parameter holds another value.
        """
        value = self.parameters.get(contract.PRECISION_PARAMETER)
        if not value:
            return None
        if value not in contract.PRECISIONS:
            raise ModelMismatchError(
                f"model {self.name!r}: parameter {contract.PRECISION_PARAMETER} = {value!r} is "
                f"not one of {', '.join(contract.PRECISIONS)}"
            )
        return value

    @property
    def slide_classifier(self) -> SlideClassifier | None:
        """The fitted slide classifier the repository carries, None when it has none.

        Raises:
            ModelMismatchError: it is of another version or uses unknown features (the
                repository's file is named).
        """
        from wsi_tumor.evaluation.slide_classifier import SlideClassifier

        text = self.parameters.get(contract.SLIDE_CLASSIFIER_PARAMETER)
        if not text:
            return None
        source = (
            f"model {self.name!r} parameter {contract.SLIDE_CLASSIFIER_PARAMETER} (the "
            f"repository's {contract.SLIDE_CLASSIFIER_FILE})"
        )
        return SlideClassifier.from_text(text, source)


def _channel_args() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        # gRPC's server default tolerates one ping per 5 minutes without data and drops the
        # connection after two more: a shorter keepalive killed requests queued for > 90 s
        # ("Too many pings"). Ping less often than that, only to find dead peers.
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def _dims(shape: list[Any]) -> list[int]:
    return [int(dim) for dim in shape]


class TritonTransport:
    """Asynchronous requests to one Triton gRPC endpoint (use inside one event loop).

    Args:
        url: ``host:port`` of the gRPC endpoint.
        endpoint: The served endpoint (model, tensors, decoding).
        retry_timeout: Seconds a call keeps retrying transient errors.
        request_timeout: Client-side deadline of one call in seconds.
    """

    def __init__(
        self,
        url: str,
        endpoint: Endpoint,
        retry_timeout: float = 120.0,
        request_timeout: float = 600.0,
    ) -> None:
        self.url = url
        self.endpoint = endpoint
        self.model_name = endpoint.model_name
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        self.retries = 0
        self._model_checked = False
        self._client = grpcaio.InferenceServerClient(url, channel_args=_channel_args())
        self._outputs = [grpcclient.InferRequestedOutput(endpoint.output_name)]

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()

    async def _retrying(self, what: str, call: Any) -> Any:
        """Await ``call()`` until it succeeds, retrying transient errors with backoff."""
        deadline: float | None = None
        delay = INITIAL_BACKOFF_S
        while True:
            try:
                return await call()
            except InferenceServerException as exc:
                if not is_transient(exc, self._model_checked):
                    raise ServerError(f"{self.url}: {what} failed: {exc}") from None
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_timeout
                    log.warning(
                        "%s: %s: %s; retrying for up to %.0f s",
                        self.url,
                        what,
                        exc,
                        self.retry_timeout,
                    )
                if now >= deadline:
                    raise ServerUnavailableError(
                        f"{self.url}: {what} still failing after {self.retry_timeout:.0f} s "
                        f"of retries: {exc}"
                    ) from None
                self.retries += 1
                log.debug("%s: transient error (%s); retrying in %.2f s", what, exc, delay)
                await asyncio.sleep(min(delay * (1 + 0.2 * random.random()), deadline - now))
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def wait_ready(self) -> None:
        """Wait (up to ``retry_timeout``) until the server and the ensemble are ready.

        Raises:
            ServerError: when the server stays unreachable or the model is not ready.
        """

        async def ready() -> bool:
            if await self._client.is_model_ready(self.model_name, client_timeout=10):
                return True
            try:
                index = await self._client.get_model_repository_index(as_json=True)
            except InferenceServerException as exc:
                if "restricted" not in str(exc).lower():
                    raise
                await self._client.get_model_metadata(self.model_name)  # NOT_FOUND: unknown
            else:
                names = sorted({str(model.get("name")) for model in index.get("models", [])})
                if self.model_name not in names:
                    raise ModelMismatchError(
                        f"{self.url}: the server has no model {self.model_name!r} "
                        f"(it serves {names})"
                    )
            raise InferenceServerException(
                f"model {self.model_name!r} is not ready", status="StatusCode.UNAVAILABLE"
            )

        await self._retrying("readiness check", ready)

    async def check_model(self, cells: int) -> ModelInfo:
        """Compare the served ensemble's metadata and config with the contract.

        Args:
            cells: k, the region side in mask cells the client will send.

        Returns:
            The model's versions and request limit.

        Raises:
            ModelMismatchError: naming every tensor whose name, dtype or shape differs.
            ServerError: when the metadata cannot be fetched.
        """
        await self.wait_ready()
        meta = await self._retrying(
            "model metadata",
            lambda: self._client.get_model_metadata(self.model_name, as_json=True),
        )
        config = await self._retrying(
            "model config", lambda: self._client.get_model_config(self.model_name, as_json=True)
        )
        config = config.get("config", config)
        max_batch = int(config.get("max_batch_size", 0) or 0)
        problems = _compare(
            "input", meta.get("inputs", []), self.endpoint.expected_inputs(cells), exact=True
        )
        problems += _compare(
            "output", meta.get("outputs", []), self.endpoint.expected_outputs(cells), exact=False
        )
        if problems:
            raise ModelMismatchError(
                f"{self.url}: model {self.model_name!r} does not match the client's contract: "
                + "; ".join(problems)
            )
        try:
            max_regions = self.endpoint.regions_limit(cells, max_batch)
        except ServerError as exc:
            raise ModelMismatchError(f"{self.url}: model {self.model_name!r}: {exc}") from None
        parameters = {
            str(key): str(value.get("string_value", ""))
            for key, value in config.get("parameters", {}).items()
        }
        info = ModelInfo(
            name=str(meta.get("name", self.model_name)),
            versions=tuple(str(v) for v in meta.get("versions", [])),
            max_batch_size=max_batch,
            max_regions=max_regions,
            parameters=parameters,
        )
        log.info("server %s: model %s versions %s matches", self.url, info.name, info.versions)
        self._model_checked = True
        return info

    def transient(self, exc: InferenceServerException) -> bool:
        """Whether ``exc`` from this server is worth a retry (see :func:`is_transient`)."""
        return is_transient(exc, self._model_checked)

    async def infer_once(
        self, request: Encoded, cell_mask: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float32]:
        """Send one request once and return its grids [N, k, k] (retries: the pool's job).

        Args:
            request: The tensors from the endpoint's ``encode``.
            cell_mask: BOOL [N, k, k] of the request's regions.

        Raises:
            InferenceServerException: the call failed (:meth:`transient` says whether a
                retry, here or on another server, can cure it).
            ServerError: the answer has the wrong shape (e.g. an empty tensor from a
                misconfigured backend).
        """
        result = await self._client.infer(
            self.model_name,
            request.inputs,
            outputs=self._outputs,
            client_timeout=self.request_timeout,
        )
        return self.endpoint.decode(result, cell_mask, self.url)


def _compare(
    kind: str,
    tensors: list[dict[str, Any]],
    expected: dict[str, tuple[str, list[int | None]]],
    *,
    exact: bool,
) -> list[str]:
    """Problems between served tensors and the expected (dtype, shape); None = any size."""
    served = {str(t.get("name")): t for t in tensors}
    problems = []
    for name, (dtype, shape) in expected.items():
        tensor = served.get(name)
        if tensor is None:
            problems.append(f"{kind} {name!r} missing (server has {sorted(served)})")
            continue
        if tensor.get("datatype") != dtype:
            problems.append(f"{kind} {name!r} is {tensor.get('datatype')}, expected {dtype}")
        dims = _dims(tensor.get("shape", []))
        fits = len(dims) == len(shape) and all(
            dim == -1 or want is None or dim == want for dim, want in zip(dims, shape, strict=True)
        )
        if not fits:
            wanted = ["N" if w is None else w for w in shape]
            problems.append(f"{kind} {name!r} has shape {dims}, expected {wanted}")
    if exact:
        extra = sorted(set(served) - set(expected))
        if extra:
            problems.append(f"unexpected {kind}s {extra}")
    return problems
