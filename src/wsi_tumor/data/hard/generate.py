"""``wsi-synth --preset hard``: the hard benchmark dataset (layout: :mod:`wsi_tumor.data.layout`).

Each slide is a pure function of (seed, slide name, split, label, config): three random
streams of its own draw (1) its lesions and tissue, (2) its confounders and (3) its stain
and textures, so switching a confounder off (``HardConfig.confounders``) changes only the
pixels that confounder covered.

Lesions are real CAMELYON16 polygons (:mod:`wsi_tumor.data.hard.shapes`). A tumour slide
is a *macro* slide (its biggest lesion a macro-metastasis) at the rate of the source
slides (46 of 110), spread evenly over each split's tumour slides; it copies the ITC and
micro-metastasis counts of a random source slide of the same kind, capped by the split's
:class:`~wsi_tumor.data.hard.plan.Budget`, and draws the shapes from the table.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsi_tumor.data import layout
from wsi_tumor.data.hard.config import HardConfig
from wsi_tumor.data.hard.confounders import (
    Confounder,
    plan_confounders,
)
from wsi_tumor.data.hard.painter import HardPainter
from wsi_tumor.data.hard.plan import Budget, TissuePlan, plan_tissue
from wsi_tumor.data.hard.shapes import CLASSES, LesionShape, ShapeTable, load_table
from wsi_tumor.data.hard.textures import Centre, centre_stain
from wsi_tumor.data.synthetic import (
    make_dataset_dirs,
    write_ground_truth,
    write_lists,
    write_slides,
)
from wsi_tumor.data.tiff_writer import PyramidSpec, write_pyramid
from wsi_tumor.errors import ConfigError
from wsi_tumor.fileio import write_text

log = logging.getLogger(__name__)

SLIDE_MIN_LEVELS = 7
"""Slides keep halving at least down to level 6, the tissue-mask level."""
PRESET = "hard"


@dataclass(frozen=True)
class HardSpec:
    """One slide to generate."""

    name: str
    label: layout.Label
    split: layout.Split
    centre: Centre
    lesion_kind: str
    """``macro``, ``micro`` (largest lesion class) or ``none`` for a normal slide."""
    slot: int = 0
    """Index among the split's slides of the same lesion kind (spreads the macro shapes)."""


@dataclass(frozen=True)
class HardSlide:
    """Everything generated for one slide, as dataset.json records it."""

    spec: HardSpec
    plan: TissuePlan
    confounders: tuple[Confounder, ...]
    grade: float | None
    source_profile: str | None
    requested: dict[str, int]
    """Lesions drawn per class before placement (some may not have fitted)."""
    seconds: float


def _spread(number: int, share: float) -> bool:
    """Whether item ``number`` (1-based) is among ``ceil(n * share)`` spread evenly."""
    return math.ceil(number * share) > math.ceil((number - 1) * share)


def macro_share(table: ShapeTable) -> float:
    """Share of the source's tumour slides whose biggest lesion is a macro-metastasis."""
    with_lesions = [p for p in table.profiles if p[2] + p[3] > 0 or p[1] > 0]
    return sum(1 for p in with_lesions if p[3] > 0) / max(1, len(with_lesions))


def plan_specs(config: HardConfig, table: ShapeTable) -> list[HardSpec]:
    """Names, labels, splits, centres and lesion kinds of every slide, in order."""
    share = macro_share(table) if config.macro_share is None else config.macro_share
    specs: list[HardSpec] = []
    counters = {layout.TUMOR_LABEL: 0, layout.NORMAL_LABEL: 0}
    splits: tuple[tuple[layout.Split, int], ...] = (
        ("train", config.train),
        ("valid", config.valid),
    )
    for split, count in splits:
        tumours = 0
        slots = {"macro": 0, "micro": 0, "none": 0}
        for number in range(1, count + 1):
            label: layout.Label = "tumor" if _spread(number, 0.5) else "normal"
            counters[label] += 1
            prefix = layout.TUMOR_PREFIX if label == layout.TUMOR_LABEL else layout.NORMAL_PREFIX
            kind = "none"
            if label == layout.TUMOR_LABEL:
                tumours += 1
                kind = "macro" if _spread(tumours, share) else "micro"
            name = layout.slide_name(prefix, counters[label])
            specs.append(HardSpec(name, label, split, "train", kind, slots[kind]))
            slots[kind] += 1
    tumours = 0
    slots = {"macro": 0, "micro": 0, "none": 0}
    for number in range(1, config.test + 1):
        label = layout.label_of_test_slide(number)
        pair = (number + 1) // 2
        centre: Centre = "test" if _spread(pair, config.test_centre_share) else "train"
        kind = "none"
        if label == layout.TUMOR_LABEL:
            tumours += 1
            kind = "macro" if _spread(tumours, share) else "micro"
        name = layout.slide_name(layout.TEST_PREFIX, number)
        specs.append(HardSpec(name, label, "test", centre, kind, slots[kind]))
        slots[kind] += 1
    return specs


def stream(seed: int, name: str, purpose: int) -> np.random.Generator:
    """Random stream ``purpose`` (0 lesions/tissue, 1 confounders, 2 stain/textures)."""
    key = (*b"hard", *name.encode(), purpose)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def choose_lesions(
    rng: np.random.Generator,
    spec: HardSpec,
    table: ShapeTable,
    budget: Budget,
    seed: int,
) -> tuple[list[LesionShape], str | None]:
    """Lesions of one tumour slide, biggest first, and the source slide whose mix it copies.

    The macro-metastasis of the split's k-th macro slide is shape (k + offset) of the pool,
    the offset drawn from (seed, split): slides of a split get different ones.

    Args:
        rng: The slide's lesion stream.
        spec: The slide (its lesion kind and slot).
        table: Shape table.
        budget: Caps of the split.
        seed: Dataset seed.

    Returns:
        (shapes, source slide name); ([], None) for ``none``.
    """
    kind = spec.lesion_kind
    if kind == "none":
        return [], None
    profiles = [
        p for p in table.profiles if (p[3] > 0) == (kind == "macro") and (p[2] > 0 or p[3] > 0)
    ]
    source, n_itc, n_micro, _ = profiles[int(rng.integers(len(profiles)))]
    micro_count = min(n_micro, budget.max_micro)
    itc_count = min(n_itc, budget.max_itc)
    micro_pool = [s for s in table.of_class("micro") if s.area_um2 <= budget.micro_max_mm2 * 1e6]
    itc_pool = table.of_class("itc")
    chosen: list[LesionShape] = []
    if kind == "macro":
        macro_pool = [
            s for s in table.of_class("macro") if s.area_um2 <= budget.macro_max_mm2 * 1e6
        ]
        split_key = ("train", "valid", "test").index(spec.split)
        offset = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(*b"hard-macro", split_key))
        ).integers(len(macro_pool))
        chosen.append(macro_pool[(spec.slot + int(offset)) % len(macro_pool)])
    else:
        micro_count = max(1, micro_count)
    picks = rng.choice(len(micro_pool), size=micro_count, replace=False)
    chosen += sorted((micro_pool[int(i)] for i in picks), key=lambda s: -s.area_um2)
    picks = rng.choice(len(itc_pool), size=itc_count, replace=False)
    chosen += [itc_pool[int(i)] for i in picks]
    return chosen, source


def stained_as(spec: HardSpec, config: HardConfig) -> Centre:
    """The centre whose stain a slide gets: its own, or the training centre's when the
    ``stain`` confounder is off."""
    return spec.centre if "stain" in config.confounders else "train"


def write_hard_slide(
    root: Path, spec: HardSpec, config: HardConfig, table: ShapeTable | None = None
) -> HardSlide:
    """Generate one slide: image, and for a tumour slide its XML, JSON and mask.

    Args:
        root: Dataset root (subdirectories must exist).
        spec: Which slide.
        config: Dataset arguments.
        table: Shape table (default: the committed one).

    Returns:
        What was generated.
    """
    started = time.perf_counter()
    table = table or load_table()
    mpp = layout.MPP
    budget = config.test_budget if spec.split == "test" else config.train_budget
    lesion_rng = stream(config.seed, spec.name, 0)
    shapes, source = choose_lesions(lesion_rng, spec, table, budget, config.seed)
    plan = plan_tissue(lesion_rng, shapes, budget, mpp)
    if spec.label == layout.TUMOR_LABEL and not plan.lesions:
        raise ConfigError(f"{spec.name}: no lesion could be placed")
    confounders = plan_confounders(stream(config.seed, spec.name, 1), plan, mpp, config.rates)
    look = stream(config.seed, spec.name, 2)
    stain = centre_stain(look, stained_as(spec, config), config.stain_shift)
    grade = float(look.uniform(*config.grade))
    painter = HardPainter(
        plan, confounders, stain, grade, look, config.confounders, config.texture_side
    )
    with tqdm(
        total=plan.height, desc=spec.name, unit="row", disable=config.quiet, leave=False
    ) as bar:
        write_pyramid(
            layout.image_path(root, spec.name),
            PyramidSpec(plan.width, plan.height, 3, mpp, min_levels=SLIDE_MIN_LEVELS),
            painter,
            progress=bar.update,
        )
    if spec.label == layout.TUMOR_LABEL:
        write_ground_truth(root, spec.name, plan)
    seconds = time.perf_counter() - started
    enabled = [c for c in confounders if c.kind in config.confounders]
    log.info(
        "%s (%s, %s, %s centre, %dx%d): %d lesion(s) [%s], confounders [%s], %.1f s",
        spec.name,
        spec.label,
        spec.split,
        spec.centre,
        plan.width,
        plan.height,
        len(plan.lesions),
        ", ".join(f"{p.lesion_class} {p.major_um:.0f} um" for p in plan.lesions),
        ", ".join(c.kind for c in enabled),
        seconds,
    )
    return HardSlide(
        spec,
        plan,
        tuple(enabled),
        grade if spec.label == layout.TUMOR_LABEL else None,
        source,
        {k: sum(1 for s in shapes if s.lesion_class == k) for k in CLASSES},
        seconds,
    )


def _slide_json(slide: HardSlide, config: HardConfig) -> dict[str, Any]:
    spec, plan = slide.spec, slide.plan
    return {
        "name": spec.name,
        "label": spec.label,
        "split": spec.split,
        "centre": stained_as(spec, config),
        "width": plan.width,
        "height": plan.height,
        "lesion_kind": spec.lesion_kind,
        "tumour_grade": None if slide.grade is None else round(slide.grade, 4),
        "source_profile": slide.source_profile,
        "lesions_requested": slide.requested,
        "lesions": [
            {
                "name": p.name,
                "major_um": p.major_um,
                "is_itc": p.lesion_class == "itc",
                "class": p.lesion_class,
                "shape": p.shape,
                "area_um2": p.area_um2,
                "box": list(p.box),
            }
            for p in plan.lesions
        ],
        "confounders": [c.to_json() for c in slide.confounders],
    }


def _config_json(config: HardConfig) -> dict[str, Any]:
    data = asdict(config)
    data.pop("out")
    data.pop("quiet")
    data["confounders"] = sorted(config.confounders)
    data["grade"] = list(config.grade)
    data["preset"] = PRESET
    return data


def generate_hard(config: HardConfig, table: ShapeTable | None = None) -> list[HardSpec]:
    """Write the whole hard dataset under ``config.out`` (see :mod:`wsi_tumor.data.layout`).

    Args:
        config: Run arguments.
        table: Shape table (default: the committed one).

    Returns:
        The slides written, in order.
    """
    table = table or load_table()
    root = Path(config.out)
    make_dataset_dirs(root)
    specs = plan_specs(config, table)
    written = write_slides(
        partial(write_hard_slide, root, config=replace(config, quiet=True), table=table),
        specs,
        config.quiet,
    )
    slides = {spec.name: slide for spec, slide in zip(specs, written, strict=True)}
    write_lists(root, specs, {name: slide.plan for name, slide in slides.items()}, config)
    metadata = {
        "config": _config_json(config),
        "mpp": layout.MPP,
        "shape_table": "wsi_tumor/data/hard/camelyon16_shapes.json",
        "slides": [_slide_json(slides[s.name], config) for s in specs],
    }
    write_text(root / layout.METADATA_JSON, json.dumps(metadata, indent=1) + "\n")
    return specs


def summary(specs: Sequence[HardSpec]) -> str:
    """One line: slides per split and label."""
    parts = []
    for split in ("train", "valid", "test"):
        chosen = [s for s in specs if s.split == split]
        tumour = sum(1 for s in chosen if s.label == layout.TUMOR_LABEL)
        parts.append(f"{split} {len(chosen)} ({tumour} tumour)")
    return ", ".join(parts)
