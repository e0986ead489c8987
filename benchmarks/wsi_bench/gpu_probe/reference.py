"""The CPU float32 reference every device output is checked against, the probe's head, and
the ``reference`` and ``check`` stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.checks import agreement, compare_logits
from wsi_bench.gpu_probe.config import TARGET_LOGIT_STD, Json
from wsi_bench.gpu_probe.network import Networks, parse_variant, tf32
from wsi_tumor import contract
from wsi_tumor.models.resnet_fcn import TumorResNetFCN, build_model
from wsi_tumor.serving.tiling import tile_regions

if TYPE_CHECKING:
    from wsi_bench.gpu_probe.context import Context

EXACT_CUTTER = "wsi_tumor.serving.tiling.tile_regions"
"""The product's tiler, which cuts the exact reference's patches (named in the report)."""


@dataclass
class Reference:
    """The check set and its CPU float32 reference.

    Attributes:
        model: The float32 network on the CPU (with the probe's head unless trained).
        regions: UINT8 check regions [N, S, S, 3].
        dense: Reference dense logits [N, k, k].
        exact: Reference exact logits [N, k, k].
    """

    model: TumorResNetFCN
    regions: npt.NDArray[np.uint8]
    dense: npt.NDArray[np.float32]
    exact: npt.NDArray[np.float32]


def load_network(checkpoint: Path | None, seed: int) -> tuple[TumorResNetFCN, Json]:
    """The seeded random-init network, or a checkpoint's weights (``{"model": state_dict}``).

    Raises:
        ProbeError: when the checkpoint cannot be loaded or does not fit the network.
    """
    torch.manual_seed(seed)
    model = build_model()
    if checkpoint is None:
        return model.eval(), {"source": f"random init, torch.manual_seed({seed})"}
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # the probe reports any unreadable checkpoint the same way
        raise ProbeError(f"{checkpoint}: cannot load checkpoint: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ProbeError(f"{checkpoint}: weights do not fit TumorResNetFCN: {exc}") from exc
    return model.eval(), {"source": str(checkpoint)}


def fit_probe_head(model: TumorResNetFCN, dense: torch.Tensor, exact: torch.Tensor) -> Json:
    """Point the random 1x1 classifier along the pooled features' main direction of variation.

    A random head reads a near-constant logit (std ~0.05 about ~0.5) off a large common
    component of the features, so bf16 rounding of that component swamps the variation between
    cells, and near-constant probabilities would let a wrong grid pass a probability tolerance.
    Like a trained head, this one reads the direction along which the cells' features vary most
    within each pass (the first principal axis of the dense and the exact features, each
    centred on its own mean, with the offset between the passes' means left out so both centre
    on logit 0), scaled so the logits' spread is TARGET_LOGIT_STD. The backbone (all the
    compute) keeps its seeded random weights.

    Args:
        model: The network; its ``fc`` is overwritten in place.
        dense: Pooled features [N, 512, k, k] of the check set's dense cells.
        exact: Pooled features [N * k * k, 512, 1, 1] of the same cells' patches.
    """
    width = dense.shape[1]
    d = dense.permute(0, 2, 3, 1).reshape(-1, width).double()
    e = exact.reshape(-1, width).double()
    d_mean, e_mean = d.mean(dim=0), e.mean(dim=0)
    centred = torch.cat([d - d_mean, e - e_mean])
    # leave out the dense-exact offset so both passes' logits centre on 0 alike
    offset = d_mean - e_mean
    if float(offset.norm()) > 0:
        unit = offset / offset.norm()
        centred = centred - (centred @ unit)[:, None] * unit[None, :]
    _, singular, axes = torch.linalg.svd(centred, full_matrices=False)
    direction = axes[0] * torch.sign(axes[0][axes[0].abs().argmax()])  # a fixed sign
    spread = float((centred @ direction).std())
    scale = TARGET_LOGIT_STD / max(spread, 1e-12)
    middle = (d_mean + e_mean) / 2
    with torch.no_grad():
        model.fc.weight.copy_((direction * scale).to(torch.float32).view_as(model.fc.weight))
        bias = model.fc.bias
        assert bias is not None  # Conv2d(..., bias=True)
        bias.fill_(float(-(middle @ direction) * scale))
    variance = singular.square()
    return {
        "head": "first principal axis of the check set's pooled features (random backbone)",
        "explained_variance": float(variance[0] / variance.sum()),
        "feature_spread": spread,
        "scale": scale,
    }


def cut_regions(
    canvas: npt.NDArray[np.uint8], positions: Sequence[tuple[int, int]], side: int
) -> npt.NDArray[np.uint8]:
    """Regions [N, side, side, 3] with top-left corners at (x, y) positions."""
    return np.stack([canvas[y : y + side, x : x + side] for x, y in positions])


def check_positions(canvas: npt.NDArray[np.uint8], side: int, count: int) -> list[tuple[int, int]]:
    """Top-left (x, y) of ``count`` regions that straddle tissue edges (mixed cells)."""
    tissue = canvas.mean(axis=2) < 215
    step = max(32, side // 4)
    candidates = []
    for y in range(0, canvas.shape[0] - side + 1, step):
        for x in range(0, canvas.shape[1] - side + 1, step):
            fraction = float(tissue[y : y + side, x : x + side].mean())
            candidates.append((abs(fraction - 0.6), x, y))
    candidates.sort()
    chosen: list[tuple[int, int]] = []
    for _, x, y in candidates:
        if all(abs(x - cx) >= side or abs(y - cy) >= side for cx, cy in chosen):
            chosen.append((x, y))
        if len(chosen) == count:
            break
    while len(chosen) < count:
        chosen.append(chosen[-1] if chosen else (0, 0))
    return chosen


def reference_features(
    model: TumorResNetFCN, regions: npt.NDArray[np.uint8], cells: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU float32 pooled features of the check regions, dense and exact.

    Independent of the device path: both use the network's own modules (``features``, then
    ``pool`` = AvgPool2d(7, stride 1)), dense on the whole region sampled at every other
    position, exact on patches cut by the product's Python tiler
    (``wsi_tumor.serving.tiling``) and scaled by ``contract.normalise``.

    Returns:
        Dense [N, 512, k, k], exact [N * k * k, 512, 1, 1] (row-major over (n, row, col)).

    Raises:
        ProbeError: when the dense grid is not k x k.
    """
    count = regions.shape[0]
    images = torch.from_numpy(
        np.ascontiguousarray(contract.normalise(regions).transpose(0, 3, 1, 2))
    )
    dense = model.pool(model.features(images))[:, :, ::2, ::2]
    if tuple(dense.shape[2:]) != (cells, cells):
        raise ProbeError(f"reference dense grid is {tuple(dense.shape[2:])}, not {cells} x {cells}")
    mask = np.ones((count, cells, cells), dtype=bool)
    patches = tile_regions(regions, mask, max_patches=count * cells * cells)
    exact = torch.cat(
        [
            model.pool(
                model.features(torch.from_numpy(np.ascontiguousarray(patches[i : i + chunk])))
            )
            for i in range(0, len(patches), chunk)
        ]
    )
    return dense, exact


def reference_logits(
    model: TumorResNetFCN, dense: torch.Tensor, exact: torch.Tensor
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The network's ``fc`` on the pooled reference features: logits [N, k, k] both ways."""
    dense_logits_ = model.fc(dense)[:, 0].numpy().astype(np.float32)
    exact_logits = model.fc(exact).reshape(dense_logits_.shape).numpy().astype(np.float32)
    return dense_logits_, exact_logits


def stage_reference(ctx: Context, deadline: float) -> str:
    """The check set (regions straddling tissue edges) and its CPU float32 reference, both
    ways; with random weights the head is fitted first (:func:`fit_probe_head`)."""
    _, canvas = ctx.slide()
    plan = ctx.plan
    model, info = load_network(ctx.checkpoint, ctx.seed)
    side = contract.region_size(plan.check_cells)
    regions = cut_regions(canvas, check_positions(canvas, side, plan.check_regions), side)
    pooled_dense, pooled_exact = reference_features(
        model, regions, plan.check_cells, plan.reference_chunk
    )
    if ctx.checkpoint is None:
        info["calibration"] = fit_probe_head(model, pooled_dense, pooled_exact)
    dense, exact = reference_logits(model, pooled_dense, pooled_exact)
    info["exact_reference_cutter"] = EXACT_CUTTER
    ctx.probe.model = info
    ctx.probe.agreement["reference (CPU fp32)"] = agreement(dense, exact)
    ctx.grids.update(reference_dense=dense, reference_exact=exact)
    if regions.nbytes <= 2**20:  # the tiny plan's, for the test; not the GPU plan's 2.7 MB
        ctx.grids["regions"] = regions
    ctx.reference = Reference(model, regions, dense, exact)
    ctx.nets = Networks(model, ctx.device)
    return "ok"


def stage_check(ctx: Context, deadline: float) -> str:
    """Every eager variant on the device, both modes, on the check set vs the reference."""
    reference, nets = ctx.checked()
    probe, plan, device = ctx.probe, ctx.plan, ctx.device
    regions = torch.from_numpy(reference.regions).to(device)
    k = plan.check_cells
    for name in plan.variants:
        variant = parse_variant(name)
        if ctx.budget.remaining() <= 0:  # the checks are cheap: only the global budget stops them
            return "partial: budget spent"
        for mode, ref in (("dense", reference.dense), ("exact", reference.exact)):
            with tf32(variant.arithmetic == "tf32"):
                got = nets.forward(variant, mode, k, regions)(regions).cpu().numpy()
            result = compare_logits(got, ref, variant.tolerance)
            probe.add_check(
                {
                    "name": f"{mode} {name} on {device.type} vs CPU reference",
                    "what": f"check set, {len(regions)} regions k={k}",
                    **result,
                }
            )
            ctx.grids[f"device_{mode}_{name}"] = got
        if name == plan.variants[0]:
            probe.agreement[f"device {name}"] = agreement(
                ctx.grids[f"device_dense_{name}"], ctx.grids[f"device_exact_{name}"]
            )
    return "ok"
