"""The record of one run (:class:`Probe`), written as JSON, Markdown and the check grids."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import torchvision

from wsi_bench.gpu_probe.budget import Budget
from wsi_bench.gpu_probe.checks import finite
from wsi_bench.gpu_probe.config import GRIDS_NPZ, REPORT_JSON, REPORT_MD, Json
from wsi_bench.gpu_probe.markdown import render_markdown

logger = logging.getLogger(__name__)


@dataclass
class Probe:
    """Everything one run measured (the JSON report is ``asdict`` of this, cleaned)."""

    config: Json
    environment: Json
    stages: dict[str, Json] = field(default_factory=dict)
    slide: Json = field(default_factory=dict)
    model: Json = field(default_factory=dict)
    decode: Json = field(default_factory=dict)
    network: list[Json] = field(default_factory=list)
    checks: list[Json] = field(default_factory=list)
    agreement: Json = field(default_factory=dict)
    tiler: Json = field(default_factory=dict)
    pipeline: Json = field(default_factory=dict)
    projection: Json = field(default_factory=dict)
    elapsed_s: float = 0.0
    passed: bool = False
    abandoned: bool = False

    def add_check(self, entry: Json) -> None:
        """Record one correctness check and log its verdict."""
        self.checks.append(entry)
        verdict = "ok" if entry["passed"] else "FAILED"
        logger.info("check %s: %s (tolerance %s)", entry["name"], verdict, entry["tolerance"])

    def best_row(self, mode: str, eager_only: bool = False) -> Json | None:
        """The fastest passing network row of ``mode`` (eager variants only when asked)."""
        rows = [
            r
            for r in self.network
            if r["mode"] == mode
            and r.get("passed")
            and r.get("cells_per_s")
            and not (eager_only and ("+" in r["variant"]))
        ]
        return max(rows, key=lambda r: r["cells_per_s"]) if rows else None

    def fastest_of(self, candidates: Sequence[str]) -> str | None:
        """The candidate variant with the best mean passing rate over the shapes it ran."""
        rates: dict[str, list[float]] = {}
        for r in self.network:
            if r["variant"] in candidates and r.get("passed") and r.get("cells_per_s"):
                rates.setdefault(r["variant"], []).append(r["cells_per_s"])
        if not rates:
            return None
        return max(rates, key=lambda v: sum(rates[v]) / len(rates[v]))


def clean(value: Any) -> Any:
    """``value`` made JSON-ready: string keys, lists for tuples, None for inf/NaN, Python
    scalars for numpy ones."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, np.generic):
        return clean(value.item())
    return value


def write_report(probe: Probe, out: Path, budget: Budget, grids: dict[str, Any]) -> Json:
    """Write the JSON, the Markdown and the check grids (atomically); copy them to $OUT."""
    probe.elapsed_s = budget.elapsed()
    report = clean(asdict(probe))
    out.mkdir(parents=True, exist_ok=True)
    texts = {REPORT_JSON: json.dumps(report, indent=1), REPORT_MD: render_markdown(report)}
    for name, text in texts.items():
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    if grids:
        tmp_npz = out / (GRIDS_NPZ + ".tmp.npz")
        np.savez(tmp_npz, **grids)
        os.replace(tmp_npz, out / GRIDS_NPZ)
    target = os.environ.get("OUT")
    if target and Path(target).is_dir() and Path(target).resolve() != out.resolve():
        for name in (*texts, GRIDS_NPZ):
            if (out / name).exists():
                shutil.copy2(out / name, Path(target) / name)
    return report


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> Json:
    """Versions, device and core count."""
    env: Json = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "tifffile": tifffile.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": _cpu_name(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            sm_count=props.multi_processor_count,
            memory_gib=props.total_memory / 2**30,
        )
    return env
