"""``make gpu-bundle``: what a GPU machine lacks for the serve check, in one carried folder.

The lent GPU machine has torch, torchvision, tifffile, grpcio and protobuf but no
tritonserver and no tritonclient, and at most 64 MiB travel with one command (the tracked
tree, ``../shared`` and the carried paths together). This builds, on a CPU machine with PyPI,
the git-ignored ``.gpu-bundle/``: one ``bundle.tar.xz`` and a manifest of every file in it
with its purpose and the total that would travel.

- ``triton/``: from the ``nvidia-pytriton==0.7.0`` wheel (Triton 2.51.0, a GPU build), the
  server, the Python backend, the stub of the target Python (3.12 on the GPU image) and the
  libraries the wheel bundles, less the 3.13 stub's libpython;
- ``stub-site/``: numpy 1.26.4 for the stub's small venv (the 2.51 stub answers empty
  tensors under numpy 2), its tests left out;
- ``client-site/<module>/``: each client package the image may lack (tritonclient 2.51.0
  and what its gRPC client imports, tqdm), one folder per import name, put on the client's
  ``PYTHONPATH`` only where the image has no such module.

Wheels are fetched with ``pip download`` into ``.gpu-bundle-cache/`` (also git-ignored) and
reused; the archive is deterministic (sorted, zero times and owners).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import lzma
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_bench import BENCHMARKS_DIR, BenchError

log = logging.getLogger(__name__)

ROOT = BENCHMARKS_DIR.parent
DEFAULT_OUT = ROOT / ".gpu-bundle"
DEFAULT_CACHE = ROOT / ".gpu-bundle-cache"
ARCHIVE, MANIFEST_JSON, MANIFEST_MD = "bundle.tar.xz", "manifest.json", "MANIFEST.md"
TRITON_DIR, STUB_DIR, CLIENT_DIR = "triton", "stub-site", "client-site"
TRAVEL_LIMIT = 64 * 2**20
"""Bytes one device command may carry: the tracked tree, ../shared and the carried paths."""
DEFAULT_PRESET = 6
"""xz's default: within 4 % of ``9e``'s size (35.2 vs 34.0 MB measured) in half the time."""
PYTRITON = "nvidia-pytriton==0.7.0"
NUMPY = "numpy==1.26.4"
CLIENT_WHEELS = {
    "tritonclient": ("tritonclient==2.51.0", "tritonclient 2.51.0: the gRPC client API "
                     "wsi-infer and wsi-export use (the image has no tritonclient)"),
    "rapidjson": ("python-rapidjson==1.25", "python-rapidjson: imported by "
                  "tritonclient.grpc.aio"),
    "packaging": ("packaging==26.4", "packaging: imported by tritonclient.grpc (the image "
                  "may have it; used only where it lacks it)"),
    "tqdm": ("tqdm==4.70.1", "tqdm: the client's progress bars (used only where the image "
             "lacks it)"),
}  # fmt: skip
"""Import name -> (pinned wheel, purpose) of the client packages carried."""
LIBRARY_PURPOSES = {
    "libcudart": "CUDA 12.6 runtime that the server, the Python backend and the stub link "
    "(the device's CUDA 13 driver runs it)",
    "libtritonserver": "Triton's core library",
    "libdcgm": "DCGM, Triton's GPU metrics (linked by the core)",
    "libicu": "ICU, linked by libxml2",
    "libpython": "",
}
"""Purposes of the bundled libraries by name prefix; others: a dependency of the core."""


def _python_tag(version: str) -> str:
    major, minor = version.split(".")
    return f"cp{major}{minor}"


def download(specs: Sequence[str], cache: Path, python: str) -> dict[str, Path]:
    """``pip download`` the pinned wheels (binary, manylinux x86_64, ``python``) into ``cache``.

    Returns:
        Pinned spec -> wheel file.

    Raises:
        BenchError: when pip fails or a wheel is missing afterwards.
    """
    cache.mkdir(parents=True, exist_ok=True)

    def find(spec: str) -> Path | None:
        name, version = spec.split("==")
        stem = name.replace("-", "_").lower()
        for wheel in cache.glob("*.whl"):
            parts, tags = wheel.name.split("-"), wheel.name.lower()
            usable = "none-any" in tags or "py3-none" in tags or _python_tag(python) in tags
            if parts[0].lower() == stem and parts[1] == version and usable:
                return wheel
        return None

    missing = [spec for spec in specs if find(spec) is None]
    if missing:
        platforms = ["manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                     "manylinux2014_x86_64", "manylinux_2_24_x86_64"]  # fmt: skip
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--disable-pip-version-check", "--only-binary=:all:", "--python-version",
                   python, "--implementation", "cp", "-d", str(cache)]  # fmt: skip
        for platform_tag in platforms:
            command += ["--platform", platform_tag]
        done = subprocess.run([*command, *missing], capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"pip download {' '.join(missing)} failed: {done.stderr[-500:]}")
    wheels = {spec: find(spec) for spec in specs}
    absent = [spec for spec, wheel in wheels.items() if wheel is None]
    if absent:
        raise BenchError(f"no wheel in {cache} for {', '.join(absent)} (Python {python})")
    return {spec: wheel for spec, wheel in wheels.items() if wheel is not None}


@dataclass(frozen=True)
class Member:
    """One file of the bundle: its path in the archive, its bytes, its mode, why it is there."""

    path: str
    data: bytes
    mode: int
    purpose: str


def _library_purpose(name: str) -> str:
    for prefix, purpose in LIBRARY_PURPOSES.items():
        if name.startswith(prefix):
            return purpose
    return "a library the wheel bundles for tritonserver, libtritonserver or the backend"


def triton_members(wheel: Path, python: str) -> list[Member]:
    """The server, the Python backend, the ``python`` stub and the bundled libraries."""
    base = "pytriton/tritonserver/"
    stub = f"{base}python_backend_stubs/{python}/triton_python_backend_stub"
    picks = {
        f"{base}bin/tritonserver": ("bin/tritonserver", "Triton 2.51.0 server, a GPU build"),
        f"{base}backends/python/libtriton_python.so": (
            "backends/python/libtriton_python.so", "Triton's Python backend"),
        f"{base}backends/python/triton_python_backend_utils.py": (
            "backends/python/triton_python_backend_utils.py",
            "pb_utils, which the model.py adapters import"),
        stub: ("backends/python/triton_python_backend_stub",
               f"the Python {python} backend stub (needs the machine's libpython{python}.so.1.0)"),
    }  # fmt: skip
    members = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        if stub not in names:
            raise BenchError(f"{wheel.name} has no Python-backend stub for Python {python}")
        for source, (target, purpose) in picks.items():
            members.append(Member(f"{TRITON_DIR}/{target}", zf.read(source), 0o755, purpose))
        for name in sorted(names):
            if name.startswith("nvidia_pytriton.libs/") and not name.endswith("/"):
                library = name.split("/", 1)[1]
                purpose = _library_purpose(library)
                if purpose:  # libpython3.13 (the 3.13 stub's) is left out
                    members.append(
                        Member(f"{TRITON_DIR}/libs/{library}", zf.read(name), 0o755, purpose)
                    )
    return members


def _wheel_files(wheel: Path) -> list[tuple[str, bytes]]:
    """(path in site-packages, bytes) of a wheel, ``*.data/purelib|platlib`` moved to the root."""
    files = []
    with zipfile.ZipFile(wheel) as zf:
        for source in sorted(zf.namelist()):
            parts = source.split("/")
            if source.endswith("/"):
                continue
            target = source
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue  # scripts, headers, data: not imported
                target = "/".join(parts[2:])
            files.append((target, zf.read(source)))
    return files


def numpy_members(wheel: Path) -> list[Member]:
    """numpy 1.26 for the stub's venv, without its test suites."""
    purpose = "numpy 1.26.4 for the stub's venv (the 2.51 stub answers empty tensors under numpy 2)"
    return [
        Member(f"{STUB_DIR}/{name}", data, 0o755 if ".so" in name else 0o644, purpose)
        for name, data in _wheel_files(wheel)
        if "/tests/" not in name
    ]


def client_members(wheels: dict[str, Path]) -> list[Member]:
    """Each carried client package in ``client-site/<import name>/``."""
    members = []
    for module, (spec, purpose) in CLIENT_WHEELS.items():
        for name, data in _wheel_files(wheels[spec]):
            if name.split("/")[0] in ("tritonclientutils", "tritonhttpclient", "tritongrpcclient"):
                continue  # tritonclient's deprecated aliases
            mode = 0o755 if name.endswith(".so") else 0o644
            members.append(Member(f"{CLIENT_DIR}/{module}/{name}", data, mode, purpose))
    return members


def pack(members: Sequence[Member], path: Path, preset: int) -> int:
    """Write a deterministic ``tar.xz`` of ``members``; return its size."""
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wb", preset=preset) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for member in sorted(members, key=lambda m: m.path):
            info = tarfile.TarInfo(member.path)
            info.size, info.mode, info.mtime = len(member.data), member.mode, 0
            tar.addfile(info, io.BytesIO(member.data))
    os.replace(tmp, path)
    return path.stat().st_size


def travelling_bytes(root: Path = ROOT) -> dict[str, int]:
    """Bytes of what travels with every device command besides the carried paths: the
    tracked and the untracked-but-not-ignored files, and the shared folder where it exists."""

    def listed(*args: str) -> int:
        done = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", *args], capture_output=True, check=True
        )
        paths = [root / p for p in done.stdout.decode().split("\0") if p]
        return sum(p.lstat().st_size for p in paths if p.exists() or p.is_symlink())

    # the checkout's shared/, or the one beside it (a worktree's is two levels up)
    places = [root / "shared", root.parent / "shared", root.parent.parent / "shared"]
    shared = next((p for p in places if p.is_dir()), None)
    return {
        "tracked": listed(),
        "untracked": listed("--others", "--exclude-standard"),
        "shared": sum(p.stat().st_size for p in shared.rglob("*") if p.is_file()) if shared else 0,
    }


def _source(wheel: Path) -> dict[str, Any]:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return {"wheel": wheel.name, "bytes": wheel.stat().st_size, "sha256": digest}


def _groups(members: Sequence[Member]) -> list[dict[str, Any]]:
    """Members grouped by (top folder, purpose): the manifest's summary table."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for member in members:
        top = "/".join(member.path.split("/")[:2])
        group = groups.setdefault(
            (top, member.purpose),
            {"folder": top, "purpose": member.purpose, "files": 0, "bytes": 0},
        )
        group["files"] += 1
        group["bytes"] += len(member.data)
    return list(groups.values())


def build(out: Path, cache: Path, python: str, preset: int) -> dict[str, Any]:
    """Download, select, pack and describe the bundle; return the manifest (whose ``travel``
    says whether it fits one device command).

    Raises:
        BenchError: a wheel cannot be had.
    """
    specs = [PYTRITON, NUMPY, *(spec for spec, _ in CLIENT_WHEELS.values())]
    wheels = download(specs, cache, python)
    members = triton_members(wheels[PYTRITON], python)
    members += numpy_members(wheels[NUMPY]) + client_members(wheels)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (ARCHIVE, MANIFEST_JSON, MANIFEST_MD):
        (out / stale).unlink(missing_ok=True)
    log.info("packing %d files (%.0f MB), xz preset %d", len(members),
             sum(len(m.data) for m in members) / 1e6, preset)  # fmt: skip
    archive_bytes = pack(members, out / ARCHIVE, preset)
    travel = travelling_bytes()
    travel["bundle"] = archive_bytes + 64_000  # the manifests, written next
    total = sum(travel.values())
    manifest = {
        "python": python,
        "archive": ARCHIVE,
        "archive_bytes": archive_bytes,
        "unpacked_bytes": sum(len(m.data) for m in members),
        "sources": [_source(wheel) for wheel in wheels.values()],
        "groups": _groups(members),
        "files": [{"path": m.path, "bytes": len(m.data), "purpose": m.purpose} for m in members],
        "travel": {**travel, "total": total, "limit": TRAVEL_LIMIT, "margin": TRAVEL_LIMIT - total},
    }
    (out / MANIFEST_JSON).write_text(json.dumps(manifest, indent=1))
    (out / MANIFEST_MD).write_text(render_manifest(manifest))
    return manifest


def render_manifest(manifest: dict[str, Any]) -> str:
    """MANIFEST.md: what the bundle holds and why, and what travels with a device command."""
    mib = 2**20
    travel = manifest["travel"]
    lines = [
        "# GPU bundle (make gpu-bundle)",
        "",
        f"`{manifest['archive']}`: {manifest['archive_bytes'] / mib:.1f} MiB packed, "
        f"{manifest['unpacked_bytes'] / mib:.1f} MiB unpacked, for Python {manifest['python']}. "
        "Every file with its purpose is in manifest.json.",
        "",
        "| folder | files | MiB unpacked | purpose |",
        "| --- | --- | --- | --- |",
    ]
    for group in manifest["groups"]:
        lines.append(
            f"| {group['folder']} | {group['files']} | {group['bytes'] / mib:.2f} | "
            f"{group['purpose']} |"
        )
    lines += ["", "Sources:", ""]
    lines += [f"- {s['wheel']} ({s['bytes'] / mib:.2f} MiB, sha256 {s['sha256'][:16]}...)"
              for s in manifest["sources"]]  # fmt: skip
    lines += [
        "",
        "What travels with one device command (limit 64 MiB):",
        "",
        f"- tracked files {travel['tracked'] / mib:.1f} MiB, untracked not ignored "
        f"{travel['untracked'] / mib:.2f} MiB, ../shared {travel['shared'] / mib:.2f} MiB, "
        f"this bundle {travel['bundle'] / mib:.1f} MiB",
        f"- total {travel['total'] / mib:.1f} MiB, margin {travel['margin'] / mib:.1f} MiB",
        "",
        "Run on the GPU machine (docs/gpu.md): "
        "`python3 benchmarks/gpu_serve.py --bundle .gpu-bundle`, carrying `.gpu-bundle`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``make gpu-bundle``: build the bundle; 0 when it fits one device command."""
    parser = argparse.ArgumentParser(prog="gpu_bundle", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (X.Y)")
    parser.add_argument("--preset", type=int, default=DEFAULT_PRESET, help="xz preset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="gpu_bundle: %(message)s")
    try:
        manifest = build(args.out, args.cache, args.python, args.preset)
    except BenchError as exc:
        print(f"gpu_bundle: {exc}", file=sys.stderr)
        return 1
    print((args.out / MANIFEST_MD).read_text())
    total = manifest["travel"]["total"] / 2**20
    print(f"gpu_bundle: {args.out / ARCHIVE}, {total:.1f} MiB would travel", file=sys.stderr)
    if manifest["travel"]["margin"] < 0:
        print("gpu_bundle: more than the 64 MiB one device command carries", file=sys.stderr)
        return 1
    return 0
