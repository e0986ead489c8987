"""cuCIM backend (the default): ``cucim.CuImage`` decoding tiles on the CPU.

Thread safety: ``CuImage.read_region`` on one object from several Python threads is the
pattern cuCIM's own multi-thread notebook uses (each call opens its own read state, the
file handle is read with pread), and ``tests/test_slide_readers.py`` checks that
concurrent reads return the same pixels as sequential ones, so no lock is taken.

Without a GPU, cuCIM prints "dlopen error libcuda.so.1 ... cuFile initialization failed"
at import and when the first image is opened (seen when torch was imported first), on
stdout, not stderr. Both moments run with file descriptors 1 and 2 captured: those known
lines go to the debug log, any other line is written back where it was written, so real
errors stay visible.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from wsi_tumor.errors import ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide.base import SlideReader
from wsi_tumor.slide.damage import DamageChecker
from wsi_tumor.slide.image import downsamples_from_dimensions, ycbcr_to_rgb
from wsi_tumor.slide.metadata import plausible
from wsi_tumor.slide.validate import SlideInfo, trusted_levels

log = logging.getLogger(__name__)

_GPU_NOISE = re.compile(
    r"libcuda|cuda symbols|cufile|nvimagecodec|nvimgcodec|nvjpeg|cuda driver|no cuda", re.I
)
_INIT_LOCK = threading.Lock()
_cuimage_class: Any = None
_first_open_done = False


@contextlib.contextmanager
def filtered_native_output() -> Iterator[None]:
    """Capture fds 1 and 2 for the block; log known GPU-absence noise, re-emit the rest.

    cuCIM (via libcufile) writes its libcuda / cuFile lines to stdout; stderr is covered
    too for nvImageCodec. Lines that match none of the known patterns are written back to
    the descriptor they were written to, so real errors and output stay visible.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with contextlib.ExitStack() as stack:
        redirected: list[tuple[int, int, IO[bytes]]] = []
        try:
            for fd in (1, 2):
                sink: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
                saved = os.dup(fd)
                os.dup2(sink.fileno(), fd)
                redirected.append((fd, saved, sink))
        except OSError:  # a closed descriptor: leave that one alone
            pass
        try:
            yield
        finally:
            _flush_c_stdio()
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            for fd, saved, capture in redirected:
                os.dup2(saved, fd)
                os.close(saved)
                capture.seek(0)
                _replay(capture.read().decode("utf-8", errors="replace"), fd)


def _flush_c_stdio() -> None:
    """fflush(NULL): push text a native library printed into the capture files now."""
    with contextlib.suppress(OSError, AttributeError):  # non-glibc platforms
        ctypes.CDLL(None).fflush(None)


def _replay(text: str, fd: int) -> None:
    for line in text.splitlines():
        if not line.strip():
            continue
        if _GPU_NOISE.search(line):
            log.debug("cuCIM without GPU (harmless): %s", line.strip())
        else:
            os.write(fd, (line + "\n").encode())


def _cuimage() -> Any:
    """Import ``cucim.CuImage`` once, quietly."""
    global _cuimage_class
    if _cuimage_class is None:
        with _INIT_LOCK:
            if _cuimage_class is None:
                try:
                    with filtered_native_output():
                        cucim = importlib.import_module("cucim")
                        cuimage = cucim.CuImage
                except Exception as exc:  # ImportError, or OSError from native libraries
                    raise ReaderUnavailableError(
                        f"reader 'cucim' is unavailable: cannot import cucim ({exc}); "
                        "install cucim-cu13 or use reader='openslide'"
                    ) from exc
                _cuimage_class = cuimage
    return _cuimage_class


def _open_cuimage(path: Path) -> Any:
    global _first_open_done
    cuimage = _cuimage()
    if _first_open_done:
        return cuimage(str(path))
    with _INIT_LOCK:
        with filtered_native_output():
            image = cuimage(str(path))
        _first_open_done = True
    return image


class CuCIMSlide(SlideReader):
    """A slide read through cuCIM; build it with :func:`wsi_tumor.slide.open_slide`.

    Attributes:
        reader_name: ``"cucim"``.

    Args:
        info: The pre-flight description of the file (from ``inspect_slide``).

    Raises:
        ReaderUnavailableError: cuCIM is not installed or cannot load.
        SlideFormatError: cuCIM cannot open the file or sees other levels than the TIFF has.
    """

    reader_name = "cucim"

    def __init__(self, info: SlideInfo) -> None:
        path = info.path
        try:
            image = _open_cuimage(path)
        except ReaderUnavailableError:
            raise
        except Exception as exc:
            raise SlideFormatError(f"{path}: cuCIM cannot open the slide: {exc}") from exc
        resolutions = image.resolutions
        dimensions = trusted_levels(
            path, "cuCIM", [(int(w), int(h)) for w, h in resolutions["level_dimensions"]], info
        )
        mpp, source = _mpp(image, info)
        super().__init__(
            path,
            dimensions,
            downsamples_from_dimensions(dimensions),
            mpp,
            source,
            info.format,
        )
        if any(info.tile_tables):
            self.damage_checker = DamageChecker(info.path, info.tile_tables)
        self._image = image
        self._ycbcr = info.ycbcr_levels
        self._channels = int(image.shape[2]) if len(image.shape) == 3 else 1

    def _read_level(
        self, level: int, col: int, row: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        downsample = self._downsamples[level]
        # cuCIM maps a level-0 location to level column floor(x / downsample).
        x0 = col * int(downsample) if downsample.is_integer() else int(np.ceil(col * downsample))
        y0 = row * int(downsample) if downsample.is_integer() else int(np.ceil(row * downsample))
        try:
            region = self._image.read_region(location=(x0, y0), size=(width, height), level=level)
            pixels = np.asarray(region)
        except Exception as exc:
            raise SlideFormatError(
                f"{self._path}: cuCIM failed to read level {level} ({col}, {row}) "
                f"{width} x {height}: {exc}"
            ) from exc
        if pixels.ndim != 3 or pixels.shape[2] < 3:
            raise SlideFormatError(f"{self._path}: cuCIM returned {pixels.shape}, not RGB")
        rgb = pixels[..., :3]
        if level < len(self._ycbcr) and self._ycbcr[level]:
            return ycbcr_to_rgb(rgb)
        return np.ascontiguousarray(rgb)

    def _close(self) -> None:
        close = getattr(self._image, "close", None)
        if callable(close):
            close()
        self._image = None


def _mpp(image: Any, info: SlideInfo) -> tuple[tuple[float, float] | None, str | None]:
    """Level-0 (x, y) microns per pixel and its source: cuCIM's spacing when it has a unit
    (its values follow ``dims``, "YXC"), else the pre-flight's (Aperio, OME-XML, tags)."""
    try:
        spacing = list(image.spacing())
        units = list(image.spacing_units())
        dims = str(image.dims)
    except Exception:  # older cuCIM without these accessors
        return info.mpp, info.mpp_source
    scale = {"micrometer": 1.0, "um": 1.0, "µm": 1.0, "millimeter": 1_000.0, "mm": 1_000.0}
    if "X" in dims and "Y" in dims:
        ix, iy = dims.index("X"), dims.index("Y")
        fx, fy = scale.get(units[ix]), scale.get(units[iy])
        if fx is not None and fy is not None and spacing[ix] > 0 and spacing[iy] > 0:
            mpp = float(spacing[ix]) * fx, float(spacing[iy]) * fy
            if info.mpp is not None and np.allclose(mpp, info.mpp, rtol=1e-5, atol=0):
                return info.mpp, info.mpp_source  # the same tags; cuCIM stores float32
            return plausible(mpp), "cuCIM spacing"
    return info.mpp, info.mpp_source
