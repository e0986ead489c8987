"""gRPC transport to the ``tumor_detector`` ensemble: metadata check, requests, retries.

With ``endpoint="classifier"`` the same transport talks to ``tumor_classifier`` instead:
the client sends FP32 patches it cut itself and scatters the probabilities into grids.

Built on ``tritonclient.grpc.aio`` so that many requests are on the wire at once from one
event loop. Transient failures (server unavailable, connection refused or reset, deadline
exceeded) are retried with exponential backoff for up to ``retry_timeout`` seconds per
request; anything else (a malformed request, a server-side model error) fails at once. The
channel reconnects quickly (at most every ``MAX_RECONNECT_BACKOFF_MS``) so that a restarted
server is found again soon after it listens.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from wsi_tumor import contract
from wsi_tumor.errors import ModelMismatchError, ServerError, ServerUnavailableError
from wsi_tumor.serving.tiling import assemble_grid

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
MAX_RECONNECT_BACKOFF_MS = 1000
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
    """

    name: str
    versions: tuple[str, ...]
    max_batch_size: int
    max_regions: int | None


def _channel_args() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


def make_inputs(
    regions: npt.NDArray[np.uint8], cell_mask: npt.NDArray[np.bool_]
) -> list[grpcclient.InferInput]:
    """Serialise one request's tensors (thread-safe; called from the reader threads).

    Args:
        regions: UINT8 [N, H, W, 3].
        cell_mask: BOOL [N, k, k].
    """
    image = grpcclient.InferInput(contract.REGIONS_TENSOR, list(regions.shape), "UINT8")
    image.set_data_from_numpy(regions)
    mask = grpcclient.InferInput(contract.CELL_MASK_TENSOR, list(cell_mask.shape), "BOOL")
    mask.set_data_from_numpy(cell_mask)
    return [image, mask]


def make_classifier_inputs(patches: npt.NDArray[np.float32]) -> list[grpcclient.InferInput]:
    """Serialise one ``tumor_classifier`` request: FP32 patches [P, 3, 224, 224]."""
    tensor = grpcclient.InferInput(contract.PATCHES_TENSOR, list(patches.shape), "FP32")
    tensor.set_data_from_numpy(patches)
    return [tensor]


def _dims(shape: list[Any]) -> list[int]:
    return [int(dim) for dim in shape]


class TritonTransport:
    """Asynchronous requests to one Triton gRPC endpoint (use inside one event loop).

    Args:
        url: ``host:port`` of the gRPC endpoint.
        model_name: The model to call (the ensemble, or the classifier for ``classifier``).
        endpoint: ``detector`` (regions in, grids out) or ``classifier`` (patches in,
            probabilities out, scattered into grids here).
        retry_timeout: Seconds a call keeps retrying transient errors.
        request_timeout: Client-side deadline of one call in seconds.
    """

    def __init__(
        self,
        url: str,
        model_name: str = contract.ENSEMBLE_MODEL,
        retry_timeout: float = 120.0,
        request_timeout: float = 600.0,
        endpoint: str = "detector",
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.endpoint = endpoint
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        self.retries = 0
        self._model_checked = False
        self._client = grpcaio.InferenceServerClient(url, channel_args=_channel_args())
        output = contract.PROBABILITIES_TENSOR if endpoint == "classifier" else contract.GRID_TENSOR
        self._outputs = [grpcclient.InferRequestedOutput(output)]

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
            index = await self._client.get_model_repository_index(as_json=True)
            names = sorted({str(model.get("name")) for model in index.get("models", [])})
            if self.model_name not in names:
                raise ModelMismatchError(
                    f"{self.url}: the server has no model {self.model_name!r} (it serves {names})"
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
        side = contract.region_size(cells)
        expected_inputs: dict[str, tuple[str, list[int | None]]]
        if self.endpoint == "classifier":
            patch = [contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE]
            expected_inputs = {contract.PATCHES_TENSOR: ("FP32", [None, *patch])}
            expected_outputs = {contract.PROBABILITIES_TENSOR: ("FP32", [None, 1])}
        else:
            expected_inputs = {
                contract.REGIONS_TENSOR: ("UINT8", [None, side, side, contract.CHANNELS]),
                contract.CELL_MASK_TENSOR: ("BOOL", [None, cells, cells]),
            }
            expected_outputs = {contract.GRID_TENSOR: ("FP32", [None, cells, cells])}
        problems = _compare("input", meta.get("inputs", []), expected_inputs, exact=True)
        problems += _compare("output", meta.get("outputs", []), expected_outputs, exact=False)
        if problems:
            raise ModelMismatchError(
                f"{self.url}: model {self.model_name!r} does not match the client's contract: "
                + "; ".join(problems)
            )
        batch_dims = [_dims(t["shape"])[0] for t in meta["inputs"]]
        fixed = [dim for dim in batch_dims if dim > 0]
        max_regions = max_batch if max_batch > 0 else (min(fixed) if fixed else None)
        if self.endpoint == "classifier":
            # One request carries the patches of whole regions: at most max_batch patches.
            if max_batch < cells * cells:
                raise ModelMismatchError(
                    f"{self.url}: model {self.model_name!r} takes at most {max_batch} patches "
                    f"per request, fewer than one region of k = {cells} holds ({cells * cells})"
                )
            max_regions = max_batch // (cells * cells)
        info = ModelInfo(
            name=str(meta.get("name", self.model_name)),
            versions=tuple(str(v) for v in meta.get("versions", [])),
            max_batch_size=max_batch,
            max_regions=max_regions,
        )
        log.info("server %s: model %s versions %s matches", self.url, info.name, info.versions)
        self._model_checked = True
        return info

    async def infer(
        self,
        inputs: list[grpcclient.InferInput],
        regions: int,
        cells: int,
        cell_mask: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Send one request (retrying transient errors) and return its grids [N, k, k].

        Args:
            inputs: From :func:`make_inputs` (detector) or :func:`make_classifier_inputs`.
            regions: N, the regions of the request.
            cells: k.
            cell_mask: BOOL [N, k, k]; needed by the classifier endpoint to place the
                probabilities of the patches (in the tiler's row-major order).

        Raises:
            ServerError: on a non-transient error, retries exhausted, or an output of the
                wrong shape (e.g. an empty tensor from a misconfigured backend).
        """

        async def call() -> Any:
            return await self._client.infer(
                self.model_name,
                inputs,
                outputs=self._outputs,
                client_timeout=self.request_timeout,
            )

        result = await self._retrying(f"inference on {regions} regions", call)
        if self.endpoint == "classifier":
            return self._grids_from_probabilities(result, regions, cells, cell_mask)
        grid = result.as_numpy(contract.GRID_TENSOR)
        if grid is None or grid.shape != (regions, cells, cells):
            shape = None if grid is None else grid.shape
            raise ServerError(
                f"{self.url}: {contract.GRID_TENSOR} has shape {shape}, expected "
                f"{(regions, cells, cells)} (an empty tensor means numpy>=2 in the server's "
                "Python-backend environment)"
            )
        return np.asarray(grid, dtype=np.float32)

    def _grids_from_probabilities(
        self,
        result: Any,
        regions: int,
        cells: int,
        cell_mask: npt.NDArray[np.bool_] | None,
    ) -> npt.NDArray[np.float32]:
        if cell_mask is None or cell_mask.shape != (regions, cells, cells):
            raise ServerError(f"{self.url}: the classifier endpoint needs the [N, k, k] cell mask")
        probabilities = result.as_numpy(contract.PROBABILITIES_TENSOR)
        expected = (int(np.count_nonzero(cell_mask)), 1)
        if probabilities is None or probabilities.shape != expected:
            shape = None if probabilities is None else probabilities.shape
            raise ServerError(
                f"{self.url}: {contract.PROBABILITIES_TENSOR} has shape {shape}, expected "
                f"{expected} (an empty tensor means numpy>=2 in the server's Python-backend "
                "environment)"
            )
        return assemble_grid(np.asarray(probabilities, dtype=np.float32), cell_mask)


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
