"""Report files of the GPU tools (the probe, the serve check, the bundle): Markdown tables,
JSON-ready values, and files written atomically and copied to a device call's ``$OUT``."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A value as table text: "-" for None, yes/no, ``digits`` significant digits below 100,
    whole numbers with thousands commas from 100, scientific notation outside 1e-3..1e6."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and not 1e-3 <= abs(value) < 1e6:
            return f"{value:.2e}"
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "/")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines; cells go through :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]


def clean(value: Any) -> Any:
    """JSON-ready: string keys, lists for tuples, None for inf/NaN, Python scalars, paths."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return clean(value.item()) if hasattr(value, "item") and callable(value.item) else value


def write_outputs(out: Path, files: Mapping[str, str | Callable[[Path], None]]) -> None:
    """Write each file (text, or a writer given a temporary path) atomically under ``out``;
    copy them to ``$OUT`` when it names another folder (a device call brings that back)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        tmp = out / f".{name}.tmp"
        if isinstance(content, str):
            tmp.write_text(content)
        else:
            content(tmp)
        os.replace(tmp, out / name)
    target = os.environ.get("OUT")
    if target and Path(target).is_dir() and Path(target).resolve() != out.resolve():
        for name in files:
            shutil.copy2(out / name, Path(target) / name)
