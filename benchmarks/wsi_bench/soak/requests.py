"""The soak's own requests: a few good ones, and malformed ones of 21 kinds the server must
refuse: a valid request with one thing wrong (a dtype, a rank, the channels, a side off the
224 + (k - 1) * 64 grid or below one patch, not square, an empty or misshapen mask, no
region, too many cells, dense k out of range, huge N up to a byte cap, a byte count that
differs from the declared shape, an input missing or extra, an unknown model or version).
The dense model answers an all-false mask with zeros: an empty mask is bad for the ensemble."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from wsi_tumor import contract
from wsi_tumor.serving.limits import DENSE_MAX_REGIONS, MAX_PATCHES_PER_REQUEST

MIB = 2**20
ENSEMBLE, DENSE = contract.ENSEMBLE_MODEL, contract.DENSE_MODEL
CLASSIFIER = contract.CLASSIFIER_MODEL
REGIONS, MASK, PATCHES = contract.REGIONS_TENSOR, contract.CELL_MASK_TENSOR, contract.PATCHES_TENSOR
PATCH_DIMS = (contract.CHANNELS, contract.PATCH_SIZE, contract.PATCH_SIZE)
WRONG_DTYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64)
Arrays = npt.NDArray[Any]
REGION_KINDS = ("regions_dtype", "mask_dtype", "regions_rank", "mask_rank", "channels",
                "not_square", "empty_mask", "mask_shape", "no_regions", "byte_count_mismatch",
                "missing_input", "extra_input", "unknown_model", "unknown_version")  # fmt: skip
OTHER_KINDS = ("side_off_grid", "side_below_patch", "too_many_cells", "dense_k_out_of_range",
               "huge_n", "patches_dtype", "patches_shape")  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    """One input as sent: ``array`` under ``name``, declared with ``shape`` when given."""

    name: str
    array: Arrays
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SoakRequest:
    """A request: ``kind`` is ``bad:<what>`` or ``good:<what>``; ``version`` "" = any."""

    kind: str
    model: str
    inputs: tuple[Tensor, ...]
    version: str = ""

    @property
    def good(self) -> bool:
        """Whether the server must answer it (always with the same values)."""
        return self.kind.startswith("good:")

    @property
    def nbytes(self) -> int:
        """Tensor payload bytes."""
        return sum(int(t.array.nbytes) for t in self.inputs)


def region_bytes(cells: int) -> int:
    """Bytes of one uint8 region of k = ``cells`` plus its mask."""
    return contract.region_size(cells) ** 2 * contract.CHANNELS + cells * cells


def regions(rng: np.random.Generator, count: int, cells: int, true: float = 0.3) -> list[Arrays]:
    """[pixels, mask]: ``count`` random regions of k = ``cells``, ``true`` of the cells on."""
    side = contract.region_size(cells)
    pixels = rng.integers(0, 256, (count, side, side, contract.CHANNELS), np.uint8)
    mask = np.zeros((count, cells * cells), bool)
    for row in mask:
        row[rng.choice(cells * cells, max(1, round(true * cells**2)) if true else 0, False)] = 1
    return [pixels, mask.reshape(count, cells, cells)]


def _request(kind: str, model: str, *arrays: Arrays) -> SoakRequest:
    return SoakRequest(kind, model, tuple(map(Tensor, (REGIONS, MASK), arrays)))


def good_requests(seed: int = 0) -> list[SoakRequest]:
    """Valid requests fixed by ``seed``; the first (exact, one region of k = 8) is the canary."""
    rng = np.random.default_rng(seed)
    patches = rng.uniform(-1, 1, (4, *PATCH_DIMS)).astype(np.float32)
    return [
        _request("good:exact_k8", ENSEMBLE, *regions(rng, 1, contract.REGION_CELLS)),
        _request("good:exact_3x_k4", ENSEMBLE, *regions(rng, 3, 4, 1.0)),
        _request("good:dense_k16", DENSE, *regions(rng, 1, 16)),
        _request("good:dense_2x_k3", DENSE, *regions(rng, 2, 3, 0.5)),
        _request("good:dense_empty_mask", DENSE, *regions(rng, 1, contract.DENSE_MIN_CELLS, 0)),
        SoakRequest("good:classifier_b4", CLASSIFIER, (Tensor(PATCHES, patches),)),
    ]


class BadRequestGenerator:
    """Random malformed requests (:data:`REGION_KINDS`: a valid regions request with one thing
    wrong; :data:`OTHER_KINDS`), none over ``max_bytes``; a ``seed`` gives the same ones."""

    def __init__(self, seed: int = 0, max_bytes: int = 64 * MIB) -> None:
        self.rng = np.random.default_rng(seed)
        self.max_bytes = max_bytes
        self.kinds = [*REGION_KINDS, *OTHER_KINDS]

    def pick(self, *options: Any) -> Any:
        """One of ``options`` at random."""
        return options[int(self.rng.integers(len(options)))]

    def round(self) -> list[SoakRequest]:
        """One request of every kind, in random order."""
        return [self.make(self.kinds[int(i)]) for i in self.rng.permutation(len(self.kinds))]

    def random(self) -> SoakRequest:
        """One request of a random kind."""
        return self.make(self.pick(*self.kinds))

    def huge_shape(self, model: str) -> tuple[int, int]:
        """(N, k) of a huge request to ``model``: as many regions as fit ``max_bytes``, over
        the cells (ensemble) or regions (dense) one request may hold."""
        for cells in range(contract.DENSE_MIN_CELLS if model == DENSE else 1, 33):
            count = self.max_bytes // region_bytes(cells)
            if count > (
                DENSE_MAX_REGIONS if model == DENSE else MAX_PATCHES_PER_REQUEST // cells**2
            ):
                return count, cells
        raise ValueError(f"--huge-mib {self.max_bytes / MIB:.0f} is too small for {model}")

    def make(self, kind: str) -> SoakRequest:
        """One request of ``kind``."""
        rng, pick, name = self.rng, self.pick, f"bad:{kind}"
        if kind in REGION_KINDS:
            model = ENSEMBLE if kind == "empty_mask" else pick(ENSEMBLE, DENSE)
            low = contract.DENSE_MIN_CELLS if model == DENSE else 1
            n = int(rng.integers(1, 4)) if kind in ("empty_mask", "mask_shape") else 1
            p, m = regions(rng, n, int(rng.integers(low, 9)))
            k, side = m.shape[1], p.shape[1]
            made: dict[str, Any] = {
                "regions_dtype": lambda: [p.astype(pick(*WRONG_DTYPES)), m],
                "mask_dtype": lambda: [p, m.astype(pick(np.uint8, np.int32, np.float32))],
                "regions_rank": lambda: [pick(p.ravel(), p.reshape(side, -1), p[0], p[None]), m],
                "mask_rank": lambda: [p, pick(m.reshape(1, -1), m[..., None])],
                "channels": lambda: [p[..., pick([0], [0, 1], [0, 1, 2, 0])], m],
                "not_square": lambda: [p[:, :, : side - contract.PATCH_STRIDE], m],
                "empty_mask": lambda: [p, np.zeros_like(m)],
                "mask_shape": lambda: [p, np.ones(pick((n, k + 1, k + 2), (n + 1, k, k)), bool)],
                "no_regions": lambda: [p[:0], m[:0]],
            }  # fmt: skip
            if kind in made:
                return _request(name, model, *made[kind]())
            tensors: tuple[Tensor, ...] = (Tensor(REGIONS, p), Tensor(MASK, m))
            if kind == "byte_count_mismatch":
                big = side + contract.PATCH_STRIDE
                tensors = (Tensor(REGIONS, p, (n, big, big, contract.CHANNELS)), tensors[1])
            elif kind == "missing_input":
                tensors = (pick(*tensors),)
            elif kind == "extra_input":
                tensors = (*tensors, Tensor("bogus", np.zeros((1, 4), np.float32)))
            elif kind == "unknown_model":
                model = f"no_such_model_{int(rng.integers(1000))}"
            version = str(int(rng.integers(2, 100))) if kind == "unknown_version" else ""
            return SoakRequest(name, model, tensors, version)
        if kind in ("side_off_grid", "side_below_patch"):
            if kind == "side_below_patch":
                side, k = int(rng.integers(1, contract.PATCH_SIZE)), 1
            else:  # 225 + 64 j + r for r in [0, 62]: never 224 + 64 i
                side = (
                    contract.PATCH_SIZE
                    + 1
                    + 64 * int(rng.integers(0, 10))
                    + int(rng.integers(0, 63))
                )
                k = (side - contract.PATCH_SIZE) // contract.PATCH_STRIDE + 1
            p = rng.integers(0, 256, (1, side, side, 3), np.uint8)
            return _request(name, pick(ENSEMBLE, DENSE), p, np.ones((1, k, k), bool))
        if kind == "too_many_cells":
            k = int(rng.integers(6, 17))
            n = math.ceil((MAX_PATCHES_PER_REQUEST + 1) / k**2) + int(rng.integers(2))
            return _request(name, ENSEMBLE, *regions(rng, n, k, 1.0))
        if kind == "dense_k_out_of_range":
            ks = [
                k for k in (1, 2, contract.DENSE_MAX_CELLS + 1) if region_bytes(k) <= self.max_bytes
            ]
            return _request(name, DENSE, *regions(rng, 1, pick(*ks)))
        patch_bytes = 4 * math.prod(PATCH_DIMS)
        if kind == "huge_n":
            fits = (MAX_PATCHES_PER_REQUEST + 1) * patch_bytes <= self.max_bytes
            model = pick(ENSEMBLE, DENSE, *([CLASSIFIER] if fits else []))
            if model == CLASSIFIER:
                patches = np.zeros((self.max_bytes // patch_bytes, *PATCH_DIMS), np.float32)
                return SoakRequest(name, model, (Tensor(PATCHES, patches),))
            n, k = self.huge_shape(model)
            side = contract.region_size(k)
            pixels = np.full((n, side, side, 3), 200, np.uint8)
            return _request(name, model, pixels, np.ones((n, k, k), bool))
        n = int(rng.integers(1, 4))
        if kind == "patches_dtype":
            dtype = pick(np.uint8, np.float16, np.float64)
            patches = rng.integers(0, 256, (n, *PATCH_DIMS), np.uint8).astype(dtype)
        else:  # patches_shape
            shape = pick((n, 224, 224, 3), (n, 3, 224, 223), (n, 3, 112, 112), (n, 1))
            patches = rng.uniform(-1, 1, shape).astype(np.float32)
        return SoakRequest(name, CLASSIFIER, (Tensor(PATCHES, patches),))
