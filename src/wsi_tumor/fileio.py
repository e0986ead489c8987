"""Small I/O helpers every stage shares: atomic writes, number formatting, checksums, memory.

Every output file of the product is written through :func:`atomic_path`: the bytes go to a
hidden temporary file beside the target, are flushed to disk, and the file is renamed onto
the target only when the whole write succeeded. A reader therefore sees either the old file
or the complete new one, never a part; a write that fails (a full disk, a killed process)
leaves at most a ``.<name>.*.tmp`` file that never looks like an output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wsi_tumor.errors import OutputError

CHECKSUM_ALGORITHM = "sha256"
_CHUNK = 1 << 20


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name beside ``path`` that ends in ``.tmp`` (never taken for an output)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; fsync and rename it onto ``path`` on success.

    The temporary file is created empty (exclusively, permissions from the umask) before the
    block runs and removed when the block raises.

    Raises:
        OutputError: the file cannot be created, written, flushed or renamed (full disk,
            permissions, file-size limit), naming ``path`` and the reason.
    """
    target = Path(path)
    temporary = temporary_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.open("xb").close()
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{target}: cannot write: {reason}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def file_checksum(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in chunks."""
    digest = hashlib.new(CHECKSUM_ALGORITHM)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


def format_number(value: float) -> str:
    """Integral values without a decimal point, others at full round-trip precision."""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def parse_int_list(text: str) -> list[int]:
    """``"1,4, 16"`` -> ``[1, 4, 16]`` (for comma-separated command-line values).

    Raises:
        ValueError: an item is not an integer (argparse turns it into a usage error).
    """
    return [int(item) for item in text.split(",") if item.strip()]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
