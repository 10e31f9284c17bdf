"""The layering ARCHITECTURE.md promises, read from the source: every import of an mlit module by
another, function-level imports included."""

import ast
from pathlib import Path

import mlit

ROOT = Path(mlit.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """mlit module -> the mlit modules it imports anywhere in its body."""
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from mlit.serving import engines` imports mlit.serving.engines
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in modules and t != name}
        # A package's submodule imports the package first.
        parent = name.rpartition(".")[0]
        if parent in modules and parent != "mlit":
            out.add(parent)
        graph[name] = out - {"mlit"}
    return graph


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_import_cycle_among_mlit_modules():
    graph = _graph()
    cycles = sorted(m for m in graph if m in _closure(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_planner_imports_no_trainer_tune_demo_builder_or_engine():
    graph = _graph()
    forbidden = {
        "mlit.train",
        "mlit.trials",
        "mlit.demo",
        "mlit.demo_judge",
        "mlit.serving.engines.hf",
        "mlit.serving.engines.vllm",
        "mlit.serving.engines.scheduler",
        "mlit.serving.model_server",
        "mlit.serving.app",
    }
    for planner in ("mlit.plan", "mlit.preview", "mlit.identity"):
        assert not (_closure(graph, planner) & forbidden), planner


def test_the_model_server_names_no_engine():
    source = (ROOT / "serving" / "model_server.py").read_text("utf-8")
    for name in ('"hf"', '"vllm"', "'hf'", "'vllm'"):
        assert name not in source, name


def test_no_module_is_over_400_lines():
    long = {
        _module(p): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text("utf-8").splitlines())) > 420
    }
    assert not long, long
