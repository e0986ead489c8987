"""The torchvision reader (issue 30): JPEG tiles from the file's bytes, decoded by torchvision.

It must give the other readers' pixels: exactly where they all decode with libjpeg-turbo
(tests/test_slide_readers.py runs it on every reader test), within one level where the
sample's YCbCr-to-RGB rounding differs, and for Aperio's unmarked RGB tiles (decoded as RGB
through the Adobe marker it adds); ``auto`` falls back to it when no codec package is there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_real_slides import SVS, SVS_J2K, _pyramidal_ome_tiff
from wsi_tumor.data.samples import REAL_HE
from wsi_tumor.errors import ReaderUnavailableError, SlideFormatError
from wsi_tumor.slide import open_slide
from wsi_tumor.slide.jpeg import ADOBE_RGB, jpeg_segments, mark_rgb, merge_jpeg_tables
from wsi_tumor.slide.torchvision_reader import decode_tiles


def test_aperio_rgb_tiles_decode_as_openslide_reads_them() -> None:
    with open_slide(SVS, "torchvision") as ours, open_slide(SVS, "openslide") as other:
        assert ours.level_dimensions == other.level_dimensions
        assert ours.mpp == other.mpp
        for location, size in (((1000, 1000), (300, 200)), ((2100, 2900), (200, 120))):
            a = ours.read_region(location, size, 0)
            b = other.read_region(location, size, 0)
            assert np.abs(a.astype(int) - b).max() <= 1
            assert location[0] > 2000 or a.std() > 5  # tissue, not fill
        # without the Adobe marker libjpeg would take the RGB samples for YCbCr: far off
        (stream,) = ours.tile_streams(0, [40])
        assert stream is not None and ADOBE_RGB in stream
        (rgb,) = decode_tiles([stream])
        (guessed,) = decode_tiles([stream.replace(ADOBE_RGB, b"")])
        assert (rgb.int() - guessed.int()).abs().float().mean() > 20


def test_subifd_pyramid_reads_every_level_as_tiffslide_does(tmp_path: Path) -> None:
    path = _pyramidal_ome_tiff(tmp_path / "pyramid.ome.tif")
    with open_slide(path, "torchvision") as ours, open_slide(path, "tiffslide") as other:
        assert ours.level_dimensions == other.level_dimensions == ((2048, 2048), (1024, 1024),
                                                                  (512, 512))  # fmt: skip
        for level in range(3):
            np.testing.assert_array_equal(
                ours.read_region((300, 400), (300, 200), level),
                other.read_region((300, 400), (300, 200), level),
            )


def test_auto_falls_back_to_torchvision_without_codec_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wsi_tumor.slide.cucim_reader as cucim_reader

    monkeypatch.setattr(cucim_reader, "_cuimage_class", None)
    for package in ("cucim", "openslide", "tiffslide"):
        monkeypatch.setitem(sys.modules, package, None)
    with open_slide(SVS) as slide:
        described = slide.describe()
        assert described["reader"] == "torchvision"
        tried = [line.split(":")[0] for line in described["fallback_from"]]  # type: ignore[union-attr]
        assert tried == ["cucim", "openslide", "tiffslide"]
        assert slide.read_region((1000, 1000), (64, 64)).std() > 5


def test_jpeg2000_and_missing_gpu_are_typed_errors() -> None:
    with pytest.raises(SlideFormatError, match="decodes JPEG tiles only"):
        open_slide(SVS_J2K, "torchvision")
    if not torch.cuda.is_available():
        with pytest.raises(ReaderUnavailableError, match="reader 'nvjpeg' is unavailable"):
            open_slide(SVS, "nvjpeg")


def test_tables_merge_and_rgb_marker_keep_the_stream_valid() -> None:
    from torchvision.io import decode_jpeg, encode_jpeg

    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8, generator=torch.Generator())
    stream = encode_jpeg(image, quality=90).numpy().tobytes()
    segments = jpeg_segments(stream)
    tables = b"\xff\xd8" + b"".join(s for m, s in segments if m in (0xDB, 0xC4)) + b"\xff\xd9"
    abbreviated = b"\xff\xd8" + b"".join(s for m, s in segments if m not in (0xDB, 0xC4))
    merged = merge_jpeg_tables(abbreviated, tables)
    whole = decode_jpeg(torch.frombuffer(bytearray(stream), dtype=torch.uint8))
    again = decode_jpeg(torch.frombuffer(bytearray(merged), dtype=torch.uint8))
    torch.testing.assert_close(again, whole, rtol=0, atol=0)
    assert merge_jpeg_tables(stream, None) == stream
    marked = mark_rgb(stream)
    assert next(m for m, _ in jpeg_segments(marked)) == 0xEE
    with pytest.raises(SlideFormatError, match="SOI"):
        merge_jpeg_tables(b"not a jpeg", tables)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_reads_within_decoder_rounding_of_the_cpu() -> None:
    with open_slide(REAL_HE, "nvjpeg") as gpu, open_slide(REAL_HE, "torchvision") as cpu:
        a = gpu.read_region((100, 200), (600, 400), 0).astype(int)
        b = cpu.read_region((100, 200), (600, 400), 0).astype(int)
    assert np.abs(a - b).mean() <= 3.0
