"""Per-request error responses shared by the Triton adapters."""

from __future__ import annotations

import logging
from typing import Any

from wsi_tumor.errors import RequestError

log = logging.getLogger(__name__)


def error_response(pb_utils: Any, exc: Exception) -> Any:
    """An InferenceResponse carrying ``exc``: INVALID_ARG for a RequestError, else INTERNAL."""
    error_class = pb_utils.TritonError
    if isinstance(exc, RequestError):
        code = getattr(error_class, "INVALID_ARG", None)
    else:
        log.exception("unexpected failure in a request")
        code = getattr(error_class, "INTERNAL", None)
    message = str(exc) if isinstance(exc, RequestError) else f"{type(exc).__name__}: {exc}"
    error = error_class(message) if code is None else error_class(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
