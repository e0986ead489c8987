"""The tree's structure: imports only go down DESIGN's layers, no circles, no module too long."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wsi_tumor": ROOT / "src" / "wsi_tumor", "wsi_bench": ROOT / "benchmarks" / "wsi_bench"}
MAX_LINES = 400
LAYERS = {
    # DESIGN.md: contract/errors -> slide, models, serving, annotation formats -> data,
    # evaluation, export -> client, training -> cluster, viewer, entry points -> benchmarks
    0: ("contract", "errors", "fileio", "commandline", "stages"),
    1: ("slide", "models", "serving", "annotations"),
    2: ("data", "evaluation", "export"),
    3: ("client", "training"),
    4: ("cluster", "viewer", "infer", "mine", "fit_classifier", "demo"),
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}
BENCHMARKS = 5


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of ours that ``module`` imports (at any depth in the file)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _layer(module: str) -> int:
    package, _, rest = module.partition(".")
    if package == "wsi_bench":
        return BENCHMARKS
    top = rest.split(".")[0] if rest else ""
    if top not in LAYER_OF:
        raise AssertionError(f"{module}: not in any layer of DESIGN.md; add it to LAYERS")
    return LAYER_OF[top]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, m, known) for m, p in modules.items()}


def test_imports_only_go_down_the_layers() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        for target in targets
        if module != "wsi_tumor" and target != "wsi_tumor" and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycle_between_modules() -> None:
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in _graph().items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_no_module_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_product_package_holds_no_benchmark_code() -> None:
    product = _modules()
    assert not [m for m in product if m.startswith("wsi_tumor.") and "bench" in m]
    assert not [
        (m, t) for m, ts in _graph().items() if m.startswith("wsi_tumor") for t in ts
        if t.startswith("wsi_bench")
    ]  # fmt: skip
