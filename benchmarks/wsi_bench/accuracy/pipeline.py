"""The benchmark's stages for one seed: the product's commands, as a user would type them.

``wsi-synth`` -> ``wsi-labels`` -> ``wsi-train`` (the first model) -> [``wsi-export`` ->
``wsi-mine`` -> ``wsi-labels``] -> ``wsi-train --init-from`` (fine-tuning on whole regions
and their patches) -> ``wsi-export`` -> [``wsi-infer`` on the validation slides ->
``wsi-slide-classifier``] -> ``wsi-infer`` + ``wsi-froc`` on the test slides, dense (and
exact) mode -> [``wsi-export --precision int8`` -> ``wsi-infer`` + ``wsi-froc`` again].

Each stage writes a marker with its command when it succeeds; with the same work directory a
later run reuses every stage whose command is unchanged (an interrupted benchmark resumes,
and the ablation reuses what ``make accuracy`` computed). Servers are started once per
model repository and phase; their ports are not part of a stage's identity.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wsi_bench.accuracy.recipe import Levers, SeedPaths, Sizes
from wsi_tumor.contract import SLIDE_CLASSIFIER_FILE, SLIDE_CLASSIFIER_PARAMETER
from wsi_tumor.data import layout
from wsi_tumor.stages import Stage, console_script, run_stage

log = logging.getLogger(__name__)

SERVER = "<server>"
"""Stands for the phase's server URL in a stage's identity."""


@dataclass
class StageRecord:
    """One stage of the benchmark and what it cost."""

    seed: int
    variant: str
    name: str
    seconds: float
    reused: bool


@dataclass
class Runner:
    """Runs (or reuses) stages and records their timings.

    A stage belongs to scopes, outermost first (the seed's shared stages, the first model of a
    stain setting, a variant). It is reused when its marker holds the same command and either
    it ran in this session (variants share a first model) or no stage of its scopes did: a
    stage that ran makes everything after it in its scope run again.
    """

    quiet: bool
    records: list[StageRecord] = field(default_factory=list)
    ran: set[tuple[int, str]] = field(default_factory=set)
    written: set[Path] = field(default_factory=set)

    def done(self, seed: int, scopes: Sequence[str], marker: Path, argv: Sequence[str]) -> bool:
        """Whether the stage can be reused (see the class docstring)."""
        same = marker.is_file() and marker.read_text() == _identity(argv)
        if marker in self.written:
            return same
        return same and not any((seed, scope) in self.ran for scope in scopes)

    def run(
        self, seed: int, scopes: Sequence[str], name: str, argv: list[str], marker: Path
    ) -> None:
        """Run the stage unless it can be reused; record it either way."""
        variant = scopes[-1]
        if self.done(seed, scopes, marker, argv):
            log.info("== %s (seed %d, %s): reused", name, seed, variant)
            self.records.append(StageRecord(seed, variant, name, 0.0, True))
            return
        marker.unlink(missing_ok=True)
        stage = run_stage(Stage(f"{name} (seed {seed}, {variant})", argv))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_identity(argv))
        self.written.add(marker)
        self.ran.add((seed, variant))
        self.records.append(StageRecord(seed, variant, name, round(stage.seconds, 1), False))

    @property
    def flags(self) -> list[str]:
        """``--quiet`` when asked."""
        return ["--quiet"] if self.quiet else []


SEED_SCOPE = ("-",)
"""The scopes of a seed's shared stages (dataset, labels)."""


def base_scopes(levers: Levers) -> tuple[str, ...]:
    """Scopes of the first model's stages."""
    return (*SEED_SCOPE, f"base_stain-{levers.stain}")


def variant_scopes(levers: Levers) -> tuple[str, ...]:
    """Scopes of a variant's own stages."""
    return (*base_scopes(levers), levers.model_key)


def _identity(argv: Sequence[str]) -> str:
    return json.dumps([SERVER if "://" in a or a.startswith("127.0.0.1:") else a for a in argv])


def _slides(data: Path, split: str) -> list[str]:
    with layout.coords_path(data, layout.SLIDES_CSV).open(newline="") as handle:
        names = [row["slide"] for row in csv.DictReader(handle) if row["split"] == split]
    return [str(layout.image_path(data, name)) for name in names]


@contextmanager
def serving(repository: Path, needed: bool) -> Iterator[str]:
    """A local tritonserver on ``repository`` while ``needed`` (else no server: "")."""
    if not needed:
        yield ""
        return
    from wsi_tumor.serving.local_server import LocalTritonServer

    with LocalTritonServer(repository, log_path=repository.parent / "tritonserver.log") as server:
        yield server.grpc_url


def prepare_seed(runner: Runner, seed: int, sizes: Sizes, paths: SeedPaths) -> None:
    """The seed's dataset and its label CSVs."""
    data = str(paths.data)
    runner.run(seed, SEED_SCOPE, "generate the hard dataset", [
        console_script("wsi-synth"), data, "--preset", sizes.preset, "--train", str(sizes.train),
        "--valid", str(sizes.valid), "--test", str(sizes.test), "--seed", str(seed),
        *runner.flags,
    ], paths.root / ".generate")  # fmt: skip
    coords = paths.data / layout.COORDS_DIR
    runner.run(seed, SEED_SCOPE, "write the training labels", [
        console_script("wsi-labels"), "--images", str(paths.data / layout.IMAGES_DIR),
        "--annotations", str(paths.data / layout.JSONS_DIR),
        "--train-coords", str(coords / layout.TUMOR_TRAIN), str(coords / layout.NORMAL_TRAIN),
        "--valid-coords", str(coords / layout.TUMOR_VALID), str(coords / layout.NORMAL_VALID),
        "--out-dir", str(paths.labels), *runner.flags,
    ], paths.labels / ".labels")  # fmt: skip


def _train(sizes: Sizes, labels: Path, paths: SeedPaths, seed: int, levers: Levers) -> list[str]:
    # fp32 on every runner: wsi-train's default (bf16 where the CPU has it) would make the
    # benchmark's arithmetic, and so its weights, depend on the runner it lands on
    return [
        console_script("wsi-train"), "--labels-train", str(labels / "training.csv"),
        "--labels-valid", str(labels / "validation.csv"),
        "--images", str(paths.data / layout.IMAGES_DIR), "--batch-size", str(sizes.batch_size),
        "--max-valid-steps", str(sizes.valid_steps), "--workers", str(sizes.workers),
        "--seed", str(seed), "--no-amp", "--stain-augment", levers.stain,
    ]  # fmt: skip


def train_variant(
    runner: Runner, seed: int, sizes: Sizes, paths: SeedPaths, levers: Levers
) -> Path:
    """The first model, the mining (hard negatives) and the fine-tuning; the final weights."""
    base, run = paths.base(levers), paths.run(levers)
    first_scopes, scopes = base_scopes(levers), variant_scopes(levers)
    runner.run(seed, first_scopes, "train the first model", [
        *_train(sizes, paths.labels, paths, seed, levers), "--out", str(base / "checkpoints"),
        "--epochs", str(sizes.epochs), "--max-steps-per-epoch", str(sizes.steps_per_epoch),
        *runner.flags,
    ], base / ".train")  # fmt: skip
    first = base / "checkpoints" / "best.pt"
    labels = paths.labels
    if levers.hard_negatives:
        repository = base / "model_repository"
        runner.run(seed, first_scopes, "export the first model", [
            console_script("wsi-export"), "--checkpoint", str(first),
            "--repository", str(repository), *runner.flags,
        ], base / ".export")  # fmt: skip
        mined = base / layout.HARD_NEGATIVE_TRAIN
        runner.run(seed, first_scopes, "mine hard negatives", [
            console_script("wsi-mine"), str(paths.data), "--maps", str(base / "maps_train"),
            "--model-repository", str(repository), "--out", str(mined), *runner.flags,
        ], base / ".mine")  # fmt: skip
        labels = base / "labels_hn"
        coords = paths.data / layout.COORDS_DIR
        runner.run(seed, first_scopes, "write the labels with the mined centres", [
            console_script("wsi-labels"), "--images", str(paths.data / layout.IMAGES_DIR),
            "--annotations", str(paths.data / layout.JSONS_DIR),
            "--train-coords", str(coords / layout.TUMOR_TRAIN),
            str(coords / layout.NORMAL_TRAIN), str(mined),
            "--valid-coords", str(coords / layout.TUMOR_VALID), str(coords / layout.NORMAL_VALID),
            "--out-dir", str(labels), *runner.flags,
        ], labels / ".labels")  # fmt: skip
    runner.run(seed, scopes, "fine-tune on whole regions and their patches", [
        *_train(sizes, labels, paths, seed, levers), "--out", str(run / "finetuned"),
        "--init-from", str(first), "--objective", "mixed",
        "--consistency", str(sizes.consistency), "--epochs", "1",
        "--max-steps-per-epoch", str(sizes.finetune_steps), *runner.flags,
    ], run / ".finetune")  # fmt: skip
    return run / "finetuned" / "best.pt"


def _infer(runner: Runner, slides: list[str], out: Path, url: str, mode: str) -> list[str]:
    return [
        console_script("wsi-infer"), *slides, "--out", str(out), "--url", url, "--mode", mode,
        "--overwrite", *runner.flags,
    ]  # fmt: skip


def score_variant(
    runner: Runner,
    seed: int,
    sizes: Sizes,
    paths: SeedPaths,
    levers: Levers,
    checkpoint: Path,
    modes: Sequence[str],
    int8: bool,
) -> None:
    """Export, fit the slide classifier, infer and score the test slides in ``modes``."""
    run, scopes = paths.run(levers), variant_scopes(levers)
    repository = run / "model_repository"
    runner.run(seed, scopes, "export both networks", [
        console_script("wsi-export"), "--checkpoint", str(checkpoint),
        "--repository", str(repository), *runner.flags,
    ], run / ".export")  # fmt: skip
    if levers.slide_classifier:
        maps = run / "maps_valid"
        argv = _infer(runner, _slides(paths.data, "valid"), maps, SERVER, "dense")
        needed = not runner.done(seed, scopes, run / ".maps_valid", argv)
        with serving(repository, needed) as url:
            argv = _infer(runner, _slides(paths.data, "valid"), maps, url or SERVER, "dense")
            runner.run(seed, scopes, "map the validation slides", argv, run / ".maps_valid")
        runner.run(seed, scopes, "fit the slide classifier", [
            console_script("wsi-slide-classifier"), "--maps", str(maps),
            "--labels", str(layout.coords_path(paths.data, layout.SLIDES_CSV)),
            "--repository", str(repository), *runner.flags,
        ], run / ".classifier")  # fmt: skip
    _test(runner, seed, paths, levers, repository, list(modes), "")
    if int8:
        quantised = run / "model_repository_int8"
        runner.run(seed, scopes, "export both networks in INT8", [
            console_script("wsi-export"), "--checkpoint", str(checkpoint),
            "--repository", str(quantised), "--precision", "int8",
            "--calibration", str(paths.data),
            "--calibration-patches", str(sizes.calibration_patches),
            "--calibration-regions", str(sizes.calibration_regions), *runner.flags,
        ], run / ".export_int8")  # fmt: skip
        if levers.slide_classifier:  # the same scorer: it scores maps, not weights
            from wsi_tumor.serving.repository import set_detector_parameter

            text = (repository / SLIDE_CLASSIFIER_FILE).read_text()
            (quantised / SLIDE_CLASSIFIER_FILE).write_text(text)
            from wsi_tumor.evaluation.slide_classifier import SlideClassifier

            compact = SlideClassifier.from_text(text, str(repository)).to_text()
            set_detector_parameter(quantised, SLIDE_CLASSIFIER_PARAMETER, compact)
        _test(runner, seed, paths, levers, quantised, ["dense"], "-int8")


def _test(
    runner: Runner,
    seed: int,
    paths: SeedPaths,
    levers: Levers,
    repository: Path,
    modes: list[str],
    suffix: str,
) -> None:
    """Infer and score the test slides with one repository, one server for all modes."""
    scopes, tests = variant_scopes(levers), _slides(paths.data, "test")
    run = paths.run(levers)
    pending = [
        mode
        for mode in modes
        if not runner.done(
            seed,
            scopes,
            run / f".infer_{mode}{suffix}",
            _infer(runner, tests, paths.predictions(levers, mode + suffix), SERVER, mode),
        )
    ]
    with serving(repository, bool(pending)) as url:
        for mode in modes:
            out = paths.predictions(levers, mode + suffix)
            argv = _infer(runner, tests, out, url or SERVER, mode)
            runner.run(
                seed, scopes, f"infer the test set, {mode}{suffix}", argv,
                run / f".infer_{mode}{suffix}",
            )  # fmt: skip
            runner.run(seed, scopes, f"score the test set, {mode}{suffix}", [
                console_script("wsi-froc"), "--detections", str(out),
                "--ground-truth", str(paths.data / layout.MASKS_DIR),
                "--images", str(paths.data / layout.IMAGES_DIR),
                "--reference", str(layout.coords_path(paths.data, layout.TESTING_CSV)),
                "--out", str(paths.froc(levers, mode + suffix)), *runner.flags,
            ], run / f".froc_{mode}{suffix}")  # fmt: skip


def run_seed(
    runner: Runner,
    seed: int,
    sizes: Sizes,
    paths: SeedPaths,
    variants: Sequence[Levers],
    exact: bool,
    int8: bool,
    final: Levers,
) -> float:
    """Every variant of one seed; exact mode and INT8 on ``final``'s model. Returns seconds.

    Variants that differ only in the slide classifier share one model and one set of test
    maps: the classifier is fitted when any of them uses it, and its AUC is read beside the
    map maximum's from the same ``froc.json``.
    """
    started = time.perf_counter()
    prepare_seed(runner, seed, sizes, paths)
    models: dict[str, Levers] = {}
    for levers in variants:
        seen = models.get(levers.model_key)
        if seen is None or (levers.slide_classifier and not seen.slide_classifier):
            models[levers.model_key] = levers
    for levers in models.values():
        checkpoint = train_variant(runner, seed, sizes, paths, levers)
        is_final = levers.model_key == final.model_key
        modes = ["dense", "exact"] if exact and is_final else ["dense"]
        score_variant(runner, seed, sizes, paths, levers, checkpoint, modes, int8 and is_final)
    return time.perf_counter() - started
