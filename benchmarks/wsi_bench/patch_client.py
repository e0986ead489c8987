"""Way (c) of the benchmark: the client cuts the FP32 patches itself.

``python -m wsi_bench.patch_client SLIDE --out DIR --url HOST:PORT`` takes the
``wsi-infer`` flags and runs the normal client with :class:`PatchEndpoint`: each request's
patches are cut and normalised in the client with the tiler's own numpy code
(:func:`wsi_tumor.serving.tiling.tile_regions`) and sent as FP32 [P, 3, 224, 224] to the bare
``tumor_classifier``, whose probabilities are scattered back onto the cell grids. It shows
what server-side tiling saves (bytes on the wire, client CPU); it is not a product mode.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient

from wsi_tumor import contract
from wsi_tumor.client.endpoints import Encoded, Endpoint, TensorSpec, checked_output
from wsi_tumor.errors import ServerError

PATCH_DIMS = [contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE]


class PatchEndpoint(Endpoint):
    """Client-cut FP32 patches to ``tumor_classifier``; probabilities back onto grids."""

    output_name = contract.PROBABILITIES_TENSOR

    def __init__(self) -> None:
        super().__init__(contract.CLASSIFIER_MODEL)

    def expected_inputs(self, cells: int) -> dict[str, TensorSpec]:
        """FP32 ``patches`` [P, 3, 224, 224]."""
        return {contract.PATCHES_TENSOR: ("FP32", [None, *PATCH_DIMS])}

    def expected_outputs(self, cells: int) -> dict[str, TensorSpec]:
        """FP32 ``probabilities`` [P, 1]."""
        return {contract.PROBABILITIES_TENSOR: ("FP32", [None, 1])}

    def regions_limit(self, cells: int, max_batch_size: int) -> int | None:
        """Whole regions per request within the classifier's batch limit."""
        per_region = cells * cells
        if max_batch_size < per_region:
            raise ServerError(
                f"it takes at most {max_batch_size} patches per request, fewer than one "
                f"region of k = {cells} holds ({per_region})"
            )
        return max_batch_size // per_region

    def encode(self, regions: npt.NDArray[np.uint8], cell_mask: npt.NDArray[np.bool_]) -> Encoded:
        """Cut, normalise and serialise the patches of the true cells."""
        from wsi_tumor.serving.tiling import tile_regions

        patches = tile_regions(regions, cell_mask, max(cell_mask.size, 1))
        tensor = grpcclient.InferInput(contract.PATCHES_TENSOR, list(patches.shape), "FP32")
        tensor.set_data_from_numpy(patches)
        return Encoded([tensor], patches.nbytes)

    def decode(
        self, result: Any, cell_mask: npt.NDArray[np.bool_], where: str
    ) -> npt.NDArray[np.float32]:
        """Scatter the probabilities (tiler order) onto the [N, k, k] grids."""
        from wsi_tumor.serving.tiling import assemble_grid

        expected = (int(np.count_nonzero(cell_mask)), 1)
        probabilities = result.as_numpy(self.output_name)
        return assemble_grid(
            checked_output(probabilities, expected, self.output_name, where), cell_mask
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``wsi-infer`` with :class:`PatchEndpoint` (same flags, same outputs)."""
    from wsi_tumor.client.config import build_parser, config_from_args
    from wsi_tumor.client.runner import run
    from wsi_tumor.commandline import run_command
    from wsi_tumor.errors import WsiTumorError
    from wsi_tumor.infer import report_cohort

    def body(args: argparse.Namespace) -> int:
        return report_cohort(run(config_from_args(args), endpoint=PatchEndpoint()))

    prog = "wsi_bench.patch_client"
    return run_command(prog, build_parser(prog), body, argv, usage_errors=(WsiTumorError,))


if __name__ == "__main__":
    sys.exit(main())
