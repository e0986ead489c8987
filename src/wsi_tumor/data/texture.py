"""Periodic H&E-like textures for the synthetic slides.

Textures are rendered in stain-concentration space (haematoxylin H, eosin E) and turned
into RGB with the Beer-Lambert law, ``rgb = 255 * exp(-(H * h + E * e))``, where h and e
are the slide's optical-density stain vectors (Ruifrok and Johnston's, perturbed per slide
so stain intensity and hue vary between slides). Every texture is periodic (noise is
filtered in the Fourier domain, nuclei wrap around the edges), so a slide is painted by
tiling it without seams.

At level 0 (0.243 um/px) the classes differ as real tissue does:

- normal lymph-node tissue: pink fibrous stroma with sparse thin spindle nuclei, and
  lymphoid areas of small (20-26 px, 5-6 um), round, uniform, dark nuclei;
- tumour: densely packed, larger (30-50 px), irregular, darker nuclei with a dark rim,
  coarse chromatin and nucleoli, on purplish cytoplasm, in nests split by thin septa.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.fft

from wsi_tumor.data.nuclei import Nuclei, jittered_grid, pick, stamp

FloatField = npt.NDArray[np.float32]
RGB = npt.NDArray[np.uint8]
TextureKind = Literal["normal", "tumor", "glass"]

_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.20, 0.90, 0.38])
_GLASS = np.array([241.0, 239.0, 243.0])


@dataclass(frozen=True)
class Stain:
    """One slide's staining.

    Attributes:
        hematoxylin: Unit optical-density vector of haematoxylin (RGB).
        eosin: Unit optical-density vector of eosin (RGB).
        h_gain: Multiplier of haematoxylin concentrations.
        e_gain: Multiplier of eosin concentrations.
        glass: RGB of the empty glass.
    """

    hematoxylin: npt.NDArray[np.float64]
    eosin: npt.NDArray[np.float64]
    h_gain: float
    e_gain: float
    glass: npt.NDArray[np.float64]


def random_stain(rng: np.random.Generator) -> Stain:
    """Draw a slide's stain: vectors perturbed by about 8 %, gains in [0.85, 1.15]."""
    h = _HEMATOXYLIN * rng.uniform(0.92, 1.08, 3)
    e = _EOSIN * rng.uniform(0.92, 1.08, 3)
    return Stain(
        hematoxylin=h / np.linalg.norm(h),
        eosin=e / np.linalg.norm(e),
        h_gain=float(rng.uniform(0.85, 1.15)),
        e_gain=float(rng.uniform(0.85, 1.15)),
        glass=_GLASS + rng.uniform(-4.0, 3.0, 3),
    )


def smooth_noise(
    rng: np.random.Generator,
    size: int,
    sigma: float,
    sigma_across: float | None = None,
    angle: float = 0.0,
) -> FloatField:
    """Periodic Gaussian-filtered white noise, standardised to mean 0 and std 1.

    Args:
        rng: Random generator.
        size: Side of the square field.
        sigma: Filter standard deviation in pixels (along ``angle`` if anisotropic).
        sigma_across: Standard deviation across ``angle``; None for isotropic.
        angle: Orientation of the long axis, radians.

    Returns:
        (size, size) float32.
    """
    white = rng.standard_normal((size, size), dtype=np.float32)
    ky = (np.fft.fftfreq(size) * 2 * np.pi).astype(np.float32)[:, None]
    kx = (np.fft.rfftfreq(size) * 2 * np.pi).astype(np.float32)[None, :]
    across = sigma if sigma_across is None else sigma_across
    k_along = kx * np.float32(np.cos(angle)) + ky * np.float32(np.sin(angle))
    k_across = ky * np.float32(np.cos(angle)) - kx * np.float32(np.sin(angle))
    gain = np.exp(np.float32(-0.5) * ((k_along * sigma) ** 2 + (k_across * across) ** 2))
    field: FloatField = scipy.fft.irfft2(scipy.fft.rfft2(white) * gain, s=(size, size))
    field -= field.mean()
    field /= field.std() + np.float32(1e-12)
    return field.astype(np.float32, copy=False)


def to_rgb(h: FloatField, e: FloatField, stain: Stain, rng: np.random.Generator) -> RGB:
    """Beer-Lambert: haematoxylin and eosin concentrations -> uint8 RGB, with sensor noise."""
    od = (h * np.float32(stain.h_gain))[..., None] * stain.hematoxylin.astype(np.float32)
    od += (e * np.float32(stain.e_gain))[..., None] * stain.eosin.astype(np.float32)
    del h, e
    np.exp(-od, out=od)
    od *= np.float32(255.0)
    od += np.float32(2.0) * rng.standard_normal(od.shape, dtype=np.float32)  # sensor noise
    od += np.float32(0.5)
    return np.clip(od, 0, 255).astype(np.uint8)


def _normal(size: int, stain: Stain, rng: np.random.Generator) -> RGB:
    region = smooth_noise(rng, size, sigma=size / 14)
    weight = np.clip((region - 0.0) / 0.4, 0.0, 1.0)  # 1 = lymphoid, 0 = stroma
    lymphoid = weight > 0.5
    fibre_angle = float(rng.uniform(0, np.pi))
    fibres = smooth_noise(rng, size, sigma=14.0, sigma_across=1.6, angle=fibre_angle)
    fine = smooth_noise(rng, size, sigma=1.5)
    stroma_e = 0.50 + 0.22 * fibres
    stroma_e[fibres < -1.3] *= 0.35  # clefts between collagen bundles
    e = (weight * (0.22 + 0.04 * fine) + (1 - weight) * stroma_e).astype(np.float32)
    h_bg = (0.04 + 0.06 * weight).astype(np.float32)
    # lymphocytes: small, round, uniform
    cx, cy = jittered_grid(rng, size, spacing=30.0, jitter=0.3)
    keep = pick(rng, cx, cy, lymphoid, 0.78)
    n = int(keep.sum())
    radius = rng.uniform(10.0, 13.0, n)
    lymph = Nuclei(
        cx[keep],
        cy[keep],
        radius,
        radius * rng.uniform(0.88, 1.0, n),
        rng.uniform(0, np.pi, n),
        rng.uniform(0.95, 1.2, n),
        np.full(n, 0.03),
    )
    # fibroblasts: thin spindles along the fibres
    cx, cy = jittered_grid(rng, size, spacing=100.0, jitter=0.4)
    keep = pick(rng, cx, cy, ~lymphoid, 0.55)
    n = int(keep.sum())
    spindle = Nuclei(
        cx[keep],
        cy[keep],
        rng.uniform(14.0, 22.0, n),
        rng.uniform(4.0, 6.5, n),
        fibre_angle + rng.normal(0, 0.25, n),
        rng.uniform(0.75, 0.95, n),
        np.full(n, 0.04),
    )
    nuc = np.maximum(stamp(size, lymph, rim=0.1), stamp(size, spindle, rim=0.0))
    nuc *= 1.0 + 0.08 * fine
    e *= 1.0 - 0.5 * np.minimum(nuc, 1.0)
    return to_rgb(h_bg + nuc, e, stain, rng)


def _tumour(size: int, stain: Stain, rng: np.random.Generator) -> RGB:
    nests = smooth_noise(rng, size, sigma=size / 24)
    septa = np.abs(nests) < 0.07
    granular = smooth_noise(rng, size, sigma=2.5)
    fine = smooth_noise(rng, size, sigma=1.3)
    e = (0.30 + 0.07 * granular).astype(np.float32)
    fibres = smooth_noise(rng, size, sigma=10.0, sigma_across=1.5, angle=float(rng.uniform(0, 3)))
    e[septa] = 0.5 + 0.2 * fibres[septa]
    h_bg = np.where(septa, 0.05, 0.24).astype(np.float32)
    cx, cy = jittered_grid(rng, size, spacing=42.0, jitter=0.33)
    keep = pick(rng, cx, cy, ~septa, 0.93)
    n = int(keep.sum())
    a = np.clip(rng.lognormal(np.log(19.0), 0.18, n), 13.0, 27.0)
    tumour = Nuclei(
        cx[keep],
        cy[keep],
        a,
        a * rng.uniform(0.62, 0.92, n),
        rng.uniform(0, np.pi, n),
        rng.uniform(1.05, 1.45, n),
        rng.uniform(0.06, 0.16, n),
    )
    nuc = stamp(size, tumour, rim=0.35)
    nuc *= 0.8 + 0.2 * np.clip(1.0 + fine, 0.0, 2.0)  # coarse chromatin
    # nucleoli: one or two small dark dots in most nuclei
    has = rng.random(n) < 0.7
    m = int(has.sum())
    offset = rng.uniform(0, 0.35, m) * tumour.a[has]
    phi = rng.uniform(0, 2 * np.pi, m)
    r = rng.uniform(2.5, 4.0, m)
    nucleoli = Nuclei(
        (tumour.cx[has] + offset * np.cos(phi)) % size,
        (tumour.cy[has] + offset * np.sin(phi)) % size,
        r,
        r,
        np.zeros(m),
        np.full(m, 1.9),
        np.zeros(m),
    )
    nuc = np.maximum(nuc, stamp(size, nucleoli, rim=0.0, edge=1.0))
    e *= 1.0 - 0.5 * np.minimum(nuc, 1.0)
    return to_rgb(h_bg + nuc, e, stain, rng)


def _glass(size: int, stain: Stain, rng: np.random.Generator) -> RGB:
    shade = smooth_noise(rng, size, sigma=size / 8)
    rgb = stain.glass.astype(np.float32)[None, None, :] + np.float32(1.5) * shade[..., None]
    rgb += np.float32(1.2) * rng.standard_normal((size, size, 3), dtype=np.float32)
    rgb += np.float32(0.5)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def render_texture(
    kind: TextureKind,
    size: int,
    stain: Stain,
    rng: np.random.Generator,
) -> RGB:
    """Render a periodic (size, size, 3) uint8 texture of one tissue class.

    Args:
        kind: ``"normal"`` tissue, ``"tumor"`` tissue or ``"glass"``.
        size: Side in pixels (a power of two keeps the FFTs fast).
        stain: The slide's stain.
        rng: Random generator (the texture is a pure function of its state).

    Returns:
        (size, size, 3) uint8 RGB that tiles seamlessly.
    """
    if kind == "normal":
        return _normal(size, stain, rng)
    if kind == "tumor":
        return _tumour(size, stain, rng)
    if kind == "glass":
        return _glass(size, stain, rng)
    raise ValueError(f"unknown texture kind {kind!r}")
