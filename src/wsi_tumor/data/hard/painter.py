"""Paint level-0 strips of a hard slide: textures under polygons, then the artefacts.

Layers, bottom to top: glass; normal lymph-node tissue; lymphocyte-dense regions and
follicles (dark mantle, pale germinal centre); tumour (exclusions cut out); folds (the
section's transmittance squared where it lies doubled); pen ink (Beer-Lambert, with a
patchy density); out-of-focus ellipses (Gaussian blur blended in with a soft edge, so a
strip touching one is rendered with extra rows above and below and cropped).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from wsi_tumor.annotations.polygons import fill_polygons, rasterize_region
from wsi_tumor.data.hard.confounders import INKS, Confounder, ConfounderKind
from wsi_tumor.data.hard.plan import TissuePlan
from wsi_tumor.data.hard.textures import (
    dense_lymphoid_texture,
    germinal_centre_texture,
    tumour_texture,
)
from wsi_tumor.data.texture import Stain, render_texture, smooth_noise

TEXTURE_SIDE = 1024
"""Side of the periodic textures (250 um: more than a patch, so patches do not repeat)."""
BLUR_REACH = 3.0
"""Blur kernels are cut at this many sigmas."""

RGB = npt.NDArray[np.uint8]


class HardPainter:
    """Renders level-0 rows of one slide; a pure function of the plan and the stream."""

    def __init__(
        self,
        plan: TissuePlan,
        confounders: list[Confounder],
        stain: Stain,
        grade: float,
        rng: np.random.Generator,
        enabled: Collection[ConfounderKind],
        side: int = TEXTURE_SIDE,
    ) -> None:
        self.plan = plan
        self.width, self.height = plan.width, plan.height
        self.side = side
        # every texture is drawn whatever is enabled, so streams do not shift
        self.textures: dict[str, RGB] = {
            "glass": render_texture("glass", side, stain, rng),
            "normal": render_texture("normal", side, stain, rng),
            "tumour": tumour_texture(side, stain, rng, grade),
            "dense": dense_lymphoid_texture(side, stain, rng),
            "germinal": germinal_centre_texture(side, stain, rng),
        }
        self.ink_noise = smooth_noise(rng, side, sigma=24.0)
        self.offsets = {kind: rng.integers(0, side, 2) for kind in (*self.textures, "mantle")}
        self.confounders = [c for c in confounders if c.kind in enabled]
        self.blur_pad = max(
            (
                math.ceil(BLUR_REACH * float(c.params["sigma_px"]))
                for c in self.confounders
                if c.kind == "blur"
            ),
            default=0,
        )
        self.cols = np.arange(self.width)
        self.fold_lut = np.array([255.0 * (v / 255.0) ** 2.0 for v in range(256)], np.float32)

    def _texture(self, kind: str, row0: int, rows: int, col0: int = 0, col1: int = -1) -> RGB:
        """Columns ``col0:col1`` (-1: to the end) of rows of a texture tiled over the slide."""
        source = "dense" if kind == "mantle" else kind
        ox, oy = self.offsets[kind]
        texture = self.textures[source]
        ri = (np.arange(row0, row0 + rows) + oy) % self.side
        ci = (self.cols[col0 : None if col1 < 0 else col1] + ox) % self.side
        return texture[ri][:, ci]

    def _put(self, out: RGB, kind: str, where: npt.NDArray[np.bool_], row0: int) -> None:
        """Copy a texture into ``out`` where ``where`` is True (only its columns are built)."""
        cols = np.flatnonzero(where.any(axis=0))
        if cols.size == 0:
            return
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        texture = self._texture(kind, row0, where.shape[0], c0, c1)
        np.copyto(out[:, c0:c1], texture, where=where[:, c0:c1, None])

    @staticmethod
    def _rows_hit(box: tuple[int, int, int, int], row0: int, rows: int, pad: int = 0) -> bool:
        return box[1] - pad < row0 + rows and row0 < box[3] + pad

    def _fill(
        self, outline: npt.NDArray[np.float64], row0: int, rows: int
    ) -> npt.NDArray[np.bool_]:
        return fill_polygons([outline], (0, row0), (rows, self.width), 1.0)

    def _paint(self, row0: int, rows: int) -> RGB:
        out = self._texture("glass", row0, rows)
        tissue = fill_polygons(self.plan.tissue, (0, row0), (rows, self.width), 1.0)
        tissue_rows = bool(tissue.any())
        self._put(out, "normal", tissue, row0)
        for item in self.confounders:
            if not tissue_rows or not self._rows_hit(item.box, row0, rows):
                continue
            if item.kind == "lymphoid":
                self._put(out, "dense", self._fill(item.outlines[0], row0, rows) & tissue, row0)
            elif item.kind == "germinal":
                mantle = self._fill(item.outlines[0], row0, rows) & tissue
                self._put(out, "mantle", mantle, row0)
                centre = self._fill(item.outlines[1], row0, rows) & tissue
                self._put(out, "germinal", centre, row0)
        lesion_boxes = [p.box for p in self.plan.lesions]
        if any(self._rows_hit(b, row0, rows) for b in lesion_boxes):
            lesion = rasterize_region(self.plan.annotations, (0, row0), (rows, self.width), 1.0)
            self._put(out, "tumour", lesion > 0, row0)
        for item in self.confounders:
            if not self._rows_hit(item.box, row0, rows):
                continue
            if item.kind == "fold" and tissue_rows:
                band = self._fill(item.outlines[0], row0, rows) & tissue
                if band.any():
                    out[band] = np.round(self.fold_lut[out[band]]).astype(np.uint8)
            elif item.kind == "pen":
                self._ink(out, item, row0, rows)
        return out

    def _ink(self, out: RGB, item: Confounder, row0: int, rows: int) -> None:
        stroke = self._fill(item.outlines[0], row0, rows)
        if not stroke.any():
            return
        soft = ndimage.uniform_filter(stroke.astype(np.float32), size=9)
        ri = (np.arange(row0, row0 + rows)) % self.side
        ci = self.cols % self.side
        patchy = 1.0 + 0.18 * self.ink_noise[ri][:, ci]
        density = soft * patchy * np.float32(item.params["density"])
        od = np.asarray(INKS[str(item.params["ink"])], np.float32)
        where = density > 0.01
        transmit = np.exp(-density[where][:, None] * od[None, :])
        out[where] = np.clip(out[where] * transmit + 0.5, 0, 255).astype(np.uint8)

    def _blur(self, image: RGB, item: Confounder, row0: int) -> None:
        sigma = float(item.params["sigma_px"])
        pad = math.ceil(BLUR_REACH * sigma)
        x0, _, x1, _ = item.box
        c0, c1 = max(0, x0 - pad), min(self.width, x1 + pad)
        window = image[:, c0:c1].astype(np.float32)
        blurred = ndimage.gaussian_filter(window, (sigma, sigma, 0), truncate=BLUR_REACH)
        cx, cy = item.params["centre"]
        rx, ry = item.params["radii"]
        angle = float(item.params["angle"])
        yy = np.arange(row0, row0 + image.shape[0], dtype=np.float32)[:, None] - cy
        xx = np.arange(c0, c1, dtype=np.float32)[None, :] - cx
        u = (xx * math.cos(angle) + yy * math.sin(angle)) / rx
        v = (yy * math.cos(angle) - xx * math.sin(angle)) / ry
        radius = np.sqrt(u**2 + v**2)
        weight = np.clip((1.0 - radius) / 0.3, 0.0, 1.0)[..., None]
        mixed = window * (1 - weight) + blurred * weight
        image[:, c0:c1] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    def __call__(self, row0: int, rows: int) -> RGB:
        """Level-0 rows ``row0 .. row0 + rows - 1`` as (rows, width, 3) uint8."""
        blurs = [
            c
            for c in self.confounders
            if c.kind == "blur" and self._rows_hit(c.box, row0, rows, self.blur_pad)
        ]
        if not blurs:
            return self._paint(row0, rows)
        top = max(0, row0 - self.blur_pad)
        bottom = min(self.height, row0 + rows + self.blur_pad)
        image = self._paint(top, bottom - top)
        for item in blurs:
            self._blur(image, item, top)
        return image[row0 - top : row0 - top + rows]
