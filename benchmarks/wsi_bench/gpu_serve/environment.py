"""Where the check's processes run, and the prerequisites it verifies before anything else.

Two set-ups:

- ``local`` (this project's machines, the test suite): the venv's ``tritonserver`` launcher,
  whose Python backend runs this interpreter's environment;
- ``bundle`` (the GPU machine, docs/gpu.md): the carried ``.gpu-bundle/bundle.tar.xz``
  (``make gpu-bundle``) unpacked into a work folder. The server runs with the bundled
  libraries on ``LD_LIBRARY_PATH`` (else it cannot load its ``libcudart``); its Python-backend
  stub needs the machine's ``libpython3.X.so.1.0`` of the interpreter's own patch release and
  runs in a small venv, first on ``PATH``, holding the bundle's numpy 1.26 (the 2.51 stub
  answers empty tensors under numpy 2) with a ``.pth`` onto the image's site-packages (torch)
  and the checkout's ``src``; the client and the export run in this interpreter's environment
  with the bundle's client packages that it lacks (tritonclient, ...) on ``PYTHONPATH``.

Every check raises :class:`PrerequisiteError` with one line naming what is missing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import platform
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from wsi_bench import BENCHMARKS_DIR
from wsi_bench.gpu_bundle import ARCHIVE, CLIENT_DIR, MANIFEST_JSON, STUB_DIR, TRITON_DIR
from wsi_tumor.errors import WsiTumorError

SRC_DIR = BENCHMARKS_DIR.parent / "src"
MIN_GLIBC = (2, 35)
"""The nvidia-pytriton wheel's tag: manylinux_2_35."""
MIN_SHM_BYTES = 1 << 30
"""Free /dev/shm the Python backend needs (its regions carry every tensor)."""
CLIENT_IMPORTS = (
    "tritonclient.grpc.aio", "tifffile", "skimage", "matplotlib", "torchvision",
    "wsi_tumor.client.runner", "wsi_tumor.export.cli", "wsi_tumor.slide.torchvision_reader",
)  # fmt: skip
"""What ``wsi-infer`` and ``wsi-export`` import: checked in the client's environment first."""


class PrerequisiteError(WsiTumorError):
    """Something the check needs is missing; the message is the one line to print."""


@dataclass
class Setup:
    """How the check's processes are started.

    Attributes:
        kind: ``local`` or ``bundle``.
        python: The interpreter of the client and the export.
        client_env: Their environment.
        tritonserver: The server binary or launcher.
        server_env: Variables set for the server (``PATH``, ``LD_LIBRARY_PATH``).
        server_args: Extra server flags (the bundle's backend directory).
        facts: What was found (versions, paths), for the report.
    """

    kind: str
    python: Path
    client_env: dict[str, str]
    tritonserver: Path
    server_env: dict[str, str] = field(default_factory=dict)
    server_args: tuple[str, ...] = ()
    facts: dict[str, object] = field(default_factory=dict)


def _python_path(*entries: Path | str) -> dict[str, str]:
    """This environment with ``PYTHONPATH`` = ``entries`` (none: unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    if entries:
        env["PYTHONPATH"] = os.pathsep.join(str(e) for e in entries)
    return env


def glibc() -> tuple[int, int]:
    """The C library's (major, minor) version.

    Raises:
        PrerequisiteError: when it is not glibc or older than :data:`MIN_GLIBC`.
    """
    name = os.confstr("CS_GNU_LIBC_VERSION") or ""
    parts = name.split()[-1].split(".") if name.startswith("glibc") else []
    version = (int(parts[0]), int(parts[1])) if len(parts) >= 2 else (0, 0)
    if version < MIN_GLIBC:
        raise PrerequisiteError(
            f"glibc {name or 'not found'}: tritonserver (manylinux_2_35) needs glibc >= 2.35"
        )
    return version


def shared_memory() -> int:
    """Free bytes in /dev/shm.

    Raises:
        PrerequisiteError: when /dev/shm is missing, not writable or nearly full.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        raise PrerequisiteError("/dev/shm is missing or not writable: Triton's Python backend")
    free = shutil.disk_usage(shm).free
    if free < MIN_SHM_BYTES:
        raise PrerequisiteError(f"/dev/shm has {free / 2**20:.0f} MiB free; it needs >= 1 GiB")
    return free


def gpu() -> dict[str, object]:
    """The CUDA device torch sees.

    Raises:
        PrerequisiteError: when torch sees none.
    """
    import torch

    if not torch.cuda.is_available():
        raise PrerequisiteError("--device cuda: torch sees no CUDA device")
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch_cuda": torch.version.cuda,
        "nvidia_smi": shutil.which("nvidia-smi"),
    }


def find_libpython() -> Path:
    """This interpreter's ``libpython3.X.so.1.0``, of its own patch release.

    Raises:
        PrerequisiteError: when none is found or it is another release.
    """
    name = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    dirs = [sysconfig.get_config_var("LIBDIR"), Path(sys.base_prefix) / "lib"]
    dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]
    found = next((Path(d) / name for d in dirs if d and (Path(d) / name).is_file()), None)
    if found is None:
        raise PrerequisiteError(
            f"{name} not found (looked in {', '.join(str(d) for d in dirs if d)}): the Python "
            f"{platform.python_version()} here is static; the Python-backend stub needs it"
        )
    library = ctypes.CDLL(str(found))
    library.Py_GetVersion.restype = ctypes.c_char_p
    version = library.Py_GetVersion().decode().split()[0]
    if version != platform.python_version():
        raise PrerequisiteError(
            f"{found} is Python {version}, the interpreter is {platform.python_version()}: "
            "the stub needs the same release"
        )
    return found


def _run(python: Path, code: str, env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        [str(python), "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PrerequisiteError(f"{what}: {last}")
    return done.stdout.strip()


def check_client(setup: Setup) -> None:
    """Import what the client and the export need, in their environment.

    Raises:
        PrerequisiteError: naming the import that failed.
    """
    code = f"import importlib\nfor m in {CLIENT_IMPORTS!r}:\n    importlib.import_module(m)\n"
    _run(setup.python, code, setup.client_env, "the client's environment")


def local_setup() -> Setup:
    """This machine's venv: its tritonserver launcher, this interpreter for the client."""
    from wsi_tumor.errors import ServerError
    from wsi_tumor.serving.local_server import find_tritonserver

    try:
        server = find_tritonserver()
    except ServerError as exc:
        raise PrerequisiteError(str(exc)) from None
    env = _python_path(SRC_DIR, BENCHMARKS_DIR)
    return Setup("local", Path(sys.executable), env, server)  # make setup checked this venv


def _site_packages() -> list[str]:
    """This interpreter's site-packages folders (the image's torch lives there)."""
    found = [*site.getsitepackages(), site.getusersitepackages()]
    found += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return list(dict.fromkeys(p for p in found if Path(p).is_dir()))


def _stub_venv(work: Path, unpacked: Path) -> Path:
    """The stub's venv: the bundle's numpy first, then src and the image's site-packages."""
    venv = work / "stubenv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python3"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    where = _run(python, code, _python_path(), "the stub's venv")
    target = Path(where)
    for item in (unpacked / STUB_DIR).iterdir():
        shutil.move(str(item), target / item.name)
    (target / "wsi_tumor_image.pth").write_text("\n".join([str(SRC_DIR), *_site_packages()]))
    return python


def bundle_setup(bundle: Path, work: Path, cuda: bool) -> Setup:
    """Unpack the carried bundle and check what it relies on, in order.

    Raises:
        PrerequisiteError: the first thing missing (one line).
    """
    facts: dict[str, object] = {"glibc": ".".join(map(str, glibc()))}
    facts["shm_free_gib"] = round(shared_memory() / 2**30, 1)
    archive, manifest = bundle / ARCHIVE, bundle / MANIFEST_JSON
    if not archive.is_file() or not manifest.is_file():
        raise PrerequisiteError(f"{bundle}: no {ARCHIVE} and {MANIFEST_JSON}: run make gpu-bundle")
    built_for = json.loads(manifest.read_text())["python"]
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if built_for != here:
        raise PrerequisiteError(f"the bundle is for Python {built_for}, this is {here}")
    libpython = find_libpython()
    facts["libpython"] = str(libpython)
    if cuda:
        facts["gpu"] = gpu()
    unpacked = work / "bundle"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    stub_python = _stub_venv(work, unpacked)
    probe = (  # numpy 1 under the image's torch (built on numpy 2), and the adapters import
        "import numpy, torch, wsi_tumor.serving.torch_runtime\n"
        "assert torch.from_numpy(numpy.arange(3.0)).sum().item() == 3.0\n"
        "print(numpy.__version__, torch.__version__, torch.cuda.is_available())"
    )
    numpy_version, torch_version, stub_cuda = _run(
        stub_python, probe, _python_path(), "the stub's environment"
    ).split()
    if not numpy_version.startswith("1.") or (cuda and stub_cuda != "True"):
        raise PrerequisiteError(
            f"the stub's environment has numpy {numpy_version}, CUDA {stub_cuda}: "
            "it needs numpy 1.x and, on a GPU, CUDA"
        )
    facts.update(stub_numpy=numpy_version, stub_torch=torch_version)
    carried = sorted((unpacked / CLIENT_DIR).iterdir())
    missing = [d for d in carried if importlib.util.find_spec(d.name) is None]
    facts["client_packages_carried"] = [d.name for d in missing]
    triton = unpacked / TRITON_DIR
    libraries = os.pathsep.join(
        filter(
            None, [str(triton / "libs"), str(libpython.parent), os.environ.get("LD_LIBRARY_PATH")]
        )
    )
    path = os.pathsep.join([str(stub_python.parent), os.environ.get("PATH", "")])
    setup = Setup(
        "bundle",
        Path(sys.executable),
        _python_path(SRC_DIR, BENCHMARKS_DIR, *missing),
        triton / "bin" / "tritonserver",
        {"PATH": path, "LD_LIBRARY_PATH": libraries},
        (f"--backend-directory={triton / 'backends'}",),
        facts,
    )
    check_client(setup)
    return setup
