"""What must agree (no timed number counts unless its output agrees with a float32 reference,
docs/gpu.md): comparisons, the CPU reference, the probe's head, ``reference`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from wsi_bench.gpu_probe import ProbeError
from wsi_bench.gpu_probe.network import Networks, parse_variant, tf32
from wsi_bench.gpu_probe.plan import TARGET_LOGIT_STD, Json
from wsi_bench.gpu_probe.state import Context, Reference
from wsi_tumor import contract
from wsi_tumor.errors import CheckpointError
from wsi_tumor.models.checkpoint import load_model
from wsi_tumor.models.resnet_fcn import TumorResNetFCN, build_model
from wsi_tumor.serving.tiling import tile_regions


def sigmoid(logits: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Probabilities of logits, in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def pearson(a: npt.ArrayLike, b: npt.ArrayLike) -> float | None:
    """Pearson correlation of two arrays (flattened), None when either is constant."""
    x, y = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return None if x.std() == 0 or y.std() == 0 else float(np.corrcoef(x, y)[0, 1])


def compare_logits(
    got: npt.NDArray[np.floating[Any]], want: npt.NDArray[np.floating[Any]], tolerance: float
) -> Json:
    """Max / mean |probability difference| (and logits, Pearson) of two grids, and the verdict:
    failed on a shape mismatch, a non-finite value or a max |difference| over ``tolerance``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    found: Json = {"cells": int(want.size), "shape": list(got.shape), "tolerance": tolerance}
    if got.shape != want.shape or not np.isfinite(got).all():
        return {**found, "max_abs_prob": None, "passed": False}
    diff = np.abs(sigmoid(got) - sigmoid(want))
    return {**found, "max_abs_prob": float(diff.max()), "mean_abs_prob": float(diff.mean()),
            "max_abs_logit": float(np.abs(got - want).max()), "pearson_logit": pearson(got, want),
            "passed": bool(diff.max() <= tolerance)}  # fmt: skip


def agreement(dense: npt.NDArray[np.floating[Any]], exact: npt.NDArray[np.floating[Any]]) -> Json:
    """Dense vs exact grids of the same regions: they differ by design (zero padding at patch
    borders in the exact pass), so these figures are reported, not held to a tolerance."""
    p_dense, p_exact = sigmoid(dense), sigmoid(exact)
    diff = np.abs(p_dense - p_exact)
    return {"cells": int(diff.size), "max_abs_prob": float(diff.max()),
            "mean_abs_prob": float(diff.mean()), "pearson_prob": pearson(p_dense, p_exact),
            "pearson_logit": pearson(dense, exact)}  # fmt: skip


def load_network(checkpoint: Path | None, seed: int) -> tuple[TumorResNetFCN, Json]:
    """The seeded random-init network, or a checkpoint's (any layout ``wsi-export`` reads).

    Raises:
        ProbeError: when the checkpoint cannot be loaded or does not fit the network.
    """
    torch.manual_seed(seed)
    if checkpoint is None:
        return build_model().eval(), {"source": f"random init, torch.manual_seed({seed})"}
    try:
        return load_model(checkpoint), {"source": str(checkpoint)}
    except CheckpointError as exc:
        raise ProbeError(str(exc)) from exc


def fit_probe_head(model: TumorResNetFCN, dense: torch.Tensor, exact: torch.Tensor) -> Json:
    """Point the random 1x1 classifier along the pooled features' main direction of variation.

    A random head reads a near-constant logit off a large common component of the features,
    which bf16 rounding swamps and which would let a wrong grid pass a probability tolerance.
    This head reads the first principal axis of the dense ([N, 512, k, k]) and the exact
    ([N * k * k, 512, 1, 1]) features, each centred on its own mean with the offset between
    them left out, scaled to a logit spread of TARGET_LOGIT_STD; the backbone keeps its seeded
    weights (docs/gpu.md).
    """
    d = dense.permute(0, 2, 3, 1).reshape(-1, dense.shape[1]).double()
    e = exact.reshape(-1, dense.shape[1]).double()
    d_mean, e_mean = d.mean(dim=0), e.mean(dim=0)
    centred = torch.cat([d - d_mean, e - e_mean])
    offset = d_mean - e_mean  # left out, so both passes' logits centre on 0 alike
    if float(offset.norm()) > 0:
        unit = offset / offset.norm()
        centred = centred - (centred @ unit)[:, None] * unit[None, :]
    _, singular, axes = torch.linalg.svd(centred, full_matrices=False)
    direction = axes[0] * torch.sign(axes[0][axes[0].abs().argmax()])  # a fixed sign
    spread = float((centred @ direction).std())
    scale = TARGET_LOGIT_STD / max(spread, 1e-12)
    with torch.no_grad():
        model.fc.weight.copy_((direction * scale).to(torch.float32).view_as(model.fc.weight))
        assert model.fc.bias is not None  # Conv2d(..., bias=True)
        model.fc.bias.fill_(float(-((d_mean + e_mean) / 2 @ direction) * scale))
    variance = singular.square()
    return {
        "head": "first principal axis of the check set's pooled features (random backbone)",
        "explained_variance": float(variance[0] / variance.sum()),
        "feature_spread": spread,
        "scale": scale,
    }


def check_regions(canvas: npt.NDArray[np.uint8], side: int, count: int) -> npt.NDArray[np.uint8]:
    """``count`` regions [N, side, side, 3] of a non-overlapping grid that straddle tissue
    edges best (closest to 60 % tissue: mixed cells)."""
    tissue = canvas.mean(axis=2) < 215
    places = sorted(
        (abs(float(tissue[y : y + side, x : x + side].mean()) - 0.6), x, y)
        for y in range(0, canvas.shape[0] - side + 1, side)
        for x in range(0, canvas.shape[1] - side + 1, side)
    )
    chosen = [(x, y) for _, x, y in places[:count]]
    chosen += [chosen[-1]] * (count - len(chosen))
    return np.stack([canvas[y : y + side, x : x + side] for x, y in chosen])


def reference_features(
    model: TumorResNetFCN, regions: npt.NDArray[np.uint8], cells: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU float32 pooled features of the check regions, independent of the device path: the
    network's own ``features`` and ``pool`` (AvgPool2d(7, stride 1)), dense on the whole region
    sampled at every other position ([N, 512, k, k]), exact on patches cut by the product's
    tiler (``wsi_tumor.serving.tiling``, ``contract.normalise``; [N * k * k, 512, 1, 1]).

    Raises:
        ProbeError: when the dense grid is not k x k.
    """
    images = contract.normalise(regions).transpose(0, 3, 1, 2)
    dense = model.pool(model.features(torch.from_numpy(np.ascontiguousarray(images))))[
        :, :, ::2, ::2
    ]
    if tuple(dense.shape[2:]) != (cells, cells):
        raise ProbeError(f"reference dense grid is {tuple(dense.shape[2:])}, not {cells} x {cells}")
    patches = tile_regions(regions, np.ones((len(regions), cells, cells), bool), regions.size)
    exact = [
        model.pool(model.features(torch.from_numpy(np.ascontiguousarray(patches[i : i + chunk]))))
        for i in range(0, len(patches), chunk)
    ]
    return dense, torch.cat(exact)


def stage_reference(ctx: Context, deadline: float) -> str:
    """The check set and its CPU float32 reference, both ways (the head fitted first for
    random weights); the device's networks."""
    canvas, plan = ctx.slide()[1], ctx.plan
    model, info = load_network(ctx.checkpoint, ctx.seed)
    side = contract.region_size(plan.check_cells)
    regions = check_regions(canvas, side, plan.check_regions)
    pooled_dense, pooled_exact = reference_features(
        model, regions, plan.check_cells, plan.reference_chunk
    )
    if ctx.checkpoint is None:
        info["calibration"] = fit_probe_head(model, pooled_dense, pooled_exact)
    dense = model.fc(pooled_dense)[:, 0].numpy().astype(np.float32)
    exact = model.fc(pooled_exact).reshape(dense.shape).numpy().astype(np.float32)
    info["exact_reference_cutter"] = "wsi_tumor.serving.tiling.tile_regions"
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
    regions, k = torch.from_numpy(reference.regions).to(device), plan.check_cells
    for name in plan.variants:
        if ctx.budget.remaining() <= 0:  # the checks are cheap: only the global budget stops them
            return "partial: budget spent"
        variant = parse_variant(name)
        for mode, want in (("dense", reference.dense), ("exact", reference.exact)):
            with tf32(variant.arithmetic == "tf32"):
                got = nets.forward(variant, mode, k)(regions).cpu().numpy()
            what = f"check set, {len(regions)} regions k={k}"
            name_ = f"{mode} {name} on {device.type} vs CPU reference"
            probe.add_check(
                {"name": name_, "what": what, **compare_logits(got, want, variant.tolerance)}
            )
            ctx.grids[f"device_{mode}_{name}"] = got
        if name == plan.variants[0]:
            dense, exact = ctx.grids[f"device_dense_{name}"], ctx.grids[f"device_exact_{name}"]
            probe.agreement[f"device {name}"] = agreement(dense, exact)
    return "ok"
