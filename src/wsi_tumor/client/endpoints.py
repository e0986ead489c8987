"""The served endpoint: what a request carries, what the model must declare, how to read it.

The transport and the streaming code know nothing of modes; they hold one
:class:`Endpoint` that builds a request's tensors from the uint8 regions and their cell
masks, states the I/O the served model must declare for a region side of k cells, and turns
an answer back into k x k grids. Two endpoints ship with the client:

- ``exact``: the ensemble ``tumor_detector`` (patches cut on the server, one per cell:
  MONAI's map);
- ``dense``: ``tumor_detector_dense``, one ONNX graph that runs each region through the
  fully convolutional network at once.

Both take UINT8 ``regions`` [N, H, W, 3] + BOOL ``cell_mask`` [N, k, k] and answer FP32
``probability_grid`` [N, k, k]. The benchmark adds a third (client-cut FP32 patches sent to
the bare classifier) in :mod:`wsi_bench.patch_client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.errors import ServerError
from wsi_tumor.serving.limits import max_regions_per_request

if TYPE_CHECKING:  # tritonclient is imported where a request is built, so that the package's
    # planning code (grid, config) runs where it is not installed (the GPU image)
    import tritonclient.grpc as grpcclient

TensorSpec = tuple[str, list[int | None]]
"""(datatype, shape) a model must declare for a tensor; None = any size (the batch)."""


@dataclass(frozen=True)
class Encoded:
    """One request's tensors, ready to send.

    Attributes:
        inputs: The serialised tensors.
        nbytes: Tensor payload bytes.
    """

    inputs: list[grpcclient.InferInput]
    nbytes: int


class Endpoint:
    """Regions + cell mask in, probability grids out (the served detectors' contract).

    Args:
        model_name: The model the client calls.
        patch_limited: The model passes every true cell of a request to the classifier as
            one batch, so a request may hold at most ``max_regions_per_request(k)`` regions
            (the exact ensemble); otherwise only the model's ``max_batch_size`` limits it.
    """

    output_name: str = contract.GRID_TENSOR

    def __init__(self, model_name: str, patch_limited: bool = False) -> None:
        self.model_name = model_name
        self.patch_limited = patch_limited

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r})"

    def expected_inputs(self, cells: int) -> dict[str, TensorSpec]:
        """Inputs the served model must declare for regions of k = ``cells``."""
        side = contract.region_size(cells)
        return {
            contract.REGIONS_TENSOR: ("UINT8", [None, side, side, contract.CHANNELS]),
            contract.CELL_MASK_TENSOR: ("BOOL", [None, cells, cells]),
        }

    def expected_outputs(self, cells: int) -> dict[str, TensorSpec]:
        """Outputs the served model must declare (others may exist)."""
        return {contract.GRID_TENSOR: ("FP32", [None, cells, cells])}

    def regions_limit(self, cells: int, max_batch_size: int) -> int | None:
        """Most regions one request may carry (None: no limit).

        Args:
            cells: k.
            max_batch_size: The served model's ``max_batch_size`` (0: not batching).

        Raises:
            ServerError: when the model cannot take even one region.
        """
        limits = [max_batch_size] if max_batch_size > 0 else []
        if self.patch_limited:
            limits.append(max_regions_per_request(cells))
        return min(limits) if limits else None

    def encode(self, regions: npt.NDArray[np.uint8], cell_mask: npt.NDArray[np.bool_]) -> Encoded:
        """Serialise one request (thread-safe; called from the reader threads).

        Args:
            regions: UINT8 [N, H, W, 3].
            cell_mask: BOOL [N, k, k].
        """
        import tritonclient.grpc as grpcclient

        image = grpcclient.InferInput(contract.REGIONS_TENSOR, list(regions.shape), "UINT8")
        image.set_data_from_numpy(regions)
        mask = grpcclient.InferInput(contract.CELL_MASK_TENSOR, list(cell_mask.shape), "BOOL")
        mask.set_data_from_numpy(cell_mask)
        return Encoded([image, mask], regions.nbytes + cell_mask.nbytes)

    def decode(
        self, result: Any, cell_mask: npt.NDArray[np.bool_], where: str
    ) -> npt.NDArray[np.float32]:
        """The grids [N, k, k] of an answer.

        Raises:
            ServerError: the output is missing or has the wrong shape (an empty tensor is
                what numpy >= 2 in the server's Python-backend environment produces).
        """
        grid = result.as_numpy(self.output_name)
        return checked_output(grid, cell_mask.shape, self.output_name, where)


def checked_output(
    array: npt.NDArray[Any] | None, expected: tuple[int, ...], name: str, where: str
) -> npt.NDArray[np.float32]:
    """``array`` as float32 when its shape is ``expected``; otherwise a ServerError."""
    if array is None or tuple(array.shape) != tuple(expected):
        shape = None if array is None else tuple(array.shape)
        raise ServerError(
            f"{where}: {name} has shape {shape}, expected {tuple(expected)} (an empty tensor "
            "means numpy>=2 in the server's Python-backend environment)"
        )
    return np.asarray(array, dtype=np.float32)


MODES: Final = contract.MODES


def endpoint_for_mode(mode: str) -> Endpoint:
    """The endpoint of a ``--mode``."""
    if mode == "exact":
        return Endpoint(contract.ENSEMBLE_MODEL, patch_limited=True)
    if mode == "dense":
        return Endpoint(contract.DENSE_MODEL)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
