"""Training: nine-patch dataset, augmentation, config, checkpoints, errors, resume, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from wsi_tumor.contract import normalise
from wsi_tumor.errors import CheckpointError, ConfigError, DatasetError, LabelError
from wsi_tumor.training import cli
from wsi_tumor.training.checkpoint import init_weights, load_training_checkpoint
from wsi_tumor.training.config import config_from_argv
from wsi_tumor.training.dataset import GridPatchDataset, load_dataset
from wsi_tumor.training.grid import patch_offsets
from wsi_tumor.training.labels import LabelRow
from wsi_tumor.training.trainer import default_amp
from wsi_tumor.training.transforms import TrainAugment, zoom_keep_size

REPO = Path(__file__).resolve().parents[1]
LABELS = (1, 0, 0, 1, 1, 0, 0, 0, 1)  # CSV order; grid [row, col] = [[1,1,0],[0,1,0],[0,0,1]]
GRID = [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


class ArraySlide:
    """Minimal in-memory SlideReader (outside pixels 255) for logic tests."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self.path = Path("memory.tif")
        self.level_dimensions = ((pixels.shape[1], pixels.shape[0]),)

    def read_region(
        self, location: tuple[int, int], size: tuple[int, int], level: int = 0
    ) -> np.ndarray:
        (x, y), (w, h) = location, size
        out = np.full((h, w, 3), 255, np.uint8)
        rows, cols = self.pixels.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cols), min(y + h, rows)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.pixels[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        pass


def _pixels(h: int = 1200, w: int = 1500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _dataset(
    pixels: np.ndarray, rows: list[LabelRow], train: bool, split: Any = "centre"
) -> GridPatchDataset:
    slide = ArraySlide(pixels)
    return GridPatchDataset(rows, {"s": Path("s.tif")}, lambda _: slide, train, split)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("split", "offsets"), [("centre", (16, 272, 528)), ("monai", (0, 272, 544))]
)
def test_nine_patch_geometry_and_labels_exact(split: str, offsets: tuple[int, ...]) -> None:
    assert patch_offsets(split) == offsets  # type: ignore[arg-type]
    pixels = _pixels()
    x, y = 700, 500  # region origin (316, 116)
    ds = _dataset(pixels, [LabelRow("s", x, y, LABELS)], train=False, split=split)
    images, labels = ds[0]
    assert images.shape == (9, 3, 224, 224) and images.dtype == torch.float32
    for row in range(3):
        for col in range(3):
            k = 3 * row + col
            top, left = y - 384 + offsets[row], x - 384 + offsets[col]
            want = normalise(pixels[top : top + 224, left : left + 224]).transpose(2, 0, 1)
            np.testing.assert_array_equal(images[k].numpy(), want)  # no augmentation
            assert labels[k] == GRID[row][col]


def test_region_past_the_border_reads_white() -> None:
    ds = _dataset(_pixels(), [LabelRow("s", 10, 10, (0,) * 9)], train=False)
    images, _ = ds[0]
    assert torch.all(images[0] == 1.0)  # top-left patch entirely outside: 255 -> 1.0


def test_train_augmentation_changes_pixels_in_range() -> None:
    torch.manual_seed(0)
    pixels = _pixels()
    val, _ = _dataset(pixels, [LabelRow("s", 700, 500, LABELS)], train=False)[0]
    aug, labels = _dataset(pixels, [LabelRow("s", 700, 500, LABELS)], train=True)[0]
    assert aug.shape == val.shape
    assert not torch.equal(aug, val)
    assert float(aug.min()) >= -1.0 - 1e-5 and float(aug.max()) <= 1.0 + 1e-5
    assert labels.tolist() == [v for r in GRID for v in r]  # labels never move


def test_train_augmentation_draws_per_patch() -> None:
    torch.manual_seed(3)
    same = np.repeat(_pixels(224, 224, seed=1)[None], 9, axis=0)
    out = TrainAugment()(same)
    assert len({tuple(p.flatten()[:64].tolist()) for p in out}) == 9  # nine independent draws


def _he_tile() -> torch.Tensor:
    """A (3, 64, 64) uint8 tile of real H&E tissue (the committed Aperio sample)."""
    from wsi_tumor.slide import open_slide

    svs = Path(__file__).parent / "data" / "real" / "aperio" / "CMU-1-Small-Region.svs"
    with open_slide(svs) as slide:
        rgb = slide.read_region((1000, 1000), (64, 64), 0)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def test_hed_jitter_is_skimage_colour_deconvolution_scaled() -> None:
    from skimage.color import hed2rgb, rgb2hed

    from wsi_tumor.training.transforms import HedJitter

    tile = _he_tile()
    jitter = HedJitter("strong")
    jitter.scale, jitter.shift = 0.0, 0.0
    # no change: the same pixels to float32 rounding (and a 0 read as 1)
    torch.testing.assert_close(jitter(tile).int(), tile.int(), atol=1, rtol=0)
    torch.manual_seed(5)
    out = HedJitter("strong")(tile)
    torch.manual_seed(5)
    a = 1.0 + 0.2 * (2.0 * torch.rand(3, dtype=torch.float64) - 1.0)
    b = 0.05 * (2.0 * torch.rand(3, dtype=torch.float64) - 1.0)
    # scikit-image's own deconvolution (its OD is ln scaled by ln(1e-6), hence b's scaling)
    rgb = tile.numpy().transpose(1, 2, 0)
    hed = rgb2hed(rgb) * a.numpy() + b.numpy() / -np.log(1e-6)
    expected = np.clip(hed2rgb(hed) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    valid = (rgb2hed(rgb) > 0).all(axis=-1) & (rgb > 0).all(axis=-1)  # skimage clips at 0
    diff = np.abs(out.numpy().transpose(1, 2, 0).astype(int) - expected.astype(int))
    assert valid.mean() > 0.5 and diff[valid].max() <= 1


def test_stain_strengths_perturb_more_as_asked() -> None:
    from wsi_tumor.training.transforms import HedJitter

    tile = _he_tile()
    change = {}
    for strength in ("light", "strong"):
        torch.manual_seed(0)
        outs = [HedJitter(strength)(tile) for _ in range(20)]
        change[strength] = float(np.mean([(o.float() - tile.float()).abs().mean() for o in outs]))
    assert 0 < change["light"] < change["strong"]


def test_zoom_keep_size() -> None:
    patch = torch.arange(224 * 224, dtype=torch.float32).reshape(1, 224, 224)
    torch.testing.assert_close(zoom_keep_size(patch, 1.0), patch)
    for factor in (0.9, 1.1):
        out = zoom_keep_size(patch, factor)
        assert out.shape == (1, 224, 224)
    small = zoom_keep_size(patch, 0.9)
    assert float(small[0, 0, 0]) == float(small[0, 0, 1])  # edge padding repeats


def test_dataset_pickles_without_readers() -> None:
    ds = _dataset(_pixels(), [LabelRow("s", 700, 500, LABELS)], train=False)
    ds[0]
    assert ds._readers
    assert ds.__getstate__()["_readers"] == {}


def test_config_yaml_defaults_flags_override(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 7\nbatch-size: 3\nlr: 0.01\nreader: openslide\n")
    cfg = config_from_argv(
        [
            str(tmp_path / "ds"),
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "o"),
            "--lr",
            "0.5",
        ]
    )
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.reader) == (7, 3, 0.5, "openslide")
    assert cfg.labels_train == tmp_path / "ds" / "training.csv"
    assert cfg.images == tmp_path / "ds" / "images"
    assert cfg.amp is None and cfg.seed == 15
    with pytest.raises(AttributeError, match=r"cannot assign"):
        cfg.epochs = 1  # type: ignore[misc]


def test_repo_config_yaml_is_valid(tmp_path: Path) -> None:
    cfg = config_from_argv(
        [str(tmp_path), "--config", str(REPO / "training" / "config.yaml"), "--out", str(tmp_path)]
    )
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed) == (4, 128, 1e-3, 15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch: 3\n", r"c\.yaml: unknown key 'epoch'"),
        ("epochs: 0\n", r"c\.yaml: epochs must be >= 1"),
        ("epochs: two\n", r"c\.yaml: epochs: invalid value 'two'"),
        ("- 1\n", r"c\.yaml: expected a mapping"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config_from_argv(
            [str(tmp_path), "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path)]
        )


def test_empty_label_csv_is_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "training.csv").write_text("\n")
    with pytest.raises(DatasetError, match=r"training\.csv: label CSV has no rows"):
        load_dataset(tmp_path / "training.csv", tmp_path, "cucim", True)


def test_label_csv_missing_slide_is_label_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "training.csv").write_text("tumor_001,800,800,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(LabelError, match=r"training\.csv:1: slide 'tumor_001' not found"):
        load_dataset(tmp_path / "training.csv", tmp_path / "images", "cucim", True)


def test_label_csv_centre_outside_is_label_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "s.tif").write_bytes(b"")
    (tmp_path / "training.csv").write_text(
        "s,800,800,0,0,0,0,0,0,0,0,0\ns,800,1300,0,0,0,0,0,0,0,0,0\n"
    )
    with pytest.raises(LabelError, match=r"training\.csv:2: centre \(800, 1300\) is outside"):
        load_dataset(
            tmp_path / "training.csv",
            tmp_path / "images",
            "cucim",
            True,
            slide_size=lambda _: (1500, 1200),
        )


def test_foreign_checkpoint_is_checkpoint_error(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    from wsi_tumor.models.resnet_fcn import build_model

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a TumorResNetFCN checkpoint"):
        init_weights(build_model(), tmp_path / "other.pt")
    torch.save({"model": build_model().state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt: not a wsi-train checkpoint"):
        load_training_checkpoint(tmp_path / "bare.pt")


def test_cli_foreign_checkpoint_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "other.pt")
    code = cli.main(
        [
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--init-from",
            str(tmp_path / "other.pt"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1  # EXIT_FAILURE: bad input, not bad flags
    assert err[0].startswith("wsi-train: error: ") and "other.pt: not a TumorResNetFCN" in err[0]


def test_cli_missing_slide_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "training.csv").write_text("tumor_001,800,800,0,0,0,0,0,0,0,0,0\n")
    code = cli.main([str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1  # EXIT_FAILURE: bad input, not bad flags
    assert "training.csv:1: slide 'tumor_001' not found" in err[0]


# --- end-to-end runs on in-memory synthetic slides ----------------------------------------
SYN = 2304  # slide side; tumour where x < SYN / 2 (purple, dense), normal elsewhere (pink)


def synthetic_pixels(seed: int = 0) -> np.ndarray:
    """A slide whose left half is dark purple 'tumour' texture and right half pink tissue."""
    rng = np.random.default_rng(seed)
    img = np.empty((SYN, SYN, 3), np.float32)
    img[:, : SYN // 2] = (110, 50, 140)
    img[:, SYN // 2 :] = (235, 175, 205)
    img += rng.normal(0, 25, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _csv_rows(rng: np.random.Generator, n: int) -> str:
    lines = []
    for _ in range(n):
        x, y = (int(v) for v in rng.integers(384, SYN - 384, 2))
        labels = [int(x - 384 + col * 256 + 128 < SYN // 2) for col in range(3) for _ in range(3)]
        lines.append(",".join(map(str, ["syn", x, y, *labels])))
    return "\n".join(lines) + "\n"


def write_synthetic(root: Path, n_train: int, n_valid: int, seed: int = 0) -> Path:
    """Label CSVs + an (empty) slide file for the in-memory slide; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "syn.tif").write_bytes(b"")
    (root / "training.csv").write_text(_csv_rows(rng, n_train))
    (root / "validation.csv").write_text(_csv_rows(rng, n_valid))
    return root


_SLIDES: dict[int, ArraySlide] = {}


def synthetic_opener(_: Path) -> ArraySlide:
    """Module-level (picklable) opener returning the shared in-memory slide."""
    if 0 not in _SLIDES:
        _SLIDES[0] = ArraySlide(synthetic_pixels())
    return _SLIDES[0]


def synthetic_size(_: Path) -> tuple[int, int]:
    return SYN, SYN


def _run(root: Path, out: Path, *flags: str) -> Any:
    from wsi_tumor.training.trainer import train

    cfg = config_from_argv([str(root), "--out", str(out), "--quiet", "--device", "cpu", *flags])
    return train(cfg, synthetic_opener, synthetic_size)  # type: ignore[arg-type]


SMALL = (
    "--batch-size",
    "1",
    "--workers",
    "0",
    "--max-steps-per-epoch",
    "1",
    "--max-valid-steps",
    "1",
)


def test_resume_continues_from_saved_epoch(tmp_path: Path) -> None:
    from wsi_tumor.models.checkpoint import load_state_dict

    root = write_synthetic(tmp_path / "ds", 8, 2)
    straight = _run(root, tmp_path / "a", "--epochs", "2", *SMALL)
    first = _run(root, tmp_path / "b", "--epochs", "1", *SMALL)
    saved = torch.load(first.last, weights_only=False)
    assert saved["epoch"] == 1 and saved["optimizer"]["state"]  # Novograd moments saved
    resumed = _run(root, tmp_path / "b", "--epochs", "2", "--resume", str(first.last), *SMALL)
    # epoch counter continues: history has epochs 1 (restored) and 2 (trained now)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]
    # the loss curve is the uninterrupted run's: same lr, same draws, same updates
    for a, b in zip(straight.history, resumed.history, strict=True):
        for key in ("lr", "train_loss", "valid_loss", "valid_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    wa, wb = load_state_dict(straight.last), load_state_dict(resumed.last)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)
    ckpt = torch.load(resumed.last, weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["config"]["resume"] == str(first.last)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "epoch", "best_metric"}
    written = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert written["epochs"] == 2 and written["batch_size"] == 1
    assert written["amp"] is default_amp(torch.device("cpu"))  # what ran, not "default"
    assert list((tmp_path / "b" / "tensorboard").iterdir())


@pytest.mark.parametrize("objective", ["patch", "mixed"])
def test_torchrun_two_process_gloo(tmp_path: Path, objective: str) -> None:
    from wsi_tumor.models.checkpoint import load_model

    root = write_synthetic(tmp_path / "ds", 8, 4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            str(root),
            str(tmp_path / "out"),
            objective,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_model(tmp_path / "out" / "last.pt")  # strict: no "module." prefix
    ckpt = torch.load(tmp_path / "out" / "last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert ckpt["epoch"] == 1
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1, 1, 1)
    # both ranks validated 2 regions each: 4 regions x 9 patches counted once each
    assert "world 2" in proc.stderr
    # mixed: two backward passes a step, the first without DDP's gradient sync
    assert ckpt["config"]["objective"] == objective


@pytest.mark.slow
@pytest.mark.e2e
def test_cpu_run_on_wsi_synth_slides_reaches_validation_accuracy(tmp_path: Path) -> None:
    """A few CPU minutes on real pyramidal TIFFs from wsi-synth give >= 0.9 patch accuracy."""
    from wsi_tumor.data.synthetic import SynthConfig, generate
    from wsi_tumor.training.cli import main as train_main
    from wsi_tumor.training.labels_cli import main as labels_main

    data = tmp_path / "data"
    generate(
        SynthConfig(
            out=data,
            train=4,
            valid=2,
            test=0,
            size=4096,
            seed=3,
            coords=200,
            valid_coords=40,
            quiet=True,
        )
    )
    assert labels_main([str(data), "--quiet"]) == 0
    out = tmp_path / "run"
    assert (
        train_main(
            [
                str(data),
                "--out",
                str(out),
                "--quiet",
                "--device",
                "cpu",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--workers",
                "2",
                "--max-steps-per-epoch",
                "25",
                "--max-valid-steps",
                "10",
            ]
        )
        == 0
    )
    history = torch.load(out / "last.pt", weights_only=False)["history"]
    curve = [(h["valid_accuracy"], h["train_patches_per_s"]) for h in history]
    print("valid accuracy / train patches/s per epoch:", curve)
    assert len(history) == 2
    assert max(h["valid_accuracy"] for h in history) >= 0.9, curve


def test_dense_crop_item_and_its_views_match_the_patches_and_dense_inference() -> None:
    """A dense item's labelled cells are the nine centre patches, in training and inference."""
    from wsi_tumor.models.dense import dense_logits
    from wsi_tumor.models.resnet_fcn import build_model
    from wsi_tumor.training.engine import view_logits, views

    pixels, rows = _pixels(), [LabelRow("s", 700, 500, LABELS)]
    patches, labels = _dataset(pixels, rows, train=False)[0]
    slide = ArraySlide(pixels)
    dense = GridPatchDataset(rows, {"s": Path("s.tif")}, lambda _: slide, False, "centre", "mixed")  # type: ignore[arg-type, return-value]
    crop, crop_labels = dense[0]
    assert crop.shape == (3, 736, 736) and torch.equal(crop_labels, labels)
    top, left = 500 - 384 + 16, 700 - 384 + 16  # region origin + the first centre patch's offset
    want = normalise(pixels[top : top + 736, left : left + 736]).transpose(2, 0, 1)
    np.testing.assert_array_equal(crop.numpy(), want)
    batch = (crop[None], crop_labels[None])
    cut, whole = views(batch, torch.device("cpu"), "mixed")
    assert torch.equal(cut[0], patches) and torch.equal(cut[1], labels)
    model = build_model().eval()
    with torch.no_grad():
        want = dense_logits(model, crop[None])[0, ::4, ::4].reshape(-1)
        torch.testing.assert_close(view_logits(model, whole), want, rtol=0, atol=1e-5)
        assert not torch.allclose(want, view_logits(model, cut), atol=1e-3)  # padding differs


def test_dense_cell_labels_come_from_the_polygons_and_supervise_every_dense_cell(
    tmp_path: Path,
) -> None:
    """--dense-labels cells: the crop's 9 x 9 cells each labelled from the polygons (the nine
    grid cells equal the label CSV's), flipped with the crop, and the whole view's logits are
    the dense map's cells."""
    import json

    from wsi_tumor.models.dense import dense_logits
    from wsi_tumor.models.resnet_fcn import build_model
    from wsi_tumor.training.dataset import PolygonCellLabels
    from wsi_tumor.training.engine import view_logits, views
    from wsi_tumor.training.grid import csv_to_grid, dense_cell_centres
    from wsi_tumor.training.labels import label_centres, read_coords

    # a tumour rectangle covering the region's right part: x >= 760, y in [300, 900)
    square = [[760, 300], [2000, 300], [2000, 900], [760, 900]]
    (tmp_path / "s.json").write_text(json.dumps({"positive": [{"vertices": square}]}))
    (tmp_path / "coords.txt").write_text("s,700,500\n")
    (row,) = label_centres(read_coords(tmp_path / "coords.txt"), tmp_path)
    labeller = PolygonCellLabels(tmp_path)
    cells = labeller(row, 1.0)
    centres = dense_cell_centres(700, 500).reshape(9, 9, 2)
    inside = (centres[..., 0] >= 760) & (centres[..., 1] >= 300) & (centres[..., 1] < 900)
    np.testing.assert_array_equal(cells, inside.astype(np.float32))
    np.testing.assert_array_equal(cells[::4, ::4], csv_to_grid(row.labels))
    slide = ArraySlide(_pixels())
    dataset = GridPatchDataset(
        [row], {"s": Path("s.tif")}, lambda _: slide, False, "centre", "mixed",  # type: ignore[arg-type, return-value]
        cell_labels=labeller,
    )  # fmt: skip
    crop, labels = dataset[0]
    assert labels.shape == (81,) and torch.equal(labels, torch.from_numpy(cells).reshape(-1))
    cut, whole = views((crop[None], labels[None]), torch.device("cpu"), "mixed")
    assert torch.equal(cut.labels, torch.from_numpy(cells[::4, ::4]).reshape(-1))
    model = build_model().eval()
    with torch.no_grad():
        want = dense_logits(model, crop[None])[0].reshape(-1)
        torch.testing.assert_close(view_logits(model, whole), want, rtol=0, atol=1e-5)
    torch.manual_seed(1)
    flipped = GridPatchDataset(
        [row], {"s": Path("s.tif")}, lambda _: slide, True, "centre", "mixed",  # type: ignore[arg-type, return-value]
        cell_labels=labeller,
    )  # fmt: skip
    moved = {tuple(flipped[0][1].tolist()) for _ in range(12)}
    assert len(moved) > 1 and all(sum(m) == cells.sum() for m in moved)


def test_consistency_pulls_the_whole_view_onto_the_patch_view() -> None:
    """--consistency adds c * MSE(whole logits, patch logits held fixed): its gradient flows
    through the whole view only, so the exact map is not pulled toward the dense one."""
    from wsi_tumor.models.resnet_fcn import build_model
    from wsi_tumor.training.distributed import DistInfo
    from wsi_tumor.training.engine import train_one_epoch, view_logits, views

    torch.manual_seed(0)
    model, cpu, weight = build_model(), torch.device("cpu"), 2.0
    batch = (torch.rand(1, 3, 736, 736) - 0.5, torch.tensor([[[1.0, 0, 1], [0, 1, 0], [1, 1, 0]]]))

    def gradients(consistency: float) -> list[torch.Tensor]:
        still = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the weights and the grads
        train_one_epoch(
            model, [batch], still, None, cpu, DistInfo(), 1, quiet=True, objective="mixed",
            consistency=consistency,
        )  # fmt: skip
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain, pulled = gradients(0.0), gradients(weight)
    model.zero_grad()
    cut, whole = views(batch, cpu, "mixed")
    reference = view_logits(model, cut).detach()
    term = weight * torch.nn.functional.mse_loss(view_logits(model, whole), reference)
    (term / 2).backward()  # the engine divides each view's loss by the number of views
    expected = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(expected) == len(plain) == len(pulled)
    assert float(term.detach()) > 0
    for a, b, want in zip(plain, pulled, expected, strict=True):
        torch.testing.assert_close(b - a, want, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("amp", [False, True])
def test_amp_runs_the_cpu_training_step_in_bf16(amp: bool) -> None:
    """--amp on the CPU trains under bf16 autocast (it once only reached validation: the
    training step took its precision from the CUDA-only gradient scaler)."""
    from wsi_tumor.models.resnet_fcn import build_model
    from wsi_tumor.training.distributed import DistInfo
    from wsi_tumor.training.engine import train_one_epoch

    model = build_model()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    first_conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    batch = (torch.rand(1, 9, 3, 224, 224) - 0.5, torch.ones(1, 3, 3))
    still = torch.optim.SGD(model.parameters(), lr=0.0)
    cpu = torch.device("cpu")
    stats = train_one_epoch(model, [batch], still, None, cpu, DistInfo(), 1, quiet=True, amp=amp)
    assert seen == [torch.bfloat16 if amp else torch.float32]
    assert stats.patches == 9 and np.isfinite(stats.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights


def test_consistency_needs_the_mixed_objective(tmp_path: Path) -> None:
    base = [str(tmp_path), "--out", str(tmp_path)]
    assert config_from_argv([*base, "--objective", "mixed", "--consistency", "1"]).consistency == 1
    with pytest.raises(ConfigError, match="--consistency needs --objective mixed"):
        config_from_argv([*base, "--consistency", "1"])
    with pytest.raises(ConfigError, match="consistency must be >= 0"):
        config_from_argv([*base, "--objective", "mixed", "--consistency", "-1"])


def test_region_augment_moves_labels_with_the_pixels() -> None:
    """Flips and quarter turns carry the 3 x 3 labels along: a label marks its own patch."""
    from wsi_tumor.training.transforms import RegionAugment

    crop = np.zeros((736, 736, 3), np.uint8)
    grid = torch.tensor(GRID, dtype=torch.float32)
    for row in range(3):
        for col in range(3):  # tumour patches bright, normal ones dark
            value = 200 * GRID[row][col] + 20
            crop[row * 256 : row * 256 + 224, col * 256 : col * 256 + 224] = value
    augment = RegionAugment()
    augment.colour = lambda image: image  # type: ignore[assignment, method-assign]
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, moved = augment(crop, grid.clone())
        seen.add(tuple(moved.flatten().tolist()))
        for row in range(3):
            for col in range(3):
                centre = float(image[0, row * 256 + 112, col * 256 + 112])
                assert (centre > 0) == bool(moved[row, col]), (seed, row, col)
    assert len(seen) > 2  # the draws did move the grid


def test_dense_objective_needs_the_centre_split() -> None:
    with pytest.raises(DatasetError, match="dense objective needs --grid-split centre"):
        rows, paths = [LabelRow("s", 700, 500, LABELS)], {"s": Path("s.tif")}
        GridPatchDataset(rows, paths, lambda _: None, True, "monai", "dense")  # type: ignore[arg-type, return-value]


def test_literal_flags_parse_from_the_command_line(tmp_path: Path) -> None:
    """--grid-split and --objective take their choices as strings (a Literal is no parser)."""
    cfg = config_from_argv([str(tmp_path), "--out", str(tmp_path), "--grid-split", "monai"])
    assert cfg.grid_split == "monai" and cfg.objective == "patch"
    cfg = config_from_argv([str(tmp_path), "--out", str(tmp_path), "--objective", "mixed"])
    assert cfg.objective == "mixed"
    with pytest.raises(SystemExit):
        config_from_argv([str(tmp_path), "--out", str(tmp_path), "--objective", "pixel"])


if __name__ == "__main__":  # torchrun driver for test_torchrun_two_process_gloo
    import logging

    from wsi_tumor.training.trainer import train

    logging.basicConfig(level=logging.INFO)
    ds, out, objective = sys.argv[1:4]
    config = config_from_argv(
        [
            ds,
            "--out",
            out,
            "--quiet",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--batch-size",
            "1",
            "--workers",
            "0",
            "--max-steps-per-epoch",
            "2",
            "--objective",
            objective,
        ]
    )
    train(config, synthetic_opener, synthetic_size)  # type: ignore[arg-type]
    logging.getLogger("driver").info("world %s done", os.environ["WORLD_SIZE"])
