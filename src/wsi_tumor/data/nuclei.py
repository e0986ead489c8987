"""Nuclei for the synthetic textures: where they sit, and stamping them into a field.

Shared by the easy textures (:mod:`wsi_tumor.data.texture`) and the hard preset's
(:mod:`wsi_tumor.data.hard.textures`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatField = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Nuclei:
    """Parameters of n nuclei (arrays of length n)."""

    cx: Floats
    cy: Floats
    a: Floats  # semi-axis along angle, px
    b: Floats  # semi-axis across, px
    angle: Floats
    strength: Floats  # haematoxylin concentration
    roughness: Floats  # amplitude of the outline's harmonics

    def subset(self, keep: npt.NDArray[np.bool_]) -> Nuclei:
        """The nuclei where ``keep`` is True."""
        return Nuclei(
            self.cx[keep],
            self.cy[keep],
            self.a[keep],
            self.b[keep],
            self.angle[keep],
            self.strength[keep],
            self.roughness[keep],
        )


def jittered_grid(
    rng: np.random.Generator, size: int, spacing: float, jitter: float
) -> tuple[Floats, Floats]:
    """Centres on a jittered square grid that tiles the periodic square."""
    n = max(1, round(size / spacing))
    step = size / n
    gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cx: Floats = (gx.ravel() + 0.5) * step + rng.uniform(-jitter, jitter, gx.size) * step
    cy: Floats = (gy.ravel() + 0.5) * step + rng.uniform(-jitter, jitter, gy.size) * step
    return cx % size, cy % size


def pick(
    rng: np.random.Generator,
    cx: Floats,
    cy: Floats,
    where: npt.NDArray[np.bool_],
    presence: float,
) -> npt.NDArray[np.bool_]:
    """Centres that fall where ``where`` is True, each kept with probability ``presence``."""
    size = where.shape[0]
    keep = where[cy.astype(int) % size, cx.astype(int) % size]
    return np.asarray(keep & (rng.random(cx.size) < presence))


def _wrapped(nuclei: Nuclei, size: int, margin: int) -> Nuclei:
    """Add the periodic copies (shifted by +-size) of nuclei within ``margin`` of an edge."""
    parts = []
    for sy in (-size, 0, size):
        for sx in (-size, 0, size):
            cx, cy = nuclei.cx + sx, nuclei.cy + sy
            keep = (cx > -margin) & (cx < size + margin) & (cy > -margin) & (cy < size + margin)
            parts.append((keep, sx, sy))
    fields = {}
    for name in ("cx", "cy", "a", "b", "angle", "strength", "roughness"):
        values = getattr(nuclei, name)
        shift = {"cx": 1, "cy": 2}.get(name, 0)
        fields[name] = np.concatenate(
            [
                values[keep] + (sx if shift == 1 else sy if shift == 2 else 0)
                for keep, sx, sy in parts
            ]
        )
    return Nuclei(**fields)


def stamp(size: int, nuclei: Nuclei, rim: float, edge: float = 1.2) -> FloatField:
    """Max-composite soft, irregular elliptic nuclei into a periodic (size, size) field.

    ``rim`` > 0 darkens the outline (a nuclear membrane); with a pale ``strength`` this
    draws vesicular nuclei.
    """
    if len(nuclei.cx) == 0:
        return np.zeros((size, size), np.float32)
    reach = float(np.max(nuclei.a * (1 + 2.5 * nuclei.roughness))) + 3
    k = 2 * int(np.ceil(reach)) + 1
    pad = 2 * k
    nuclei = _wrapped(nuclei, size, k)
    count = len(nuclei.cx)
    canvas = np.zeros((size + 2 * pad, size + 2 * pad), np.float32)
    grid = np.arange(k, dtype=np.float32) - k // 2
    harmonics = np.arange(2, 5)
    rng = np.random.default_rng(count)  # outline phases: any fixed choice will do
    phases = rng.uniform(0, 2 * np.pi, (count, harmonics.size))
    amps = nuclei.roughness[:, None] / harmonics[None, :] * rng.uniform(0.5, 1.5, (count, 3))
    for start in range(0, count, 64):
        sl = slice(start, min(count, start + 64))
        ix = np.floor(nuclei.cx[sl]).astype(int)
        iy = np.floor(nuclei.cy[sl]).astype(int)
        fx = (nuclei.cx[sl] - ix)[:, None, None].astype(np.float32)
        fy = (nuclei.cy[sl] - iy)[:, None, None].astype(np.float32)
        u = grid[None, None, :] - fx
        v = grid[None, :, None] - fy
        cos = np.cos(nuclei.angle[sl]).astype(np.float32)[:, None, None]
        sin = np.sin(nuclei.angle[sl]).astype(np.float32)[:, None, None]
        a = nuclei.a[sl].astype(np.float32)[:, None, None]
        b = nuclei.b[sl].astype(np.float32)[:, None, None]
        ur = (u * cos + v * sin) / a
        vr = (v * cos - u * sin) / b
        rho = np.sqrt(ur**2 + vr**2)
        theta = np.arctan2(vr, ur)
        outline = np.ones_like(rho)
        for j, harmonic in enumerate(harmonics):
            amp = amps[sl, j].astype(np.float32)[:, None, None]
            phase = phases[sl, j].astype(np.float32)[:, None, None]
            outline += amp * np.cos(harmonic * theta + phase)
        inside_px = (outline - rho) * b  # approximate distance to the outline, px
        alpha = np.clip(inside_px / edge + 0.5, 0.0, 1.0)
        membrane = 1.0 + rim * np.exp(-(np.maximum(inside_px, 0.0) ** 2) / 4.0)
        values = alpha * membrane * nuclei.strength[sl].astype(np.float32)[:, None, None]
        for i in range(values.shape[0]):
            y0, x0 = iy[i] - k // 2 + pad, ix[i] - k // 2 + pad
            window = canvas[y0 : y0 + k, x0 : x0 + k]
            np.maximum(window, values[i], out=window)
    return canvas[pad:-pad, pad:-pad].copy()
