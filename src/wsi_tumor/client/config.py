"""The client's frozen configuration, built from the command line."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_tumor import contract
from wsi_tumor.errors import ConfigError, RequestError
from wsi_tumor.evaluation.nms import NMS_RADIUS, NMS_THRESHOLD
from wsi_tumor.serving.limits import max_regions_per_request
from wsi_tumor.slide import READERS

ENDPOINTS = ("detector", "classifier")
"""``detector``: uint8 regions to the ensemble (it tiles on the server); ``classifier``: the
client cuts the FP32 patches itself (the tiler's numpy code) and sends them to
``tumor_classifier`` (to measure what server-side tiling saves)."""
DEFAULT_REPOSITORY = Path("model_repository")


@dataclass(frozen=True)
class InferConfig:
    """Everything one ``wsi-infer`` run needs; validated on construction.

    Attributes:
        slides: Slide files and directories given on the command line.
        out: Output directory (created).
        url: ``host:port`` of a running Triton gRPC endpoint; None starts an embedded server.
        model_repository: Repository the embedded server serves (ignored with ``url``).
        reader: Slide reader backend, ``cucim`` or ``openslide``.
        region_cells: k, the side of a region in mask cells.
        readers: Reader threads.
        inflight: Requests read or on the wire at once (bounds memory).
        regions_per_request: Regions per request; None = the most the ensemble accepts.
        nms_radius: NMS suppression radius in mask-level cells.
        nms_threshold: NMS stops at probabilities <= this.
        retry_timeout: Seconds a request keeps retrying transient server errors.
        request_timeout: Seconds one request may take before it counts as a deadline error.
        overwrite: Recompute slides whose outputs are complete.
        quiet: No progress bars.
        verbose: Debug logging.
        model_name: Ensemble to call (``endpoint`` detector).
        endpoint: ``detector`` (regions to the ensemble) or ``classifier`` (client-side
            patches to ``tumor_classifier``, at most its max batch per request).
    """

    slides: tuple[Path, ...]
    out: Path
    url: str | None = None
    model_repository: Path = DEFAULT_REPOSITORY
    reader: str = "cucim"
    region_cells: int = contract.REGION_CELLS
    readers: int = 4
    inflight: int = 8
    regions_per_request: int | None = None
    nms_radius: int = NMS_RADIUS
    nms_threshold: float = NMS_THRESHOLD
    retry_timeout: float = 120.0
    request_timeout: float = 600.0
    overwrite: bool = False
    quiet: bool = False
    verbose: bool = False
    model_name: str = field(default=contract.ENSEMBLE_MODEL)
    endpoint: str = "detector"

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(
                f"--endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}"
            )
        if not self.slides:
            raise ConfigError("no slide given: pass slide files or directories")
        if self.reader not in READERS:
            raise ConfigError(f"--reader must be one of {', '.join(READERS)}, got {self.reader!r}")
        for name in ("region_cells", "readers", "inflight"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= 1, got {getattr(self, name)}")
        try:
            limit = max_regions_per_request(self.region_cells)
        except RequestError as exc:
            raise ConfigError(f"--region-cells {self.region_cells}: {exc}") from None
        if self.regions_per_request is not None and not 1 <= self.regions_per_request <= limit:
            raise ConfigError(
                f"--regions-per-request must be in [1, {limit}] for --region-cells "
                f"{self.region_cells} (the ensemble takes at most that many), got "
                f"{self.regions_per_request}"
            )
        if self.nms_radius < 1:
            raise ConfigError(f"--nms-radius must be >= 1 cell, got {self.nms_radius}")
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ConfigError(f"--nms-threshold must be in [0, 1], got {self.nms_threshold}")
        if self.retry_timeout < 0 or self.request_timeout <= 0:
            raise ConfigError("--retry-timeout must be >= 0 and --request-timeout > 0")

    @property
    def served_model(self) -> str:
        """The model the client calls: ``model_name`` or, for ``classifier``, the classifier."""
        return contract.CLASSIFIER_MODEL if self.endpoint == "classifier" else self.model_name

    @property
    def request_regions(self) -> int:
        """Regions per request after resolving the default (the ensemble's limit)."""
        if self.regions_per_request is not None:
            return self.regions_per_request
        return max_regions_per_request(self.region_cells)

    def to_json(self) -> dict[str, Any]:
        """The resolved configuration as JSON-ready values (written next to outputs)."""
        data = asdict(self)
        data["slides"] = [str(path) for path in self.slides]
        data["out"] = str(self.out)
        data["model_repository"] = str(self.model_repository)
        data["regions_per_request"] = self.request_regions
        data["mask_level"] = contract.MASK_LEVEL
        data["patch_size"] = contract.PATCH_SIZE
        data["patch_stride"] = contract.PATCH_STRIDE
        return data


def build_parser() -> argparse.ArgumentParser:
    """The ``wsi-infer`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="wsi-infer",
        description=(
            "Stream the tissue of whole-slide images through the Triton ensemble "
            f"{contract.ENSEMBLE_MODEL!r} and write tumour probability maps, heatmaps and "
            "lesion candidates (CSV, GeoJSON)."
        ),
    )
    parser.add_argument("slides", nargs="+", type=Path, help="slide files and/or directories")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--url", help="gRPC host:port of a running Triton server (default: start one embedded)"
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        help="repository the embedded server serves (default: %(default)s)",
    )
    parser.add_argument(
        "--reader", choices=READERS, default="cucim", help="slide reader (default: %(default)s)"
    )
    parser.add_argument(
        "--region-cells",
        type=int,
        default=contract.REGION_CELLS,
        help="k: a request region covers k x k mask cells (default: %(default)s)",
    )
    parser.add_argument("--readers", type=int, default=4, help="reader threads (default: 4)")
    parser.add_argument(
        "--inflight", type=int, default=8, help="requests read or in flight at once (default: 8)"
    )
    parser.add_argument(
        "--regions-per-request",
        type=int,
        default=None,
        help="regions per request (default: the most the ensemble accepts for k)",
    )
    parser.add_argument(
        "--nms-radius",
        type=int,
        default=NMS_RADIUS,
        help="NMS radius in mask cells (default: %(default)s)",
    )
    parser.add_argument(
        "--nms-threshold",
        type=float,
        default=NMS_THRESHOLD,
        help="NMS stops at p <= this (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-timeout",
        type=float,
        default=120.0,
        help="seconds to retry transient server errors (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="deadline of one request in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint",
        choices=ENDPOINTS,
        default="detector",
        help="detector: send uint8 regions to the ensemble (default); classifier: cut the "
        f"FP32 patches here and send them to {contract.CLASSIFIER_MODEL!r}",
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute complete slides")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace) -> InferConfig:
    """Build the frozen config from parsed arguments.

    Raises:
        ConfigError: on an invalid combination of values.
    """
    return InferConfig(
        slides=tuple(args.slides),
        out=args.out,
        url=args.url,
        model_repository=args.model_repository,
        reader=args.reader,
        region_cells=args.region_cells,
        readers=args.readers,
        inflight=args.inflight,
        regions_per_request=args.regions_per_request,
        nms_radius=args.nms_radius,
        nms_threshold=args.nms_threshold,
        retry_timeout=args.retry_timeout,
        request_timeout=args.request_timeout,
        overwrite=args.overwrite,
        quiet=args.quiet,
        verbose=args.verbose,
        endpoint=args.endpoint,
    )
