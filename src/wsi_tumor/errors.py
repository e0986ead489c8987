"""Typed exceptions of wsi-tumor.

The library raises these with a message that names the file (and line or key) and what is
wrong; only a CLI turns them into an exit code and one line on stderr.
"""

from __future__ import annotations


class WsiTumorError(Exception):
    """Base of every error wsi-tumor raises on purpose."""


class ConfigError(WsiTumorError):
    """A command-line flag or config file value is invalid."""


# --- slides ---------------------------------------------------------------------------------
class SlideError(WsiTumorError):
    """A whole-slide image cannot be used."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide file does not exist."""


class SlideFormatError(SlideError):
    """The file is truncated, not a TIFF-family slide, or otherwise unreadable."""


class NotPyramidalError(SlideFormatError):
    """The slide has a single resolution level where a pyramid is needed."""


class MissingResolutionError(SlideError):
    """The slide has no microns-per-pixel tags and the caller needs them."""


class ReaderUnavailableError(SlideError):
    """The requested reader backend (cuCIM, OpenSlide) is not installed or cannot load."""


class NotBrightfieldError(SlideError):
    """The slide is not brightfield H&E (a dark background: fluorescence)."""


class NoTissueError(SlideError):
    """The tissue mask of a slide is empty."""


# --- annotations, labels, datasets ------------------------------------------------------------
class AnnotationError(WsiTumorError):
    """An ASAP XML or NCRF JSON annotation file is malformed."""


class LabelError(WsiTumorError):
    """A label or coordinate CSV is malformed or points outside its slide."""


class DatasetError(WsiTumorError):
    """A dataset is empty or inconsistent."""


# --- models ---------------------------------------------------------------------------------
class CheckpointError(WsiTumorError):
    """A checkpoint is missing, unreadable or from another architecture."""


class ExportError(WsiTumorError):
    """Export failed: parity check, missing TensorRT or GPU, bad repository."""


# --- serving --------------------------------------------------------------------------------
class ServerError(WsiTumorError):
    """The Triton server cannot be started, reached, or keeps failing."""


class ServerUnavailableError(ServerError):
    """The server stayed unreachable for the whole retry window."""


class ModelMismatchError(ServerError):
    """The server's model metadata differs from the contract (names, shapes, dtypes)."""


class RequestError(WsiTumorError):
    """A request to a serving function is malformed (answered as INVALID_ARG by Triton)."""


# --- outputs --------------------------------------------------------------------------------
class OutputError(WsiTumorError):
    """An output file cannot be written (full disk, permissions, size limit)."""


# --- evaluation -----------------------------------------------------------------------------
class EvaluationError(WsiTumorError):
    """FROC inputs are malformed: bad detections CSV, mask without the level, empty input."""


# --- exit codes (applied by wsi_tumor.commandline) -------------------------------------------
EXIT_FAILURE = 1
"""Exit code of a command whose job failed on its input, model or server."""
EXIT_USAGE = 2
"""Exit code of a command given bad flags or configuration (argparse's own code too)."""
