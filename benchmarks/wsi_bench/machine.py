"""Describe the machine and the software versions a benchmark ran on."""

from __future__ import annotations

import json
import os
import platform
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "onnxruntime", "monai", "tritonclient", "numpy", "cucim-cu13")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
"""CPU features that decide how fast fp32, bf16 and INT8 run (VNNI/AMX: native INT8 dot
products; AVX512-BF16/AMX: native bf16)."""


def cpu_flags() -> list[str]:
    """Which of :data:`SIMD_FLAGS` the CPU has (from /proc/cpuinfo; empty elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SIMD_FLAGS if flag in present]
    return []


def package_version(name: str) -> str:
    """Installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def server_version(http_url: str | None) -> str:
    """Version a running Triton reports at ``GET /v2`` (``"unknown"`` when unreachable)."""
    if http_url is None:
        return "unknown"
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2", timeout=5) as response:
            data: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError):
        return "unknown"
    return str(data.get("version", "unknown"))


def describe_machine(http_url: str | None = None) -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python and package versions (+ tritonserver's)."""
    import psutil

    versions = {name: package_version(name) for name in PACKAGES}
    versions["tritonserver"] = server_version(http_url)
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": ", ".join(cpu_flags()) or "none of " + ", ".join(SIMD_FLAGS),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def torch_environment(device: Any) -> dict[str, Any]:
    """Python, torch, torchvision, numpy and tifffile versions, the CPU and, on a CUDA
    ``device``, the GPU (what the GPU tools' reports start with)."""
    import numpy
    import tifffile
    import torch
    import torchvision

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "tifffile": tifffile.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": cpu_model(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version()
        )
        env.update(sm_count=props.multi_processor_count, memory_gib=props.total_memory / 2**30)
    return env
