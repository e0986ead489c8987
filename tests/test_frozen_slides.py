"""The accuracy benchmark's test slides are frozen: the generator gives them bit for bit again.

Every figure of ``make accuracy`` is measured on the hard preset's test slides of seeds 0-2;
``tests/data/hard_test_slides.sha256`` holds their hashes. A change to the generator that
moves any pixel of them changes the benchmark, and must come with new hashes and a rerun.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from wsi_tumor.data import layout
from wsi_tumor.data.hard import HardConfig, write_hard_slide
from wsi_tumor.data.hard.generate import plan_specs
from wsi_tumor.data.hard.shapes import load_table

HASHES = Path(__file__).parent / "data" / "hard_test_slides.sha256"


def _frozen() -> dict[tuple[int, str], str]:
    rows = [line.split() for line in HASHES.read_text().splitlines() if not line.startswith("#")]
    return {(int(seed), name): digest for seed, name, digest in rows}


def test_the_hash_file_covers_every_test_slide_of_the_benchmark_seeds() -> None:
    frozen = _frozen()
    expected = {(s, f"test_{n:03d}.tif") for s in (0, 1, 2) for n in range(1, 11)}
    assert set(frozen) == expected
    assert all(len(digest) == 64 for digest in frozen.values())
    assert len(set(frozen.values())) == len(frozen)  # seeds and slides all differ


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "name"), [(2, "test_001")])
def test_a_test_slide_is_regenerated_bit_for_bit(seed: int, name: str, tmp_path: Path) -> None:
    """One slide per run of the suite (each takes tens of seconds): a tumour slide of seed 2,
    generated alone, as in a full dataset of that seed."""
    for sub in (layout.IMAGES_DIR, layout.ANNOTATIONS_DIR, layout.JSONS_DIR, layout.MASKS_DIR):
        (tmp_path / sub).mkdir()
    config = HardConfig(out=tmp_path, train=8, valid=4, test=10, seed=seed, quiet=True)
    spec = next(s for s in plan_specs(config, load_table()) if s.name == name)
    write_hard_slide(tmp_path, spec, config)
    image = layout.image_path(tmp_path, name)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    assert digest == _frozen()[(seed, image.name)]
