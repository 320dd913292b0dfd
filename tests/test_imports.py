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
    code = ("import json, sys; import cli, rtanim.checks, rtanim.timeline, rtanim.runs; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout) == []
