"""Client logic without a server: config, retries, atomic outputs, discovery, heatmap, CLI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from wsi_tumor import contract
from wsi_tumor import infer as cli
from wsi_tumor.client.config import InferConfig, build_parser, config_from_args
from wsi_tumor.client.endpoints import endpoint_for_mode
from wsi_tumor.client.heatmap import heatmap_size, render_overlay
from wsi_tumor.client.outputs import SlideOutputs, detections_geojson, write_npy
from wsi_tumor.client.runner import discover_slides
from wsi_tumor.client.transport import TritonTransport, _compare, is_transient
from wsi_tumor.errors import ConfigError, ServerError
from wsi_tumor.fileio import atomic_path
from wsi_tumor.serving.local_server import free_port

EXACT = endpoint_for_mode("exact")


# --- config -----------------------------------------------------------------------------------
def test_config_from_args_is_frozen_and_resolves_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "o")])
    config = config_from_args(args)
    assert config.urls == () and config.mode == "exact" and config.region_cells is None
    assert config.cells == contract.REGION_CELLS
    assert config.endpoint().model_name == contract.ENSEMBLE_MODEL
    with pytest.raises(AttributeError):
        config.out = tmp_path  # type: ignore[misc]
    assert json.dumps(config.to_json())
    dense = config_from_args(
        build_parser().parse_args([str(tmp_path), "--out", "o", "--mode", "dense"])
    )
    assert dense.cells == contract.DENSE_REGION_CELLS
    assert dense.endpoint().model_name == contract.DENSE_MODEL
    several = build_parser().parse_args(
        [str(tmp_path), "--out", "o", "--url", "a:1", "--url", "b:2"]
    )
    assert config_from_args(several).urls == ("a:1", "b:2")


def test_every_flag_default_comes_from_the_config_dataclass(tmp_path: Path) -> None:
    import dataclasses

    args = vars(build_parser().parse_args([str(tmp_path), "--out", "o"]))
    for field in dataclasses.fields(InferConfig):
        if field.default is not dataclasses.MISSING and field.name != "urls":
            assert args[field.name] == field.default, field.name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"regions_per_request": 99}, "regions-per-request"),
        ({"region_cells": 17}, "region-cells"),
        ({"inflight": 0}, "inflight"),
        ({"nms_radius": 0}, "nms-radius"),
        ({"nms_threshold": 1.5}, "nms-threshold"),
        ({"reader": "pil"}, "reader"),
        ({"slides": ()}, "no slide"),
        ({"mode": "tiler"}, "mode"),
        ({"mode": "dense", "region_cells": 2}, "region-cells"),
        ({"mode": "dense", "region_cells": 40}, "region-cells"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, overrides: dict, message: str) -> None:
    values = {"slides": (tmp_path,), "out": tmp_path, **overrides}
    with pytest.raises(ConfigError, match=message):
        InferConfig(**values)


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([str(tmp_path)])  # --out missing
    assert exited.value.code == 2
    code = cli.main([str(tmp_path), "--out", str(tmp_path), "--region-cells", "0", "--quiet"])
    assert code == 2
    assert "region-cells" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main([str(empty), "--out", str(tmp_path / "o"), "--quiet"]) == 2


# --- slide discovery ----------------------------------------------------------------------------
def test_discover_slides_expands_directories_and_rejects_clashing_names(tmp_path: Path) -> None:
    for name in ("b.tif", "a.svs", "notes.txt", "c.TIFF"):
        (tmp_path / name).write_bytes(b"")
    explicit = tmp_path / "x.dat"
    explicit.write_bytes(b"")
    found = discover_slides([tmp_path, explicit, tmp_path / "missing.tif"])
    assert [p.name for p in found] == ["a.svs", "b.tif", "c.TIFF", "x.dat", "missing.tif"]
    other = tmp_path / "sub"
    other.mkdir()
    (other / "a.tif").write_bytes(b"")
    with pytest.raises(ConfigError, match="same outputs"):
        discover_slides([tmp_path, other])


# --- outputs ------------------------------------------------------------------------------------
def test_atomic_path_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "map.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_npy(target, np.eye(2, dtype=np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["map.npy"]
    np.testing.assert_array_equal(np.load(target), np.eye(2))


def test_slide_outputs_complete_only_with_a_report_whose_checksums_match(tmp_path: Path) -> None:
    outputs = SlideOutputs(tmp_path, "tumor_001")
    for path in outputs.all_paths()[:-1]:
        path.write_bytes(b"x" * 100)
    assert outputs.problem() == "no report" and not outputs.complete()
    outputs.report.write_text("{}")
    assert outputs.problem() == "tumor_001.json records no checksums"
    outputs.report.write_text(json.dumps({"checksums": outputs.checksums()}))
    assert outputs.complete()
    outputs.csv.write_bytes(b"x" * 60)  # cut short, as by a full disk or a crash
    assert outputs.problem() == "tumor_001.csv does not match its recorded checksum"
    outputs.csv.write_bytes(b"x" * 100)
    outputs.heatmap_png.unlink()
    assert outputs.problem() == "tumor_001_heatmap.png is missing"
    outputs.report.write_text("{not json")
    assert "does not parse" in (outputs.problem() or "")
    leftover = tmp_path / ".tumor_001.npy.123.abcd.tmp"
    leftover.write_bytes(b"partial")
    outputs.invalidate()
    assert not outputs.complete() and outputs.prob_map.exists() and not leftover.exists()


def test_geojson_points_are_level0_pixels_with_probability() -> None:
    detections = np.array([[0.9, 96.0, 1056.0], [0.6, 5000.0, 32.0]])
    collection = detections_geojson(detections)
    assert collection["type"] == "FeatureCollection"
    first = collection["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [96.0, 1056.0]}
    assert first["properties"]["classification"]["name"] == "Tumor"
    assert first["properties"]["probability"] == pytest.approx(0.9)
    assert detections_geojson(np.zeros((0, 3)))["features"] == []


# --- heatmap ------------------------------------------------------------------------------------
def test_overlay_colours_the_right_cells() -> None:
    rows, cols = 3, 5
    level0 = (cols * contract.PATCH_STRIDE, rows * contract.PATCH_STRIDE)
    shape = heatmap_size(level0)
    assert shape == (rows * 8, cols * 8)
    thumbnail = np.full((*shape, 3), 255, dtype=np.uint8)
    tissue = np.zeros((rows, cols), dtype=bool)
    tissue[0, 4] = True
    prob = np.where(tissue, 1.0, 0.0).astype(np.float32)
    overlay = render_overlay(thumbnail, prob, tissue, level0)
    assert overlay.shape == (*shape, 3)
    assert (overlay[:8, 32:] != 255).any(axis=-1).all(), "top-right cell is coloured"
    assert (overlay[8:] == 255).all() and (overlay[:, :32] == 255).all()


# --- transport ------------------------------------------------------------------------------------
def test_transient_classification() -> None:
    assert is_transient(InferenceServerException("x", status="StatusCode.UNAVAILABLE"))
    assert is_transient(InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED"))
    assert not is_transient(InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT"))
    assert not is_transient(InferenceServerException("boom", status="StatusCode.INTERNAL"))


def test_retries_transient_errors_then_succeeds_and_fails_fast_otherwise() -> None:
    async def scenario() -> None:
        transport = TritonTransport(f"127.0.0.1:{free_port()}", EXACT, retry_timeout=5)
        failures = iter([InferenceServerException("down", status="StatusCode.UNAVAILABLE")] * 2)

        async def flaky() -> str:
            for error in failures:
                raise error
            return "ok"

        assert await transport._retrying("flaky", flaky) == "ok"
        assert transport.retries == 2

        async def invalid() -> str:
            raise InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT")

        with pytest.raises(ServerError, match="bad shape"):
            await transport._retrying("invalid", invalid)
        assert transport.retries == 2
        await transport.close()

    asyncio.run(scenario())


def test_unreachable_server_gives_up_after_retry_timeout() -> None:
    async def scenario() -> None:
        transport = TritonTransport(f"127.0.0.1:{free_port()}", EXACT, retry_timeout=1.0)
        start = time.monotonic()
        with pytest.raises(ServerError, match="after 1 s of retries"):
            await transport.check_model(contract.REGION_CELLS)
        assert time.monotonic() - start < 10
        await transport.close()

    asyncio.run(scenario())


def test_metadata_comparison_names_every_problem() -> None:
    served = [
        {"name": "image", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]},
        {"name": contract.CELL_MASK_TENSOR, "datatype": "INT32", "shape": ["-1", "4", "4"]},
    ]
    expected = {
        contract.REGIONS_TENSOR: ("UINT8", [None, 672, 672, 3]),
        contract.CELL_MASK_TENSOR: ("BOOL", [None, 8, 8]),
    }
    problems = " | ".join(_compare("input", served, expected, exact=True))
    assert f"input {contract.REGIONS_TENSOR!r} missing" in problems
    assert "INT32, expected BOOL" in problems
    assert "shape [-1, 4, 4]" in problems
    assert "unexpected inputs ['image']" in problems
    ok = [
        {"name": contract.REGIONS_TENSOR, "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]},
        {"name": contract.CELL_MASK_TENSOR, "datatype": "BOOL", "shape": ["-1", "-1", "-1"]},
    ]
    assert _compare("input", ok, expected, exact=True) == []


def test_unreachable_url_is_a_startup_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(tmp_path / "s.tif"), "--out", str(tmp_path / "o"), "--quiet"]
    url = f"127.0.0.1:{free_port()}"
    assert cli.main([*argv, "--url", url, "--retry-timeout", "0.5"]) == 2
    assert f"{url}: readiness check still failing" in capsys.readouterr().err
