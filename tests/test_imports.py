"""Import structure: the engine modules form a line, and the command line starts light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mediapipe", "onnxruntime", "cv2", "av", "tensorrt")


def imported_modules(path: Path, package: str) -> set[str]:
    """Every ``package.*`` module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == package}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_engine_modules_import_each_other_without_a_loop():
    graph = {f"engines.{p.stem}": imported_modules(p, "engines") for p in (ROOT / "engines").glob("*.py")}
    assert "engines.export" in graph["engines.trt_engine"]  # the edge the line keeps
    assert not graph["engines.export"] & {"engines.trt_engine", "engines.convert"}
    assert find_cycle(graph) is None, find_cycle(graph)


def test_importing_the_command_line_loads_no_heavy_module():
    code = ("import json, sys; import cli, rtanim.checks, rtanim.expression.timeline, rtanim.commands.video; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []


# ------------------------------------------------------------------ the house: no circles, no arrow up

#: docs/ARCHITECTURE.md, "What each part may import": layers from low to high. A module may import
#: its own layer (without a circle) and any lower one, never a higher one.
LAYERS = (
    ("rtanim.errors", "rtanim.checks", "rtanim.files"),
    ("rtanim.expression",),
    ("rtanim.io",),
    ("rtanim.face",),
    ("rtanim.models",),
    ("engines",),
    ("rtanim.pipeline",),
    ("rtanim.measure", "rtanim.panel"),
    ("train",),
    ("rtanim.commands",),
    ("rtanim.cli", "rtanim.__main__", "rtanim"),
)
PACKAGES = ("rtanim", "engines", "train")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and not name.startswith(f"{t}.") and not modules[t].name == "__init__.py":
                    found.add(t)
        graph[name] = found
    return graph


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer of LAYERS (docs/ARCHITECTURE.md): add it there"
    return rank


def test_no_import_circle_across_the_packages():
    graph = project_graph()
    assert "rtanim.pipeline.jobs" in graph["rtanim.pipeline.reuse"]  # the edge that used to close a circle
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_import_runs_up_the_layers():
    ups = sorted(f"{a} -> {b}" for a, deps in project_graph().items() for b in deps if layer_of(b) > layer_of(a))
    assert ups == [], ups


def test_the_layer_check_sees_an_arrow_up():
    assert layer_of("rtanim.face.tracking") < layer_of("rtanim.pipeline.graph") < layer_of("rtanim.cli.app")
    assert layer_of("rtanim.checks") == 0 and layer_of("engines.int8") > layer_of("rtanim.models.refine")


def test_calib_scripts_run_from_a_checkout_through_the_one_bootstrap(tmp_path):
    """calib/ is not installed: ``python calib/NAME.py`` finds rtanim, train and calib itself through
    calib/bootstrap.py, from any folder, and no script carries a sys.path bootstrap of its own."""
    for script in ("gate_check.py", "respec_refine.py"):
        proc = subprocess.run([sys.executable, str(ROOT / "calib" / script), "--help"], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr
    own = [p.name for p in (ROOT / "calib").glob("*.py") if p.name != "bootstrap.py" and "sys.path.insert" in p.read_text()]
    assert own == [], own
