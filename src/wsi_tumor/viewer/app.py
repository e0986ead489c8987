"""The ``wsi-view`` web application (Starlette): two pages, their JSON, tiles, the map.

Every URL names a slide by its output stem; the server maps names to files it found at
start-up (:class:`~wsi_tumor.viewer.cohort.Cohort`), so no part of a URL ever becomes a
path. Anything else, an unknown slide, a file that is not one of the slide's outputs, or
one whose real location lies outside its folder, is a 404, logged. Pages load only the
package's own scripts (a content security policy forbids the rest), and on loopback the
server answers only requests addressed to loopback names (no DNS rebinding).

Routes:
    ``/``                                      the cohort page
    ``/slides/{name}``                         a slide's page
    ``/api/cohort``                            every slide's line (JSON)
    ``/api/slides/{name}``                     a slide's layers and facts (JSON)
    ``/slides/{name}/tiles/{level}/{c}_{r}.jpeg``  Deep Zoom tiles of the slide
    ``/slides/{name}/overlay.png?threshold=t`` the coloured map, transparent below ``t``
    ``/slides/{name}/files/{file}``            the slide's output files (download)
    ``/static/...``                            the pages' scripts, OpenSeadragon
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsi_tumor.errors import WsiTumorError
from wsi_tumor.viewer import layers
from wsi_tumor.viewer.cohort import Cohort, inside
from wsi_tumor.viewer.tiles import ByteCache, SlideOpenError, TileService

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_TILE_NAME = re.compile(r"(\d{1,6})_(\d{1,6})\.jpeg")
FACT_KEYS = (
    "slide",
    "level0_size",
    "reader",
    "resolution",
    "mode",
    "precision",
    "model",
    "slide_classifier",
    "map_shape",
    "map_cell_um",
    "tissue",
    "damaged",
    "counts",
    "timings_s",
    "patches_per_s",
    "peak_rss_mib",
)
"""Report keys shown in the slide page's side panel."""
OVERLAY_CACHE_BYTES = 64 << 20


@dataclass
class Viewer:
    """What the handlers share: the cohort, the tile service, the ground-truth folder."""

    cohort: Cohort
    tiles: TileService
    ground_truth: Path | None = None

    def __post_init__(self) -> None:
        self.overlays = ByteCache(OVERLAY_CACHE_BYTES)
        self._slide_json: dict[str, dict[str, Any]] = {}

    def entry_or_404(self, request: Request) -> str:
        """The slide name of the request's ``{name}``, or a logged 404."""
        name = request.path_params["name"]
        if name not in self.cohort:
            raise HTTPException(404, f"no slide {name!r} in this cohort")
        return str(name)

    # --- per-slide JSON ----------------------------------------------------------------
    async def slide_json(self, name: str) -> dict[str, Any]:
        """The slide page's data (computed once per slide)."""
        cached = self._slide_json.get(name)
        if cached is None:
            slide = await self._slide_facts(name)
            cached = await asyncio.to_thread(self._layers, name, slide)
            self._slide_json[name] = cached
        return cached

    async def _slide_facts(self, name: str) -> dict[str, Any]:
        entry = self.cohort[name]
        if entry.slide_path is None:
            return {"available": False, "message": entry.slide_problem}
        try:
            zoom = await self.tiles.open(name)
        except SlideOpenError as exc:
            return {"available": False, "message": f"slide file cannot be read: {exc}"}
        width, height = zoom.slide.level_dimensions[0]
        return {
            "available": True,
            "message": None,
            "width": width,
            "height": height,
            "levels": zoom.slide.level_count,
            "reader": zoom.slide.describe(),
            "dzi": zoom.dzi(f"/slides/{quote(name, safe='')}/tiles/"),
        }

    def _layers(self, name: str, slide: dict[str, Any]) -> dict[str, Any]:
        entry = self.cohort[name]
        report = entry.report or {}
        if not slide["available"] and isinstance(report.get("level0_size"), list):
            slide["width"], slide["height"] = report["level0_size"]
        outputs = self.cohort.outputs(name)
        base = f"/slides/{quote(name, safe='')}"
        data: dict[str, Any] = {
            **entry.row(),
            "score_note": entry.score_note,
            "slide": slide,
            "map": None,
            "candidate_list": layers.read_candidates(
                self.cohort.output_file(name, outputs.csv.name)
            ),
            "ground_truth": self._ground_truth(name),
            "facts": {key: report[key] for key in FACT_KEYS if key in report},
            "files": [
                {"name": path.name, "url": f"{base}/files/{quote(path.name)}"}
                for path in outputs.all_paths()
                if self.cohort.output_file(name, path.name) is not None
            ],
        }
        prob_map = self.prob_map(name)
        if prob_map is not None:
            data["map"] = {
                "url": f"{base}/overlay.png",
                "rows": int(prob_map.shape[0]),
                "cols": int(prob_map.shape[1]),
                "max": float(prob_map.max()) if prob_map.size else 0.0,
                "colours": layers.colour_stops(),
                **layers.map_geometry(report, (prob_map.shape[0], prob_map.shape[1])),
            }
        return data

    def _ground_truth(self, name: str) -> dict[str, Any] | None:
        if self.ground_truth is None:
            return None
        path = layers.find_annotations(self.ground_truth, name)
        if path is None:
            return {"file": None, "outlines": [], "message": "no annotations: a normal slide"}
        if not inside(path, self.ground_truth):
            log.warning("%s: refused, it leads out of %s", path, self.ground_truth)
            return {"file": None, "outlines": [], "message": f"{path.name} is not served"}
        try:
            return {"file": path.name, "outlines": layers.outlines(path), "message": None}
        except WsiTumorError as exc:
            return {"file": path.name, "outlines": [], "message": str(exc).splitlines()[0]}

    def prob_map(self, name: str) -> np.ndarray | None:
        """The slide's probability map, or None without an intact one."""
        entry = self.cohort[name]
        path = self.cohort.output_file(name, self.cohort.outputs(name).prob_map.name)
        if entry.report is None or path is None:
            return None
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot read the map (%s)", path, exc)
            return None
        return values if values.ndim == 2 else None

    def overlay_png(self, name: str, threshold: float) -> bytes | None:
        """The coloured map as PNG bytes (cached per threshold), or None without a map."""
        key = (name, round(threshold, 3))
        cached = self.overlays.get(key)
        if cached is not None:
            return cached
        prob_map = self.prob_map(name)
        if prob_map is None:
            return None
        mask_png = self.cohort.output_file(name, self.cohort.outputs(name).mask_png.name)
        tissue = layers.read_tissue(mask_png, (prob_map.shape[0], prob_map.shape[1]))
        data = layers.png_bytes(layers.render_map(prob_map, tissue, threshold))
        self.overlays.put(key, data)
        return data


# --- handlers ------------------------------------------------------------------------------
def _viewer(request: Request) -> Viewer:
    viewer: Viewer = request.app.state.viewer
    return viewer


async def cohort_page(request: Request) -> Response:
    return FileResponse(STATIC / "cohort.html")


async def no_icon(request: Request) -> Response:
    return Response(status_code=204)


async def slide_page(request: Request) -> Response:
    _viewer(request).entry_or_404(request)
    return FileResponse(STATIC / "slide.html")


async def api_cohort(request: Request) -> Response:
    cohort = _viewer(request).cohort
    return JSONResponse({"out": str(cohort.out), "slides": cohort.rows()})


async def api_slide(request: Request) -> Response:
    viewer = _viewer(request)
    return JSONResponse(await viewer.slide_json(viewer.entry_or_404(request)))


async def tile(request: Request) -> Response:
    viewer = _viewer(request)
    name = viewer.entry_or_404(request)
    match = _TILE_NAME.fullmatch(request.path_params["tile"])
    if match is None or viewer.cohort[name].slide_path is None:
        raise HTTPException(404, "no such tile")
    key = (name, int(request.path_params["level"]), int(match[1]), int(match[2]))
    try:
        data = await viewer.tiles.tile(key, gone=request.is_disconnected)
    except (ValueError, SlideOpenError) as exc:
        raise HTTPException(404, str(exc)) from None
    if data is None:
        return Response(status_code=204)
    return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=600"})


async def overlay(request: Request) -> Response:
    viewer = _viewer(request)
    name = viewer.entry_or_404(request)
    try:
        threshold = float(request.query_params.get("threshold", "0"))
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        raise HTTPException(400, "threshold must be a number in [0, 1]")
    data = await asyncio.to_thread(viewer.overlay_png, name, threshold)
    if data is None:
        raise HTTPException(404, f"{name} has no probability map")
    return Response(data, media_type="image/png")


async def output_file(request: Request) -> Response:
    viewer = _viewer(request)
    name = viewer.entry_or_404(request)
    path = viewer.cohort.output_file(name, request.path_params["file"])
    if path is None:
        raise HTTPException(404, "not an output of this slide")
    return FileResponse(path, filename=path.name)


async def not_found(request: Request, exc: Exception) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else "not found"
    log.warning("404 %s %s: %s", request.method, request.url.path, detail)
    return PlainTextResponse("Not Found", status_code=404)


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(viewer: Viewer, *, loopback_only: bool = True) -> Starlette:
    """The Starlette application serving ``viewer``'s cohort.

    Args:
        viewer: The cohort, tiles and ground truth.
        loopback_only: Answer only requests addressed to a loopback name (the server
            listens on loopback); False when the user asked for another address.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            viewer.tiles.close()

    middleware = [Middleware(SecurityHeaders)]
    if loopback_only:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    app = Starlette(
        routes=[
            Route("/", cohort_page),
            Route("/favicon.ico", no_icon),
            Route("/api/cohort", api_cohort),
            Route("/api/slides/{name}", api_slide),
            Route("/slides/{name}", slide_page),
            Route("/slides/{name}/tiles/{level:int}/{tile}", tile),
            Route("/slides/{name}/overlay.png", overlay),
            Route("/slides/{name}/files/{file}", output_file),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    app.state.viewer = viewer
    return app
