"""The soak's own request stream: malformed requests of many kinds and a few good ones.

:class:`BadRequestGenerator` makes requests the server must refuse (random dtypes, ranks,
sizes, region sides off the 224 + (k - 1) * 64 grid, empty and wrongly shaped masks, more
than 256 true cells for the exact ensemble, huge N bounded by a byte cap, byte counts that
do not match the declared shape, missing or extra inputs, unknown models and versions).
:func:`good_requests` makes a fixed set of valid requests whose answers the stream compares
with a reference taken once (:mod:`wsi_bench.soak_stream` sends them).

The dense model answers an all-false mask with an all-zero grid (a valid request), so the
empty-mask case is a bad request only for the exact ensemble and a good one for dense.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_bench.resources import MIB
from wsi_tumor import contract
from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST

ENSEMBLE, DENSE, CLASSIFIER = (
    contract.ENSEMBLE_MODEL,
    contract.DENSE_MODEL,
    contract.CLASSIFIER_MODEL,
)
REGIONS, MASK, PATCHES = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR, contract.PATCHES_TENSOR
PATCH_DIMS = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
WRONG_DTYPES = (
    np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint16,
)  # fmt: skip
OUTPUTS = {ENSEMBLE: contract.GRID_TENSOR, DENSE: contract.GRID_TENSOR}


@dataclass(frozen=True)
class Tensor:
    """One input as sent: ``array`` under ``name``, declared with ``shape`` when given."""

    name: str
    array: npt.NDArray[Any]
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SoakRequest:
    """A request of the stream.

    Attributes:
        kind: ``bad:<what>`` or ``good:<what>``.
        model: The model it is sent to.
        inputs: Its tensors.
        version: Model version ("" = the server's choice).
    """

    kind: str
    model: str
    inputs: tuple[Tensor, ...]
    version: str = ""

    @property
    def good(self) -> bool:
        """Whether the server must answer it (and always with the same values)."""
        return self.kind.startswith("good:")

    @property
    def nbytes(self) -> int:
        """Tensor payload bytes."""
        return sum(int(t.array.nbytes) for t in self.inputs)

    @property
    def output(self) -> str:
        """The output tensor a good answer carries."""
        return OUTPUTS.get(self.model, contract.PROBABILITIES_TENSOR)


def region_bytes(cells: int) -> int:
    """Bytes of one uint8 region of k = ``cells`` plus its mask."""
    side = contract.region_size(cells)
    return side * side * contract.CHANNELS + cells * cells


def regions(
    rng: np.random.Generator, count: int, cells: int, fraction: float = 0.3
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """``count`` random regions of k = ``cells`` and masks with ``fraction`` true (>= 1)."""
    side = contract.region_size(cells)
    pixels = rng.integers(0, 256, (count, side, side, contract.CHANNELS), np.uint8)
    mask = np.zeros((count, cells * cells), bool)
    true = max(1, round(fraction * cells * cells)) if fraction > 0 else 0
    for row in mask:
        row[rng.choice(cells * cells, true, replace=False)] = True
    return pixels, mask.reshape(count, cells, cells)


def _pair(pixels: npt.NDArray[Any], mask: npt.NDArray[Any]) -> tuple[Tensor, ...]:
    return (Tensor(REGIONS, pixels), Tensor(MASK, mask))


def good_requests(seed: int = 0) -> list[SoakRequest]:
    """The stream's good requests, fixed by ``seed``: exact (1 region of k = 8 first: the
    canary of :func:`~wsi_bench.soak_stream.good_cycle`; 3 regions of k = 4), dense
    (k = 16, two of k = 3, an empty mask) and the classifier (4 patches)."""
    rng = np.random.default_rng(seed)
    patches = rng.uniform(-1, 1, (4, *PATCH_DIMS)).astype(np.float32)
    empty = regions(rng, 1, contract.DENSE_MIN_CELLS, 0.0)
    return [
        SoakRequest("good:exact_k8", ENSEMBLE, _pair(*regions(rng, 1, contract.REGION_CELLS))),
        SoakRequest("good:exact_3x_k4", ENSEMBLE, _pair(*regions(rng, 3, 4, 1.0))),
        SoakRequest("good:dense_k16", DENSE, _pair(*regions(rng, 1, 16))),
        SoakRequest("good:dense_2x_k3", DENSE, _pair(*regions(rng, 2, 3, 0.5))),
        SoakRequest("good:dense_empty_mask", DENSE, _pair(*empty)),
        SoakRequest("good:classifier_b4", CLASSIFIER, (Tensor(PATCHES, patches),)),
    ]


class BadRequestGenerator:
    """Random malformed requests, each of a named kind, none larger than ``max_bytes``.

    Args:
        seed: Seed of the random choices (the same seed gives the same stream).
        max_bytes: Payload cap of the huge requests (the largest the stream sends).
    """

    def __init__(self, seed: int = 0, max_bytes: int = 64 * MIB) -> None:
        self.rng = np.random.default_rng(seed)
        self.max_bytes = max_bytes
        self._makers: dict[str, Callable[[], SoakRequest]] = {
            "regions_dtype": self._regions_dtype,
            "mask_dtype": self._mask_dtype,
            "patches_dtype": self._patches_dtype,
            "regions_rank": self._regions_rank,
            "mask_rank": self._mask_rank,
            "channels": self._channels,
            "side_off_grid": self._side_off_grid,
            "side_below_patch": self._side_below_patch,
            "not_square": self._not_square,
            "empty_mask": self._empty_mask,
            "mask_shape": self._mask_shape,
            "no_regions": self._no_regions,
            "too_many_cells": self._too_many_cells,
            "dense_k_out_of_range": self._dense_k_out_of_range,
            "huge_n": self._huge_n,
            "patches_shape": self._patches_shape,
            "byte_count_mismatch": self._byte_count_mismatch,
            "missing_input": self._missing_input,
            "extra_input": self._extra_input,
            "unknown_model": self._unknown_model,
            "unknown_version": self._unknown_version,
        }

    @property
    def kinds(self) -> list[str]:
        """Every kind this generator makes (``bad:`` prefix left off)."""
        return list(self._makers)

    def make(self, kind: str) -> SoakRequest:
        """One request of ``kind`` (see :attr:`kinds`)."""
        return self._makers[kind]()

    def round(self) -> list[SoakRequest]:
        """One request of every kind, in random order."""
        order = self.rng.permutation(len(self._makers))
        return [self.make(self.kinds[int(i)]) for i in order]

    def random(self) -> SoakRequest:
        """One request of a random kind."""
        return self.make(self.kinds[int(self.rng.integers(len(self._makers)))])

    # --- helpers -------------------------------------------------------------------------
    def _model(self, *models: str) -> str:
        return models[int(self.rng.integers(len(models)))]

    def _cells(self, model: str) -> int:
        low = contract.DENSE_MIN_CELLS if model == DENSE else 1
        return int(self.rng.integers(low, 9))

    def _valid(self, model: str, count: int = 1) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        return regions(self.rng, count, self._cells(model))

    def _bad(self, what: str, model: str, *inputs: Tensor, version: str = "") -> SoakRequest:
        return SoakRequest(f"bad:{what}", model, inputs, version)

    # --- the kinds -----------------------------------------------------------------------
    def _regions_dtype(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model)
        dtype = WRONG_DTYPES[int(self.rng.integers(len(WRONG_DTYPES)))]
        return self._bad("regions_dtype", model, *_pair(pixels.astype(dtype), mask))

    def _mask_dtype(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model)
        dtype = (np.uint8, np.int32, np.float32)[int(self.rng.integers(3))]
        return self._bad("mask_dtype", model, *_pair(pixels, mask.astype(dtype)))

    def _patches_dtype(self) -> SoakRequest:
        count = int(self.rng.integers(1, 5))
        patches = self.rng.integers(0, 256, (count, *PATCH_DIMS), np.uint8)
        dtype = (np.uint8, np.float16, np.float64)[int(self.rng.integers(3))]
        return self._bad("patches_dtype", CLASSIFIER, Tensor(PATCHES, patches.astype(dtype)))

    def _regions_rank(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model)
        rank = (1, 2, 3, 5)[int(self.rng.integers(4))]
        shaped = {
            1: pixels.reshape(-1),
            2: pixels.reshape(pixels.shape[1], -1),
            3: pixels[0],
            5: pixels[None],
        }[rank]
        return self._bad("regions_rank", model, *_pair(shaped, mask))

    def _mask_rank(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model)
        shaped = mask.reshape(1, -1) if self.rng.random() < 0.5 else mask[..., None]
        return self._bad("mask_rank", model, *_pair(pixels, shaped))

    def _channels(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        cells = self._cells(model)
        side = contract.region_size(cells)
        channels = (1, 2, 4)[int(self.rng.integers(3))]
        pixels = self.rng.integers(0, 256, (1, side, side, channels), np.uint8)
        return self._bad("channels", model, *_pair(pixels, np.ones((1, cells, cells), bool)))

    def _side(self) -> int:
        """A side >= 224 px that is not 224 + (k - 1) * 64."""
        while True:
            side = int(self.rng.integers(contract.PATCH_SIZE + 1, 900))
            if (side - contract.PATCH_SIZE) % contract.PATCH_STRIDE:
                return side

    def _side_off_grid(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        side = self._side()
        cells = (side - contract.PATCH_SIZE) // contract.PATCH_STRIDE + 1
        pixels = self.rng.integers(0, 256, (1, side, side, 3), np.uint8)
        return self._bad("side_off_grid", model, *_pair(pixels, np.ones((1, cells, cells), bool)))

    def _side_below_patch(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        side = int(self.rng.integers(1, contract.PATCH_SIZE))
        pixels = self.rng.integers(0, 256, (1, side, side, 3), np.uint8)
        return self._bad("side_below_patch", model, *_pair(pixels, np.ones((1, 1, 1), bool)))

    def _not_square(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        cells = self._cells(model)
        height, width = contract.region_size(cells), contract.region_size(cells + 1)
        pixels = self.rng.integers(0, 256, (1, height, width, 3), np.uint8)
        return self._bad("not_square", model, *_pair(pixels, np.ones((1, cells, cells), bool)))

    def _empty_mask(self) -> SoakRequest:
        pixels, mask = regions(self.rng, int(self.rng.integers(1, 4)), self._cells(ENSEMBLE))
        return self._bad("empty_mask", ENSEMBLE, *_pair(pixels, np.zeros_like(mask)))

    def _mask_shape(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model, int(self.rng.integers(1, 4)))
        count, cells = mask.shape[0], mask.shape[1]
        shape = (
            (count, cells + int(self.rng.integers(1, 5)), cells + int(self.rng.integers(1, 5)))
            if self.rng.random() < 0.5
            else (count + int(self.rng.integers(1, 3)), cells, cells)
        )
        return self._bad("mask_shape", model, *_pair(pixels, np.ones(shape, bool)))

    def _no_regions(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        cells = self._cells(model)
        side = contract.region_size(cells)
        pixels = np.zeros((0, side, side, contract.CHANNELS), np.uint8)
        return self._bad("no_regions", model, *_pair(pixels, np.zeros((0, cells, cells), bool)))

    def _too_many_cells(self) -> SoakRequest:
        cells = int(self.rng.integers(6, 17))
        count = math.ceil((MAX_PATCHES_PER_REQUEST + 1) / cells**2) + int(self.rng.integers(2))
        pixels, mask = regions(self.rng, count, cells, 1.0)
        return self._bad("too_many_cells", ENSEMBLE, *_pair(pixels, mask))

    def _dense_k_out_of_range(self) -> SoakRequest:
        choices = [
            c for c in (1, 2, contract.DENSE_MAX_CELLS + 1) if region_bytes(c) <= self.max_bytes
        ]
        cells = choices[int(self.rng.integers(len(choices)))]
        return self._bad("dense_k_out_of_range", DENSE, *_pair(*regions(self.rng, 1, cells)))

    def huge_shape(self, model: str) -> tuple[int, int]:
        """(N, k) of the huge request to ``model``: as many regions as fit ``max_bytes``, with
        more than 256 true cells (ensemble) or more than 16 regions (dense)."""
        for cells in range(1, contract.DENSE_MAX_CELLS + 1):
            if model == DENSE and cells < contract.DENSE_MIN_CELLS:
                continue
            count = self.max_bytes // region_bytes(cells)
            enough = count > DENSE_MAX_REGIONS if model == DENSE else count * cells**2 > 256
            if enough:
                return count, cells
        raise ValueError(f"--huge-mib {self.max_bytes / MIB:.0f} is too small for {model}")

    def _huge_n(self) -> SoakRequest:
        patch_bytes = 4 * math.prod(PATCH_DIMS)
        models = [ENSEMBLE, DENSE]
        if (MAX_PATCHES_PER_REQUEST + 1) * patch_bytes <= self.max_bytes:
            models.append(CLASSIFIER)
        model = self._model(*models)
        if model == CLASSIFIER:
            count = self.max_bytes // patch_bytes
            patches = np.zeros((count, *PATCH_DIMS), np.float32)
            return self._bad("huge_n", model, Tensor(PATCHES, patches))
        count, cells = self.huge_shape(model)
        side = contract.region_size(cells)
        pixels = np.full((count, side, side, contract.CHANNELS), 200, np.uint8)
        return self._bad("huge_n", model, *_pair(pixels, np.ones((count, cells, cells), bool)))

    def _patches_shape(self) -> SoakRequest:
        count = int(self.rng.integers(1, 4))
        shapes = [(count, 224, 224, 3), (count, 3, 224, 223), (count, 3, 112, 112), (count, 1)]
        shape = shapes[int(self.rng.integers(len(shapes)))]
        patches = self.rng.uniform(-1, 1, shape).astype(np.float32)
        return self._bad("patches_shape", CLASSIFIER, Tensor(PATCHES, patches))

    def _byte_count_mismatch(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE, CLASSIFIER)
        if model == CLASSIFIER:
            patches = self.rng.uniform(-1, 1, (2, *PATCH_DIMS)).astype(np.float32)
            return self._bad(
                "byte_count_mismatch", model, Tensor(PATCHES, patches, (3, *PATCH_DIMS))
            )
        pixels, mask = self._valid(model)
        cells = mask.shape[1]
        side = contract.region_size(cells + 1)
        declared = Tensor(REGIONS, pixels, (1, side, side, contract.CHANNELS))
        return self._bad("byte_count_mismatch", model, declared, Tensor(MASK, mask))

    def _missing_input(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        pixels, mask = self._valid(model)
        kept = Tensor(REGIONS, pixels) if self.rng.random() < 0.5 else Tensor(MASK, mask)
        return self._bad("missing_input", model, kept)

    def _extra_input(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE, CLASSIFIER)
        extra = Tensor("bogus", np.zeros((1, 4), np.float32))
        if model == CLASSIFIER:
            patches = self.rng.uniform(-1, 1, (1, *PATCH_DIMS)).astype(np.float32)
            return self._bad("extra_input", model, Tensor(PATCHES, patches), extra)
        return self._bad("extra_input", model, *_pair(*self._valid(model)), extra)

    def _unknown_model(self) -> SoakRequest:
        name = f"no_such_model_{int(self.rng.integers(1000))}"
        return self._bad("unknown_model", name, *_pair(*self._valid(ENSEMBLE)))

    def _unknown_version(self) -> SoakRequest:
        model = self._model(ENSEMBLE, DENSE)
        version = str(int(self.rng.integers(2, 100)))
        return self._bad("unknown_version", model, *_pair(*self._valid(model)), version=version)
