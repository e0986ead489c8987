"""Ways of running the network: variants (precision, channels-last, ``torch.compile``), the
exact and dense passes from UINT8 regions on the device (normalisation is timed too), and
per-variant copies on the device."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.plan import TOLERANCE
from wsi_tumor import contract
from wsi_tumor.models.dense import dense_logits, normalise_nhwc
from wsi_tumor.models.resnet_fcn import TumorResNetFCN

Forward = Callable[[torch.Tensor], torch.Tensor]
"""UINT8 regions [N, S, S, 3] on the device -> FP32 logits [N, k, k]."""


@dataclass(frozen=True)
class Variant:
    """One way of running the network, e.g. "fp16-cl" or "fp16-cl+compile:reduce-overhead":
    its arithmetic (selects the tolerance), channels-last layout and torch.compile mode."""

    name: str
    arithmetic: str
    channels_last: bool
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
    """Variant of a name: ``fp32``, ``bf16-cl``, ``fp16-cl+compile[:mode]``.

    Raises:
        ProbeError: for an unknown arithmetic, layout or extra.
    """
    base, _, extra = name.partition("+")
    arithmetic, _, layout = base.partition("-")
    kind, _, mode = extra.partition(":")
    if arithmetic not in TOLERANCE or layout not in ("", "cl") or kind not in ("", "compile"):
        raise ProbeError(f"unknown network variant {name!r}")
    return Variant(name, arithmetic, layout == "cl", (mode or "default") if kind else None)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 convolutions on (True) or off for the block (CUDA only; no effect on the CPU)."""
    with warnings.catch_warnings():  # torch deprecates these flags in favour of fp32_precision
        warnings.simplefilter("ignore")
        before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


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
        images = normalise_nhwc(regions).to(variant.dtype)
        windows = images.unfold(2, size, stride).unfold(3, size, stride)  # [n,3,k,k,P,P]
        if variant.channels_last:  # an NCHW view of NHWC memory
            patches = windows.permute(0, 2, 3, 4, 5, 1).reshape(-1, size, size, 3)
            patches = patches.permute(0, 3, 1, 2)
        else:
            patches = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, size, size)
        return model(patches).reshape(regions.shape[0], cells, cells).float()

    return forward


class Networks:
    """Per-(dtype, layout) copies of the float32 CPU network on ``device`` (never changed)."""

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

    def forward(self, variant: Variant, mode: str, cells: int) -> Forward:
        """The variant's forward for ``mode``; compiled (dynamo alone on the CPU, inductor on
        a GPU) when the variant says so."""
        net = self.network(variant)
        fn = dense_forward(net, variant) if mode == "dense" else exact_forward(net, variant, cells)
        if variant.compile_mode is None:
            return fn
        cuda = self.device.type == "cuda"
        mode_ = variant.compile_mode if cuda and variant.compile_mode != "default" else None
        return torch.compile(fn, dynamic=False, backend="inductor" if cuda else "eager", mode=mode_)
