"""``pip install .`` without the dev extras is enough for every ``wsi-*`` command.

Each console script's ``--help`` runs in a fresh interpreter in which the dev extras' modules
(and the optional ``ray`` and ``tensorrt``) cannot be imported, and which cannot see the
benchmarks' package: a product module that needs any of them fails here.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
NOT_INSTALLED = (
    "pytest", "ruff", "mypy", "monai", "pandas", "ray", "kubernetes_validate", "jsonschema",
    "selenium", "tensorrt", "wsi_bench",
)  # fmt: skip
# None in sys.modules: ``import x`` raises ImportError and ``importlib.util.find_spec`` says
# absent, as for a package that is not installed
BLOCK = f"import sys\nsys.modules.update(dict.fromkeys({NOT_INSTALLED!r}))\n"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_runs_without_the_dev_extras(script: str) -> None:
    module, function = SCRIPTS[script].split(":")
    code = (
        f"{BLOCK}\nsys.argv = [{script!r}, '--help']\nfrom {module} import {function}\n{function}()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
