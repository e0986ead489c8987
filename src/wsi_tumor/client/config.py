"""The client's frozen configuration; its fields (defaults, help) are the ``wsi-infer`` flags."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wsi_tumor import contract
from wsi_tumor.client.endpoints import MODES, Endpoint, endpoint_for_mode
from wsi_tumor.commandline import add_dataclass_flags, add_logging_flags, make_parser, option
from wsi_tumor.errors import ConfigError, RequestError
from wsi_tumor.evaluation.nms import NMS_RADIUS, NMS_THRESHOLD
from wsi_tumor.serving.limits import max_regions_per_request
from wsi_tumor.slide import READER_CHOICES
from wsi_tumor.slide.tissue import TISSUE_RULES

DEFAULT_REPOSITORY = Path("model_repository")

RAY_SERVER_MODES = ("per-node", "per-task")
"""``--ray-servers``: where a slide task's Triton server comes from when no ``--url`` is given:
one per node run by an actor, or one embedded server per task."""
RAY_MAX_RETRIES = 3
"""``--ray-max-retries``: times Ray re-runs a slide task whose worker or node died."""


@dataclass(frozen=True)
class InferConfig:
    """Everything one ``wsi-infer`` run needs; validated on construction.

    Attributes:
        slides: Slide files and directories given on the command line.
        out: Output directory (created).
        urls: ``host:port`` of running Triton gRPC endpoints; empty starts an embedded server.
        url_file: A file of more URLs (read into ``urls`` by :func:`config_from_args`).
        model_repository: Repository the embedded server serves (ignored with ``urls``).
        reader: Slide reader backend (``auto`` picks per slide).
        mpp: Level-0 microns per pixel forced for every slide (None: the file's own).
        tissue_rule: ``monai`` or ``ncrf`` (see :mod:`wsi_tumor.slide.tissue`).
        exclude_ink: Leave out ink and colourless dark cells too.
        mode: ``exact`` (the ensemble, MONAI's map) or ``dense`` (whole regions).
        region_cells: k, the side of a region in mask cells; None = the mode's default.
        readers: Reader threads.
        inflight: Requests read or on the wire at once (bounds memory).
        regions_per_request: Regions per request; None = the most the model accepts.
        nms_radius: NMS suppression radius in mask-level cells.
        nms_threshold: NMS stops at probabilities <= this.
        retry_timeout: Seconds a request keeps retrying transient server errors.
        request_timeout: Seconds one request may take before it counts as a deadline error.
        overwrite: Recompute slides whose outputs are complete.
        ray: Ray address for a cluster cohort ("" = Ray's default), None for a local run.
        ray_servers: With ``ray`` and no URL: one server per node, or one per task.
        ray_task_cpus: CPUs a slide task reserves.
        ray_max_retries: Retries of a slide task whose node died.
        quiet: No progress bars.
        verbose: Debug logging.
    """

    slides: tuple[Path, ...]
    out: Path
    urls: tuple[str, ...] = option(
        (),
        "gRPC host:port of a running Triton server; repeat for several servers (requests go "
        "to the least loaded, and fail over) (default: start one embedded)",
        flag="--url",
        action="append",
    )
    url_file: Path | None = option(
        None, "a file of server URLs, one host:port per line (# comments), added to --url"
    )
    model_repository: Path = option(
        DEFAULT_REPOSITORY, "repository the embedded server serves", metavar="DIR"
    )
    reader: str = option(
        "auto",
        "slide reader: auto picks per slide (cuCIM for generic TIFF and Aperio, tiffslide for "
        "SubIFD pyramids, OpenSlide for the vendor formats), falling back when one fails, to "
        "torchvision last (JPEG TIFFs, no codec package needed); nvjpeg: torchvision on the GPU",
        choices=READER_CHOICES,
    )
    mpp: float | None = option(
        None,
        "level-0 microns per pixel of every slide, for files that do not state it (or state "
        "it wrongly); default: the file's own",
        metavar="UM",
    )
    tissue_rule: str = option(
        "monai",
        "tissue mask: monai (MONAI's MaskedPatchWSIDataset mask, exactly) or ncrf (adds "
        "NCRF's RGB_min, which also drops dense dark tissue)",
        choices=TISSUE_RULES,
    )
    exclude_ink: bool = option(
        False,
        "also leave out pen ink and colourless dark areas (by hue, saturation, chroma; "
        "an exclusion beyond MONAI's rule)",
    )
    mode: str = option(
        "exact",
        "exact: one patch per cell through the ensemble (MONAI's map); dense: whole regions "
        "through the fully convolutional network (7x the cells/s on a 2-core CPU, approximate)",
        choices=MODES,
    )
    region_cells: int | None = option(
        None,
        f"k: a request region covers k x k mask cells (default: {contract.REGION_CELLS} "
        f"exact, {contract.DENSE_REGION_CELLS} dense)",
        metavar="K",
    )
    readers: int = option(4, "reader threads")
    inflight: int = option(8, "requests read or in flight at once")
    regions_per_request: int | None = option(
        None, "regions per request (default: the most the model accepts for k)", metavar="N"
    )
    nms_radius: int = option(NMS_RADIUS, "NMS radius in mask cells")
    nms_threshold: float = option(NMS_THRESHOLD, "NMS stops at p <= this")
    retry_timeout: float = option(120.0, "seconds to retry transient server errors")
    request_timeout: float = option(600.0, "deadline of one request in seconds")
    overwrite: bool = option(False, "recompute slides whose outputs are complete")
    ray: str | None = None
    ray_servers: str = option(
        "per-node",
        "with --ray and no --url: per-node runs one Triton server per Ray node (an actor, on "
        "--model-repository, which every node must see at the same path); per-task starts an "
        "embedded server in each slide task",
        choices=RAY_SERVER_MODES,
    )
    ray_task_cpus: float = option(
        1.0,
        "with --ray: CPUs Ray reserves per slide task (slides at once per node = its CPUs / this)",
        metavar="N",
    )
    ray_max_retries: int = option(
        RAY_MAX_RETRIES,
        "with --ray: times a slide task is re-run elsewhere when its worker or node dies",
        metavar="N",
    )
    quiet: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.slides:
            raise ConfigError("no slide given: pass slide files or directories")
        if self.reader not in READER_CHOICES:
            raise ConfigError(
                f"--reader must be one of {', '.join(READER_CHOICES)}, got {self.reader!r}"
            )
        if self.tissue_rule not in TISSUE_RULES:
            raise ConfigError(
                f"--tissue-rule must be one of {', '.join(TISSUE_RULES)}, got {self.tissue_rule!r}"
            )
        if self.mpp is not None and not 0.01 <= self.mpp <= 100.0:
            raise ConfigError(f"--mpp must be in [0.01, 100] um/px, got {self.mpp}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("readers", "inflight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        cells = self.cells
        dense = self.mode == "dense"
        low, high = (contract.DENSE_MIN_CELLS, contract.DENSE_MAX_CELLS) if dense else (1, None)
        if cells < low or (high is not None and cells > high):
            raise ConfigError(
                f"--region-cells must be in [{low}, {high}] for --mode {self.mode}, got {cells}"
            )
        if self.mode == "exact":
            try:
                limit = max_regions_per_request(cells)
            except RequestError as exc:
                raise ConfigError(f"--region-cells {cells}: {exc}") from None
            if self.regions_per_request is not None and self.regions_per_request > limit:
                raise ConfigError(
                    f"--regions-per-request must be in [1, {limit}] for --region-cells "
                    f"{cells} (the ensemble takes at most that many), got "
                    f"{self.regions_per_request}"
                )
        if self.regions_per_request is not None and self.regions_per_request < 1:
            raise ConfigError(f"--regions-per-request must be >= 1, got {self.regions_per_request}")
        if self.nms_radius < 1:
            raise ConfigError(f"--nms-radius must be >= 1 cell, got {self.nms_radius}")
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ConfigError(f"--nms-threshold must be in [0, 1], got {self.nms_threshold}")
        if self.retry_timeout < 0 or self.request_timeout <= 0:
            raise ConfigError("--retry-timeout must be >= 0 and --request-timeout > 0")

    @property
    def cells(self) -> int:
        """k after resolving the mode's default."""
        if self.region_cells is not None:
            return self.region_cells
        return contract.REGION_CELLS if self.mode == "exact" else contract.DENSE_REGION_CELLS

    def endpoint(self) -> Endpoint:
        """The served endpoint of ``mode``."""
        return endpoint_for_mode(self.mode)

    def to_json(self) -> dict[str, Any]:
        """The resolved configuration as JSON-ready values (written next to outputs)."""
        data = asdict(self)
        data["slides"] = [str(path) for path in self.slides]
        data["out"] = str(self.out)
        data["urls"] = list(self.urls)
        data["url_file"] = None if self.url_file is None else str(self.url_file)
        data["model_repository"] = str(self.model_repository)
        data["region_cells"] = self.cells
        data["mask_level"] = contract.MASK_LEVEL
        data["patch_size"] = contract.PATCH_SIZE
        data["patch_stride"] = contract.PATCH_STRIDE
        return data


def build_parser(prog: str = "wsi-infer") -> argparse.ArgumentParser:
    """The ``wsi-infer`` argument parser (flags and defaults from :class:`InferConfig`)."""
    parser = make_parser(
        prog,
        "Stream the tissue of whole-slide images through Triton and write tumour probability "
        "maps, heatmaps and lesion candidates (CSV, GeoJSON).",
    )
    parser.add_argument("slides", nargs="+", type=Path, help="slide files and/or directories")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    add_dataclass_flags(parser, InferConfig)
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the cohort on a Ray cluster, one task per slide (pip install "
        "'wsi-tumor[ray]'): ADDRESS is auto, host:port or ray://host:port; --ray alone: "
        "$RAY_ADDRESS, a cluster started on this machine, else a new local one (put it after "
        "the slides)",
    )
    add_logging_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> InferConfig:
    """Build the frozen config from parsed arguments.

    Raises:
        ConfigError: on an invalid combination of values.
    """
    values = vars(args).copy()
    values["slides"] = tuple(values["slides"])
    urls = list(values.get("urls") or ())
    if values.get("url_file") is not None:
        urls += read_url_file(values["url_file"])
    values["urls"] = tuple(dict.fromkeys(urls))
    return InferConfig(**values)


def read_url_file(path: Path) -> list[str]:
    """``host:port`` lines of a URL file (blank lines and ``#`` comments ignored).

    Raises:
        ConfigError: the file is missing, or a line is not ``host:port``.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--url-file {path}: cannot read: {exc.strerror}") from None
    urls = []
    for number, line in enumerate(lines, start=1):
        url = line.split("#", 1)[0].strip()
        if not url:
            continue
        host, _, port = url.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{path}:{number}: expected host:port, found {url!r}")
        urls.append(url)
    if not urls:
        raise ConfigError(f"--url-file {path}: no URL in the file")
    return urls
