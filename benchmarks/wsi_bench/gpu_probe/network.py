"""Ways of running the network: variants (precision, channels-last, CUDA graphs,
``torch.compile``), the exact and dense passes, and per-variant copies on the device.

Every forward here takes UINT8 regions [N, S, S, 3] already on the device, with
S = ``contract.region_size(k)``, and returns FP32 logits [N, k, k]: normalisation is part of
what is timed.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.checks import TOLERANCE
from wsi_bench.gpu_probe.config import Json
from wsi_tumor import contract
from wsi_tumor.models.dense import dense_logits, normalise_nhwc
from wsi_tumor.models.resnet_fcn import TumorResNetFCN

Forward = Callable[[torch.Tensor], torch.Tensor]
"""UINT8 regions [N, S, S, 3] on the device -> FP32 logits [N, k, k]."""


@dataclass(frozen=True)
class Variant:
    """One way of running the network.

    Attributes:
        name: e.g. "fp16-cl", "fp16-cl+graph", "fp16-cl+compile".
        arithmetic: "fp32", "tf32", "fp16" or "bf16" (selects the tolerance).
        channels_last: NHWC memory layout for activations and weights.
        graph: Replay a captured CUDA graph.
        compile_mode: torch.compile mode, or None for eager.
    """

    name: str
    arithmetic: str
    channels_last: bool
    graph: bool = False
    compile_mode: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        """Parameter and activation dtype."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.arithmetic, torch.float32)

    @property
    def tolerance(self) -> float:
        """Max |probability difference| allowed against the float32 reference."""
        return TOLERANCE[self.arithmetic]


def parse_variant(name: str) -> Variant:
    """Variant of a name: ``fp32``, ``bf16-cl``, ``fp16-cl+graph``, ``fp16-cl+compile[:mode]``.

    Raises:
        ProbeError: for an unknown arithmetic, layout or extra.
    """
    base, _, extra = name.partition("+")
    arithmetic, _, layout = base.partition("-")
    kind, _, argument = extra.partition(":")
    if (
        arithmetic not in TOLERANCE
        or layout not in ("", "cl")
        or kind not in ("", "graph", "compile")
        or (argument and kind != "compile")
    ):
        raise ProbeError(f"unknown network variant {name!r}")
    mode = (argument or "default") if kind == "compile" else None
    return Variant(name, arithmetic, layout == "cl", kind == "graph", mode)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_tf32(cudnn: bool, matmul: bool) -> None:
    with warnings.catch_warnings():  # torch deprecates these flags in favour of fp32_precision
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 convolutions on (True) or off for the block (CUDA only; no effect on the CPU)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    _set_tf32(enabled, enabled)
    try:
        yield
    finally:
        _set_tf32(*before)


def dense_forward(model: TumorResNetFCN, variant: Variant) -> Forward:
    """The dense pass: normalise the whole region, features, 7x7/2 pool, 1x1 classifier."""
    layout = torch.channels_last if variant.channels_last else torch.contiguous_format

    def forward(regions: torch.Tensor) -> torch.Tensor:
        images = normalise_nhwc(regions).to(dtype=variant.dtype, memory_format=layout)
        return dense_logits(model, images).float()

    return forward


def exact_forward(model: TumorResNetFCN, variant: Variant, cells: int) -> Forward:
    """The exact pass: one 224 px patch per cell cut at (row*64, col*64), each classified."""
    size, stride = contract.PATCH_SIZE, contract.PATCH_STRIDE

    def forward(regions: torch.Tensor) -> torch.Tensor:
        count = regions.shape[0]
        images = normalise_nhwc(regions).to(variant.dtype)
        windows = images.unfold(2, size, stride).unfold(3, size, stride)  # [n,3,k,k,P,P]
        if variant.channels_last:
            patches = windows.permute(0, 2, 3, 4, 5, 1).reshape(-1, size, size, 3)
            patches = patches.permute(0, 3, 1, 2)  # NCHW view of NHWC memory
        else:
            patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, size, size)
        return model(patches).reshape(count, cells, cells).float()

    return forward


def cuda_graph(forward: Forward, example: torch.Tensor) -> Forward:
    """Capture ``forward`` on a static copy of ``example``; calls copy in and replay."""
    static_in = example.clone()
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(2):  # cuDNN autotuning and allocations happen outside the capture
            forward(static_in)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_in)

    def replay(regions: torch.Tensor) -> torch.Tensor:
        static_in.copy_(regions)
        graph.replay()
        return static_out

    return replay


class Networks:
    """Per-variant copies of the network on the device.

    Args:
        model: The float32 network on the CPU (copied, never changed).
        device: Where the copies run.
    """

    def __init__(self, model: TumorResNetFCN, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._copies: dict[tuple[torch.dtype, bool], TumorResNetFCN] = {}

    def network(self, variant: Variant) -> TumorResNetFCN:
        """The model in the variant's dtype and layout on the device (cached)."""
        key = (variant.dtype, variant.channels_last)
        if key not in self._copies:
            net = copy.deepcopy(self.model).to(device=self.device, dtype=variant.dtype)
            if variant.channels_last:
                net = net.to(memory_format=torch.channels_last)
            self._copies[key] = net.eval()
        return self._copies[key]

    def forward(self, variant: Variant, mode: str, cells: int, example: torch.Tensor) -> Forward:
        """The variant's forward for ``mode`` (graph-captured or compiled when it says so)."""
        net = self.network(variant)
        fn = dense_forward(net, variant) if mode == "dense" else exact_forward(net, variant, cells)
        if variant.compile_mode is not None:
            backend = "eager" if self.device.type != "cuda" else "inductor"
            options: Json = {"dynamic": False, "backend": backend}
            if backend == "inductor":
                options["mode"] = (
                    None if variant.compile_mode == "default" else variant.compile_mode
                )
            fn = torch.compile(fn, **options)
        if variant.graph:
            fn = cuda_graph(fn, example)
        return fn
