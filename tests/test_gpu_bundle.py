"""``make gpu-bundle`` (issue 30): what it packs, that it fits one device command, and that a
bundle runs the serve check from an environment made to look like the GPU image (numpy 2, no
tritonclient, rapidjson or tqdm), here with Python 3.11 and on the CPU.

The wheels come from PyPI through pip into the repository's ``.gpu-bundle-cache/``."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from wsi_bench import gpu_bundle

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[1]
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"
HIDDEN = (
    "numpy",
    "tritonclient",
    "rapidjson",
    "python_rapidjson",
    "tqdm",
    "imagecodecs",
    "cucim",
    "cucim_cu13",
    "openslide",
    "openslide_bin",
    "openslide_python",
    "tiffslide",
)
"""What the GPU image lacks (or has in another version: numpy 2) of this venv's packages."""


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle for this interpreter (fast xz preset: the contents are what is checked)."""
    out = tmp_path_factory.mktemp("bundle")
    gpu_bundle.build(out, gpu_bundle.DEFAULT_CACHE, HERE, preset=0)
    return out


def test_bundle_holds_what_the_check_needs_and_names_every_file(local_bundle: Path) -> None:
    manifest = json.loads((local_bundle / gpu_bundle.MANIFEST_JSON).read_text())
    with tarfile.open(local_bundle / gpu_bundle.ARCHIVE) as tar:
        members = {m.name: m for m in tar.getmembers()}
        numpy_version = tar.extractfile("stub-site/numpy/version.py").read().decode()  # type: ignore[union-attr]
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(members)
    assert all(f["purpose"] and f["bytes"] == members[p].size for p, f in listed.items())
    for executable in (
        "triton/bin/tritonserver",
        "triton/backends/python/triton_python_backend_stub",
    ):
        assert members[executable].mode & 0o111
    assert "triton/backends/python/libtriton_python.so" in members
    libraries = [n.split("/")[-1] for n in members if n.startswith("triton/libs/")]
    assert any(n.startswith("libcudart-") for n in libraries)
    assert any(n.startswith("libtritonserver-") for n in libraries)
    assert not any(n.startswith("libpython") for n in libraries) and len(libraries) == 41
    assert '"1.26.4"' in numpy_version
    assert not any("/tests/" in n for n in members if n.startswith("stub-site/"))
    for module in ("tritonclient/tritonclient/grpc/aio/__init__.py", "tqdm/tqdm/__init__.py"):
        assert f"client-site/{module}" in members
    assert any(n.startswith("client-site/rapidjson/rapidjson.cpython") for n in members)
    # the stub of this Python is the wheel's own
    with zipfile.ZipFile(next(gpu_bundle.DEFAULT_CACHE.glob("nvidia_pytriton-0.7.0-*.whl"))) as zf:
        stub = zf.read(
            f"pytriton/tritonserver/python_backend_stubs/{HERE}/triton_python_backend_stub"
        )
    assert members["triton/backends/python/triton_python_backend_stub"].size == len(stub)
    assert manifest["archive_bytes"] == (local_bundle / gpu_bundle.ARCHIVE).stat().st_size
    assert "## " not in (local_bundle / gpu_bundle.MANIFEST_MD).read_text()[:2]


def test_the_gpu_machines_bundle_fits_one_device_command(tmp_path: Path) -> None:
    """Python 3.12, the default compression: with the tracked tree it stays under 64 MiB."""
    manifest = gpu_bundle.build(
        tmp_path, gpu_bundle.DEFAULT_CACHE, "3.12", gpu_bundle.DEFAULT_PRESET
    )
    travel = manifest["travel"]
    assert manifest["archive_bytes"] < 44 * 2**20
    assert travel["total"] == sum(travel[k] for k in ("tracked", "untracked", "shared", "bundle"))
    assert travel["total"] < gpu_bundle.TRAVEL_LIMIT and travel["margin"] > 0
    assert travel["tracked"] > 10 * 2**20  # the tree's test slides are counted
    text = (tmp_path / gpu_bundle.MANIFEST_MD).read_text()
    assert f"total {travel['total'] / 2**20:.1f} MiB" in text and "Python 3.12" in text


def _image_like(root: Path) -> Path:
    """A venv of this interpreter that sees this venv's packages except :data:`HIDDEN`, with
    numpy 2 instead: the GPU image's situation. Returns its python."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    own = Path(found.stdout.strip())
    cache = gpu_bundle.DEFAULT_CACHE / "numpy2"
    if not list(cache.glob("numpy-2*.whl")):
        pip = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
        ]
        subprocess.run([*pip, "-d", str(cache), "numpy>=2,<3"], check=True)
    with zipfile.ZipFile(next(cache.glob("numpy-2*.whl"))) as zf:
        zf.extractall(own)
    shown = root / "image" / "site-packages"  # named so, as an image's folder is
    shown.mkdir(parents=True)
    venv_site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    sources = [venv_site, *(Path(line) for line in _pth_lines(venv_site))]
    for source in sources:
        for entry in source.iterdir():
            top = entry.name.split("-")[0].split(".")[0].lower()
            if top in HIDDEN or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
                continue
            if not (shown / entry.name).exists():
                (shown / entry.name).symlink_to(entry)
    (own / "image.pth").write_text(f"{shown}\n")
    return python


def _pth_lines(site: Path) -> list[str]:
    lines = [line.strip() for p in site.glob("*.pth") for line in p.read_text().splitlines()]
    return [line for line in lines if line.endswith("site-packages") and Path(line).is_dir()]


def test_a_bundle_runs_the_serve_check_from_an_image_like_environment(
    local_bundle: Path, tmp_path: Path
) -> None:
    python = _image_like(tmp_path)
    probe = (
        "import numpy, importlib.util as u; print(numpy.__version__, u.find_spec('tritonclient'))"
    )
    seen = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    assert seen.stdout.split()[0].startswith("2.") and seen.stdout.split()[1] == "None"
    out = tmp_path / "report"
    argv = [str(python), "benchmarks/gpu_serve.py", "--bundle", str(local_bundle), "--device",
            "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path / "work"), "--readers",
            "2", "--budget-s", "400"]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "gpu_serve.json").read_text())
    stages = {name: s["status"] for name, s in report["stages"].items()}
    assert done.returncode == 0, (stages, done.stderr[-3000:])
    setup = report["setup"]
    assert setup["kind"] == "bundle" and setup["stub_numpy"] == "1.26.4"
    assert {"tritonclient", "rapidjson", "tqdm"} <= set(setup["client_packages_carried"])
    for mode in ("dense", "exact"):
        assert report["agreement"][mode]["passed"] is True
        assert report["runs"][mode]["cells"] > 100
