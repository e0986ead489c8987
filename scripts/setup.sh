#!/usr/bin/env bash
# Set up a fresh machine for wsi-tumor: the project venv, the real Triton server, perf_analyzer.
#
#   .venv/      the project and its dev extras (torch 2.14.1 / torchvision 0.29.1, numpy<2)
#   .triton/    tritonserver 2.51 + Python backend from the nvidia-pytriton wheel, and
#               perf_analyzer from the tritonclient 2.51.0 wheel, with the libraries they need
#   .venv/bin/tritonserver, .venv/bin/perf_analyzer   launchers that behave like the
#               binaries in NVIDIA's containers once the venv is activated
#
# Idempotent: a second run only re-verifies (seconds). Stops at the first failing step and says
# which. Override the interpreter with PYTHON=/path/to/python3.11.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TRITON="$ROOT/.triton"
PYTRITON_VERSION="0.7.0"
TRITONCLIENT_PA_VERSION="2.51.0"   # the newest wheel whose perf_analyzer runs on glibc 2.36
PYTHON="${PYTHON:-python3}"

step=""
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "setup: FAILED at step: $step (exit $rc)" >&2; fi' EXIT
say() { step="$1"; echo "setup: $1" >&2; }

stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16; }
STAMP="$VENV/.wsi-setup-$(stamp_of)"

say "checking the Python interpreter ($PYTHON)"
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"wsi-tumor needs Python >= 3.11, found {sys.version.split()[0]}")
PY
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# A stamp only counts while what it stands for is still there.
if [ ! -f "$STAMP" ] || [ ! -x "$TRITON/bin/tritonserver" ] || [ ! -x "$VENV/bin/tritonserver" ]; then
    say "creating the virtual environment in .venv"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

    say "installing wsi-tumor with dev extras (torch 2.14.1, torchvision 0.29.1, numpy<2)"
    # The grep only hides the local package index's noise; with pipefail, pip's status
    # decides and a failure stops here (the trap names the step).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$ROOT[dev]" "torch==2.14.1" "torchvision==0.29.1" "numpy<2" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }

    say "downloading tritonserver (nvidia-pytriton==$PYTRITON_VERSION) and perf_analyzer (tritonclient==$TRITONCLIENT_PA_VERSION)"
    rm -rf "$TRITON.tmp" && mkdir -p "$TRITON.tmp/wheels"
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        -d "$TRITON.tmp/wheels" "nvidia-pytriton==$PYTRITON_VERSION" \
        "tritonclient==$TRITONCLIENT_PA_VERSION" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }

    say "unpacking the Triton server, Python backend and perf_analyzer into .triton"
    "$VENV/bin/python" - "$TRITON.tmp" <<'PY'
import sys, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheels = sorted((tmp / "wheels").glob("*.whl"))
if len(wheels) != 2:
    sys.exit(f"expected two wheels in {tmp / 'wheels'}, found {[w.name for w in wheels]}")
for wheel in wheels:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp / "unpacked")
PY
    U="$TRITON.tmp/unpacked"
    mkdir -p "$TRITON.tmp/bin" "$TRITON.tmp/lib" "$TRITON.tmp/backends/python"
    cp "$U/pytriton/tritonserver/bin/tritonserver" "$TRITON.tmp/bin/"
    cp "$U"/tritonclient-*.data/data/bin/perf_analyzer "$TRITON.tmp/bin/"
    cp -r "$U/nvidia_pytriton.libs" "$TRITON.tmp/libs"
    cp "$U"/pytriton/tritonserver/backends/python/* "$TRITON.tmp/backends/python/"
    stub="$U/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub"
    [ -f "$stub" ] || { echo "setup: no Python-backend stub for Python $PYVER in nvidia-pytriton" >&2; exit 1; }
    cp "$stub" "$TRITON.tmp/backends/python/"
    chmod +x "$TRITON.tmp/bin/"* "$TRITON.tmp/backends/python/triton_python_backend_stub"
    # perf_analyzer wants these two under their plain sonames; the wheel carries hashed copies.
    ln -s ../libs/"$(basename "$TRITON.tmp"/libs/libb64-*.so.0d)" "$TRITON.tmp/lib/libb64.so.0d"
    ln -s ../libs/"$(basename "$TRITON.tmp"/libs/libcudart-*.so.12*)" "$TRITON.tmp/lib/libcudart.so.12"
    rm -rf "$TRITON.tmp/wheels" "$U" "$TRITON"
    mv "$TRITON.tmp" "$TRITON"

    say "writing the tritonserver and perf_analyzer launchers into .venv/bin"
    cat > "$VENV/bin/tritonserver" <<'SH'
#!/usr/bin/env bash
# Launcher for the Triton 2.51 server unpacked by wsi-tumor's setup (scripts/setup.sh).
# Python-backend models run in the environment of the first python3 on PATH: this venv.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
triton="$(cd "$here/../../.triton" && pwd)"
export PATH="$here:$PATH"
export LD_LIBRARY_PATH="$triton/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for arg in "$@"; do
    case "$arg" in --backend-directory*) exec "$triton/bin/tritonserver" "$@";; esac
done
exec "$triton/bin/tritonserver" --backend-directory="$triton/backends" "$@"
SH
    cat > "$VENV/bin/perf_analyzer" <<'SH'
#!/usr/bin/env bash
# Launcher for perf_analyzer from the tritonclient 2.51.0 wheel (scripts/setup.sh).
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
triton="$(cd "$here/../../.triton" && pwd)"
export LD_LIBRARY_PATH="$triton/lib:$triton/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$triton/bin/perf_analyzer" "$@"
SH
    chmod +x "$VENV/bin/tritonserver" "$VENV/bin/perf_analyzer"
fi

# Debian packages the product runs better with; never a reason for setup to fail.
apt_install() {  # apt_install WHAT PACKAGE...: install with apt-get where it runs as root
    local what="$1"; shift
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: $* not installed (needs apt-get as root): $what" >&2
        return 0
    fi
    local log; log="$(mktemp)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }
         } >"$log" 2>&1; then
        tail -3 "$log" >&2
        echo "setup: could not install $*: $what" >&2
    fi
    rm -f "$log"
}

# The viewer's browser tests drive the system Chromium (browsers cannot be downloaded at run time).
say "checking for Chromium and chromedriver (wsi-view's browser tests)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install "the browser tests will be skipped" chromium chromium-driver
fi

# jemalloc keeps the server's memory flat (docs/reliability.md); without it the server runs
# with tuned glibc malloc.
say "checking jemalloc for the server (Debian's libjemalloc2)"
if ! ls /usr/lib/*-linux-gnu/libjemalloc.so.2 >/dev/null 2>&1; then
    apt_install "the server uses glibc malloc, tuned" libjemalloc2
fi

say "verifying torch, torchvision and numpy<2"
"$VENV/bin/python" - <<'PY'
import sys
import numpy, torch, torchvision  # noqa: F401  (torchvision fails here if torch was swapped)
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"numpy {numpy.__version__} is installed: Triton's Python backend needs numpy<2")
if torch.__version__.split("+")[0] != "2.14.1":
    sys.exit(f"torch {torch.__version__} is installed, expected 2.14.1")
PY

# Both binaries exit non-zero after printing their usage: check the text instead.
say "verifying tritonserver --help"
usage="$("$VENV/bin/tritonserver" --help 2>&1 || true)"
grep -q -- "--model-repository" <<<"$usage" || { tail -5 <<<"$usage" >&2; exit 1; }

say "verifying perf_analyzer --help"
usage="$("$VENV/bin/perf_analyzer" --help 2>&1 || true)"
grep -q -- "--concurrency-range" <<<"$usage" || { tail -5 <<<"$usage" >&2; exit 1; }

rm -f "$VENV"/.wsi-setup-* && touch "$STAMP"
step="done"
echo "setup: ready. Activate with: source .venv/bin/activate" >&2
