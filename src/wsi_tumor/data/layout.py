"""The on-disk layout of a CAMELYON16-style dataset, as ``wsi-synth`` writes it.

::

    OUT/
      images/tumor_001.tif ...      training/validation slides with lesions
      images/normal_001.tif ...     training/validation slides without lesions
      images/test_001.tif ...       test slides (tumour or normal: see coords/testing.csv)
      annotations/<slide>.xml       ASAP XML lesions (CAMELYON16 groups) of every tumour
                                    slide, test slides included
      jsons/<slide>.json            the same polygons in NCRF's JSON layout
      masks/<slide>_mask.tif        pyramidal uint8 mask, tumour = 255, levels 0..5 at least
      coords/tumor_train.txt        NCRF patch-centre lists ``slide_name,x,y`` (level 0, no
      coords/normal_train.txt       header); train and valid come from different slides
      coords/tumor_valid.txt
      coords/normal_valid.txt
      coords/hard_negative_train.txt  ``wsi-mine``'s mined centres (same layout), if mined
      coords/testing.csv            ``slide,label`` (header line, label tumor|normal)
      coords/slides.csv             ``slide,label,split`` of every slide (header line)
      dataset.json                  generator arguments and per-slide lesion list

Slides are named ``tumor_XXX``, ``normal_XXX`` and ``test_XXX`` with three-digit,
1-based numbers; the first ``--train`` tumour and normal slides are the training split, the
next ``--valid`` ones the validation split. Test slide ``test_XXX`` is a tumour slide when
XXX is odd and a normal slide when it is even. Level 0 is 0.243 um/px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from wsi_tumor.contract import DEFAULT_MPP

IMAGES_DIR: Final = "images"
ANNOTATIONS_DIR: Final = "annotations"
JSONS_DIR: Final = "jsons"
MASKS_DIR: Final = "masks"
COORDS_DIR: Final = "coords"

SLIDE_SUFFIX: Final = ".tif"
MASK_SUFFIX: Final = "_mask.tif"
XML_SUFFIX: Final = ".xml"
JSON_SUFFIX: Final = ".json"

TUMOR_TRAIN: Final = "tumor_train.txt"
NORMAL_TRAIN: Final = "normal_train.txt"
TUMOR_VALID: Final = "tumor_valid.txt"
NORMAL_VALID: Final = "normal_valid.txt"
HARD_NEGATIVE_TRAIN: Final = "hard_negative_train.txt"
"""Centres mined by ``wsi-mine`` (``wsi-labels`` adds them to the training list)."""
TESTING_CSV: Final = "testing.csv"
SLIDES_CSV: Final = "slides.csv"
METADATA_JSON: Final = "dataset.json"

TUMOR_PREFIX: Final = "tumor"
NORMAL_PREFIX: Final = "normal"
TEST_PREFIX: Final = "test"

TUMOR_LABEL: Final = "tumor"
NORMAL_LABEL: Final = "normal"

MPP: Final = DEFAULT_MPP
"""Level-0 microns per pixel of every generated slide."""
MASK_TUMOR_VALUE: Final = 255
"""Value of tumour pixels in the mask TIFFs (0 elsewhere)."""
MASK_MIN_LEVEL: Final = 5
"""Masks always have this level (downsample 32), as CAMELYON16's ground truth does."""

Split = Literal["train", "valid", "test"]
Label = Literal["tumor", "normal"]


def slide_name(prefix: str, number: int) -> str:
    """``tumor_001``-style name of the ``number``-th (1-based) slide of a prefix."""
    return f"{prefix}_{number:03d}"


def label_of_test_slide(number: int) -> Label:
    """Label of test slide ``number`` (1-based): odd numbers are tumour slides."""
    return TUMOR_LABEL if number % 2 == 1 else NORMAL_LABEL


def image_path(root: str | Path, slide: str) -> Path:
    """``root/images/<slide>.tif``."""
    return Path(root) / IMAGES_DIR / f"{slide}{SLIDE_SUFFIX}"


def mask_path(root: str | Path, slide: str) -> Path:
    """``root/masks/<slide>_mask.tif``."""
    return Path(root) / MASKS_DIR / f"{slide}{MASK_SUFFIX}"


def xml_path(root: str | Path, slide: str) -> Path:
    """``root/annotations/<slide>.xml``."""
    return Path(root) / ANNOTATIONS_DIR / f"{slide}{XML_SUFFIX}"


def json_path(root: str | Path, slide: str) -> Path:
    """``root/jsons/<slide>.json``."""
    return Path(root) / JSONS_DIR / f"{slide}{JSON_SUFFIX}"


def coords_path(root: str | Path, name: str) -> Path:
    """``root/coords/<name>`` (one of the list constants above)."""
    return Path(root) / COORDS_DIR / name
