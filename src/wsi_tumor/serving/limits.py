"""Request limits of the served ensemble, shared by the repository renderer and the client.

The ensemble ``tumor_detector`` passes every patch of one request to ``tumor_classifier`` as
one batch, and Triton rejects a batch larger than the classifier's ``max_batch_size``. The
tiler therefore refuses a request with more than :data:`MAX_PATCHES_PER_REQUEST` mask cells
(N * k * k, true or not, so the request's bytes are bounded too; INVALID_ARG), and a client
that sends at most :func:`max_regions_per_request` regions per request never hits it.
"""

from __future__ import annotations

from typing import Final

from wsi_tumor.errors import RequestError

MAX_PATCHES_PER_REQUEST: Final = 256
"""Most patches (true mask cells) one ensemble request may hold: the classifier's
``max_batch_size`` and the largest batch of the TensorRT optimisation profile."""

PREFERRED_BATCH_SIZES: Final = (64, 128, 256)
"""Batch sizes the classifier's dynamic batcher aims for."""

MAX_QUEUE_DELAY_US: Final = 2000
"""Longest time a dynamic batcher holds a request to grow a batch."""

DENSE_MAX_REGIONS: Final = 16
"""``max_batch_size`` of the dense model: regions one (dynamically batched) execution holds."""


def max_regions_per_request(cells: int, max_patches: int = MAX_PATCHES_PER_REQUEST) -> int:
    """Most regions of ``cells`` x ``cells`` mask cells one request may carry.

    A region contributes at most ``cells**2`` patches, so this many regions stay within
    ``max_patches`` for any mask.

    Args:
        cells: k, the side of a region in mask cells.
        max_patches: The classifier's batch limit (default :data:`MAX_PATCHES_PER_REQUEST`).

    Raises:
        RequestError: when ``cells`` is not positive or one region alone exceeds the limit.
    """
    if cells < 1:
        raise RequestError(f"cells must be >= 1, got {cells}")
    per_region = cells * cells
    if per_region > max_patches:
        raise RequestError(
            f"one region of {cells} x {cells} cells holds {per_region} patches, more than "
            f"the {max_patches} one request may carry: use cells <= {int(max_patches**0.5)}"
        )
    return max_patches // per_region
