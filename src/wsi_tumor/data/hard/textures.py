"""Stains of the two centres and the textures of the hard preset.

Everything is rendered in stain-concentration space and turned into RGB with the slide's
:class:`~wsi_tumor.data.texture.Stain` (Beer-Lambert), periodic so strips tile seamlessly.
At level 0 (0.243 um/px):

- tumour with a *grade* g in [0, 1]: g = 0 is the easy preset's high-grade carcinoma (30-50
  px irregular dark nuclei with nucleoli, in nests); as g grows the nuclei get smaller,
  rounder, paler and more crowded, towards lobular-like cells that resemble lymphocytes;
- dense lymphoid tissue (lymphocyte-dense regions, follicle mantles): packed small round
  dark nuclei, dark purple like tumour;
- germinal centre: pale, larger vesicular nuclei (centroblasts, 7-10 um) with nucleoli,
  cleaved centrocytes and tingible-body macrophages full of dark debris.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from wsi_tumor.data.nuclei import Nuclei, jittered_grid, pick, stamp
from wsi_tumor.data.texture import RGB, Stain, smooth_noise, to_rgb

Centre = Literal["train", "test"]
CENTRES: tuple[Centre, ...] = ("train", "test")

_H: dict[Centre, npt.NDArray[np.float64]] = {
    "train": np.array([0.65, 0.70, 0.29]),
    "test": np.array([0.56, 0.75, 0.36]),
}
_E: dict[Centre, npt.NDArray[np.float64]] = {
    "train": np.array([0.20, 0.90, 0.38]),
    "test": np.array([0.30, 0.88, 0.26]),
}
_H_GAIN: dict[Centre, tuple[float, float]] = {"train": (0.9, 1.1), "test": (1.3, 1.5)}
_E_GAIN: dict[Centre, tuple[float, float]] = {"train": (0.9, 1.1), "test": (0.7, 0.85)}
_GLASS: dict[Centre, npt.NDArray[np.float64]] = {
    "train": np.array([241.0, 239.0, 243.0]),
    "test": np.array([239.0, 236.0, 226.0]),
}


def centre_stain(rng: np.random.Generator, centre: Centre, shift: float = 1.0) -> Stain:
    """A slide's stain at a centre: the centre's vectors and gains, jittered per slide.

    The test centre stains more haematoxylin-heavy (gain 1.3-1.5 vs 0.9-1.1), with less
    eosin, a bluer haematoxylin, a more orange eosin and a warmer glass. ``shift`` in [0, 1]
    moves the test centre's parameters from the training centre's (0) to its own (1).

    Args:
        rng: Random generator.
        centre: ``train`` or ``test``.
        shift: How far the test centre differs (ignored for ``train``).

    Returns:
        The stain.
    """
    t = shift if centre == "test" else 0.0

    def mix(table: dict[Centre, npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        return np.asarray((1 - t) * table["train"] + t * table["test"], np.float64)

    def gain(table: dict[Centre, tuple[float, float]]) -> float:
        lo = (1 - t) * table["train"][0] + t * table["test"][0]
        hi = (1 - t) * table["train"][1] + t * table["test"][1]
        return float(rng.uniform(lo, hi))

    h = mix(_H) * rng.uniform(0.95, 1.05, 3)
    e = mix(_E) * rng.uniform(0.95, 1.05, 3)
    return Stain(
        hematoxylin=h / np.linalg.norm(h),
        eosin=e / np.linalg.norm(e),
        h_gain=gain(_H_GAIN),
        e_gain=gain(_E_GAIN),
        glass=mix(_GLASS) + rng.uniform(-3.0, 3.0, 3),
    )


def _nuclei(
    cx: npt.NDArray[np.float64],
    cy: npt.NDArray[np.float64],
    a: npt.NDArray[np.float64],
    ratio: npt.NDArray[np.float64],
    rng: np.random.Generator,
    strength: npt.NDArray[np.float64],
    roughness: npt.NDArray[np.float64] | float,
) -> Nuclei:
    n = cx.size
    rough = np.broadcast_to(np.asarray(roughness, np.float64), (n,)).copy()
    return Nuclei(cx, cy, a, a * ratio, rng.uniform(0, np.pi, n), strength, rough)


def _dots(
    rng: np.random.Generator,
    size: int,
    cx: npt.NDArray[np.float64],
    cy: npt.NDArray[np.float64],
    spread: npt.NDArray[np.float64],
    radius: tuple[float, float],
    strength: float,
) -> Nuclei:
    """One small round dark dot near each centre (nucleoli, debris)."""
    m = cx.size
    offset = rng.uniform(0, 1, m) * spread
    phi = rng.uniform(0, 2 * np.pi, m)
    r = rng.uniform(*radius, m)
    return Nuclei(
        (cx + offset * np.cos(phi)) % size,
        (cy + offset * np.sin(phi)) % size,
        r,
        r,
        np.zeros(m),
        np.full(m, strength),
        np.zeros(m),
    )


def tumour_texture(size: int, stain: Stain, rng: np.random.Generator, grade: float) -> RGB:
    """Carcinoma in nests; ``grade`` 0 = high-grade (easy), 1 = lymphocyte-like (hard)."""
    g = float(np.clip(grade, 0.0, 1.0))
    nests = smooth_noise(rng, size, sigma=size / 24)
    septa = np.abs(nests) < 0.07 - 0.03 * g
    granular = smooth_noise(rng, size, sigma=2.5)
    fine = smooth_noise(rng, size, sigma=1.3)
    e = (0.30 - 0.08 * g + 0.07 * granular).astype(np.float32)
    fibres = smooth_noise(rng, size, sigma=10.0, sigma_across=1.5, angle=float(rng.uniform(0, 3)))
    e[septa] = 0.5 + 0.2 * fibres[septa]
    h_bg = np.where(septa, 0.05, 0.24 - 0.12 * g).astype(np.float32)
    cx, cy = jittered_grid(rng, size, spacing=42.0 - 14.0 * g, jitter=0.33 + 0.1 * g)
    keep = pick(rng, cx, cy, ~septa, 0.93)
    n = int(keep.sum())
    a = np.clip(rng.lognormal(np.log(19.0 - 7.5 * g), 0.18 - 0.08 * g, n), 9.0, 27.0)
    cells = _nuclei(
        cx[keep],
        cy[keep],
        a,
        rng.uniform(0.62 + 0.25 * g, 0.92 + 0.06 * g, n),
        rng,
        rng.uniform(1.05 - 0.05 * g, 1.45 - 0.2 * g, n),
        rng.uniform(0.06, 0.16, n) * (1 - 0.6 * g),
    )
    nuc = stamp(size, cells, rim=0.35 - 0.25 * g)
    nuc *= 0.8 + 0.2 * np.clip(1.0 + fine, 0.0, 2.0)  # coarse chromatin
    has = rng.random(n) < 0.7 - 0.55 * g
    nucleoli = _dots(rng, size, cells.cx[has], cells.cy[has], 0.35 * cells.a[has], (2.5, 4.0), 1.9)
    nuc = np.maximum(nuc, stamp(size, nucleoli, rim=0.0, edge=1.0))
    e *= 1.0 - 0.5 * np.minimum(nuc, 1.0)
    return to_rgb(h_bg + nuc, e, stain, rng)


def dense_lymphoid_texture(size: int, stain: Stain, rng: np.random.Generator) -> RGB:
    """Packed small lymphocytes with a few immunoblasts: dark purple, little eosin."""
    fine = smooth_noise(rng, size, sigma=1.5)
    e = (0.16 + 0.03 * fine).astype(np.float32)
    h_bg = np.full((size, size), 0.11, np.float32)
    cx, cy = jittered_grid(rng, size, spacing=24.0, jitter=0.3)
    keep = rng.random(cx.size) < 0.94
    n = int(keep.sum())
    radius = rng.uniform(10.0, 13.5, n)
    lymph = _nuclei(
        cx[keep], cy[keep], radius, rng.uniform(0.85, 1.0, n), rng, rng.uniform(1.05, 1.35, n), 0.04
    )
    big = rng.random(n) < 0.05
    m = int(big.sum())
    blasts = _nuclei(
        lymph.cx[big],
        lymph.cy[big],
        rng.uniform(16.0, 20.0, m),
        rng.uniform(0.8, 0.95, m),
        rng,
        rng.uniform(0.8, 1.0, m),
        0.06,
    )
    nuc = np.maximum(stamp(size, lymph.subset(~big), rim=0.15), stamp(size, blasts, rim=0.5))
    nuc *= 1.0 + 0.08 * fine
    e *= 1.0 - 0.5 * np.minimum(nuc, 1.0)
    return to_rgb(h_bg + nuc, e, stain, rng)


def germinal_centre_texture(size: int, stain: Stain, rng: np.random.Generator) -> RGB:
    """Pale germinal centre: centroblasts, centrocytes, tingible-body macrophages."""
    granular = smooth_noise(rng, size, sigma=2.5)
    fine = smooth_noise(rng, size, sigma=1.3)
    e = (0.27 + 0.05 * granular).astype(np.float32)
    h_bg = np.full((size, size), 0.10, np.float32)
    # tingible-body macrophages: clear pale cytoplasm with dark apoptotic debris
    mx, my = jittered_grid(rng, size, spacing=230.0, jitter=0.35)
    macro_keep = rng.random(mx.size) < 0.7
    mx, my = mx[macro_keep], my[macro_keep]
    k = mx.size
    mr = rng.uniform(32.0, 52.0, k)
    macrophage = Nuclei(
        mx,
        my,
        mr,
        mr * rng.uniform(0.75, 0.95, k),
        rng.uniform(0, np.pi, k),
        np.ones(k),
        np.full(k, 0.08),
    )
    halo = stamp(size, macrophage, rim=0.0, edge=4.0)
    e *= 1.0 - 0.55 * halo
    h_bg *= 1.0 - 0.6 * halo
    free = halo < 0.2
    cx, cy = jittered_grid(rng, size, spacing=36.0, jitter=0.33)
    keep = pick(rng, cx, cy, free, 0.62)
    n = int(keep.sum())
    blasts = _nuclei(
        cx[keep],
        cy[keep],
        rng.uniform(15.0, 21.0, n),
        rng.uniform(0.8, 0.97, n),
        rng,
        rng.uniform(0.5, 0.75, n),
        0.05,
    )
    sx, sy = jittered_grid(rng, size, spacing=30.0, jitter=0.4)
    keep_s = pick(rng, sx, sy, free, 0.35)
    s = int(keep_s.sum())
    cytes = _nuclei(
        sx[keep_s],
        sy[keep_s],
        rng.uniform(9.0, 13.0, s),
        rng.uniform(0.6, 0.85, s),
        rng,
        rng.uniform(0.95, 1.2, s),
        0.16,
    )
    nuc = np.maximum(stamp(size, blasts, rim=0.9), stamp(size, cytes, rim=0.1))
    nuc *= 0.85 + 0.15 * np.clip(1.0 + fine, 0.0, 2.0)
    nucleoli = _dots(rng, size, blasts.cx, blasts.cy, 0.6 * blasts.a, (2.0, 3.5), 1.6)
    reps = 5
    debris = _dots(
        rng,
        size,
        np.repeat(mx, reps),
        np.repeat(my, reps),
        np.repeat(0.6 * mr, reps),
        (3.0, 7.0),
        1.7,
    )
    nuc = np.maximum(nuc, stamp(size, nucleoli, rim=0.0, edge=1.0))
    nuc = np.maximum(nuc, stamp(size, debris, rim=0.0, edge=1.0))
    e *= 1.0 - 0.5 * np.minimum(nuc, 1.0)
    return to_rgb(h_bg + nuc, e, stain, rng)
