"""Serving tiles: open slides once, cut tiles in a bounded worker pool, cache the bytes.

Tiles are JPEG bytes cached in a least-recently-used cache capped in bytes (so a long
session never grows past ``cache_bytes``). Cutting a tile (read, scale, encode) runs in a
thread pool of ``workers`` threads; the event loop only waits, so pages, JSON and cached
tiles are answered while cold tiles queue. Several requests for the same tile share one
computation, and a request whose browser has gone away by the time a worker is free is
dropped before its tile is cut.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import WsiTumorError
from wsi_tumor.viewer.deepzoom import DeepZoom

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
TileKey = tuple[str, int, int, int]
"""(slide name, Deep Zoom level, column, row)."""


class ByteCache:
    """A thread-safe least-recently-used cache of bytes, capped by their total size.

    Args:
        capacity: Most bytes held; the least recently used entries go first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        """The cached bytes of ``key`` (now the most recently used), or None."""
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        """Store ``data``; evict the least recently used entries beyond the capacity."""
        if len(data) > self.capacity:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def encode_jpeg(pixels: npt.NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an (h, w, 3) uint8 RGB image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class SlideOpenError(WsiTumorError):
    """A slide file of the cohort cannot be opened (its page shows the message)."""


class TileService:
    """Deep Zoom pyramids of the cohort's slides, their tiles cut in a worker pool and cached.

    Args:
        paths: Slide name -> the file to open (only these are ever opened).
        reader: Slide reader (``auto`` picks per format).
        workers: Threads cutting tiles.
        cache_bytes: Cap of the tile cache.
    """

    def __init__(
        self, paths: dict[str, Path], reader: str = "auto", workers: int = 4, cache_bytes: int = 0
    ) -> None:
        self.paths = dict(paths)
        self.reader = reader
        self.cache = ByteCache(cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wsi-view-tile")
        self._slots = asyncio.Semaphore(workers)
        self._zooms: dict[str, DeepZoom] = {}
        self._errors: dict[str, str] = {}
        self._open_lock = threading.Lock()
        self._inflight: dict[TileKey, asyncio.Future[bytes]] = {}

    def pyramid(self, name: str) -> DeepZoom:
        """The Deep Zoom pyramid of slide ``name``, opening the file on first use.

        Raises:
            KeyError: ``name`` is not a slide of the cohort with a file.
            SlideOpenError: the file cannot be opened (the reason is kept for its page).
        """
        path = self.paths[name]
        with self._open_lock:
            zoom = self._zooms.get(name)
            if zoom is not None:
                return zoom
            if name in self._errors:
                raise SlideOpenError(self._errors[name])
            from wsi_tumor.slide import open_slide

            try:
                slide = open_slide(path, reader=self.reader)
            except WsiTumorError as exc:
                message = str(exc).splitlines()[0]
                log.warning("%s: cannot open %s: %s", name, path, message)
                self._errors[name] = message
                raise SlideOpenError(message) from exc
            zoom = self._zooms[name] = DeepZoom(slide)
            log.info("%s: opened %r with %s", name, slide, slide.reader_name)
            return zoom

    async def open(self, name: str) -> DeepZoom:
        """:meth:`pyramid` off the event loop (opening a slide reads its file)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.pyramid, name)

    def cut(self, key: TileKey) -> bytes:
        """Cut and encode one tile (in a worker thread); cache it."""
        name, level, col, row = key
        data = encode_jpeg(self.pyramid(name).tile(level, col, row))
        self.cache.put(key, data)
        return data

    async def tile(
        self, key: TileKey, gone: Callable[[], Awaitable[bool]] | None = None
    ) -> bytes | None:
        """JPEG bytes of a tile: from the cache, or cut by a worker.

        Args:
            key: (slide, level, column, row).
            gone: Tells whether the requester went away; asked once a worker is free, so
                abandoned requests are not cut.

        Returns:
            The bytes, or None when the requester went away first.

        Raises:
            KeyError, SlideOpenError: as :meth:`pyramid`; ValueError: no such tile.
        """
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        shared = self._inflight.get(key)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                if not shared.cancelled():
                    raise  # this request was cancelled, not the one it waited for
                return await self.tile(key, gone)  # that requester went away: cut it here
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._inflight[key] = future
        try:
            async with self._slots:
                if gone is not None and await gone():
                    future.cancel()
                    return None
                data = await loop.run_in_executor(self._pool, self.cut, key)
            future.set_result(data)
            return data
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # marks it retrieved when nobody else waits
            raise
        finally:
            del self._inflight[key]

    def close(self) -> None:
        """Stop the workers and close every open slide."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._open_lock:
            for zoom in self._zooms.values():
                zoom.slide.close()
            self._zooms.clear()
