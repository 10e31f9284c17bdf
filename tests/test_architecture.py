"""The rooms ARCHITECTURE.md promises, read from the source: every import of an mlit module by
another, function-level imports included.

`ROOMS` is the one table of the rooms, lowest first. A module may import its own room and the rooms
below it, never one above: a room is built on the ones under it, and can be read, tested and
changed without the ones over it.
"""

import ast
import importlib
import re
from pathlib import Path

import mlit

ROOT = Path(mlit.__file__).parent
REPO = ROOT.parent
MAX_LINES = 400
MAX_TOP_ENTRIES = 20

# Lowest first: each room may import itself and those listed before it.
ROOMS = (
    ("plumbing", "console, interrupts, the atomic write, free ports, Ray's ingress environment"),
    ("method", "languages, mixtures, experiments, hyperparameters, ROUGE-L: the paper as data"),
    ("store", "the content-addressed store, record segments, checksums, leases, model references"),
    ("providers", "the litellm call, retries, rate limits, prices and budget, the Batch API"),
    ("data", "the parallel dataset, the paper's sources and data, translation and its checks"),
    ("generation", "sampling and the prompt format (training and serving), the answer client"),
    ("judging", "templates, both orders and the verdict cache, judgments, parsers, batch mode"),
    ("planning", "the sweep config read once into typed parts: plan, model keys, compute, engine"),
    ("results", "the run folder, scores, tables, figures, report.html, comparison, human kit"),
    ("training", "Ray Tune trials, one Train + DeepSpeed run, checkpoint selection, checkpoints"),
    ("demo", "the demo base model and the demo judge, built locally"),
    ("serving", "the Serve app: ingress, gateway, model server, engines"),
    ("sweep", "the executor and its stages: pipeline, phases, dry run, pre-flight, protocol"),
    ("cli", "the mlit command line and the sweep scripts' flags"),
)
RANK = {name: i for i, (name, _) in enumerate(ROOMS)}
ENTRY_POINTS = {"mlit", "mlit.__main__"}  # the package itself and `python -m mlit` (the CLI)


def _module(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, modules) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from mlit.serving import engines` imports mlit.serving.engines
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules}
    return out


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    """mlit module -> the mlit modules it imports anywhere in its body."""
    modules = {_module(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        out = _imports(path.read_text("utf-8"), modules) - {name}
        # A package's submodule imports the package first.
        parent = name.rpartition(".")[0]
        if parent in modules and parent != "mlit":
            out.add(parent)
        graph[name] = out - {"mlit"}
    return graph


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher room by a lower one, as 'a (room) -> b (room)'."""
    out = []
    for src, targets in graph.items():
        if src in ENTRY_POINTS:
            continue
        for dst in targets:
            a, b = room_of(src), room_of(dst)
            if a and b and RANK[b] > RANK[a]:
                out.append(f"{src} ({a}) -> {dst} ({b})")
    return sorted(out)


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_every_module_lives_in_a_declared_room_and_the_top_stays_small():
    graph = _graph()
    homeless = sorted(m for m in graph if m not in ENTRY_POINTS and room_of(m) is None)
    assert not homeless, f"modules outside every room of ROOMS: {homeless}"
    for name, _ in ROOMS:
        assert (ROOT / name / "__init__.py").is_file(), f"room {name} is not a package"
    top = sorted(p.name for p in ROOT.iterdir() if p.name != "__pycache__")
    assert len(top) <= MAX_TOP_ENTRIES, top
    assert {p.name for p in ROOT.iterdir() if p.is_dir()} - {"__pycache__"} == set(RANK) | {
        "paper",  # the paper's protocol and published numbers, as data
        "sample",  # the bundled 17-language sample
    }


def test_no_two_modules_share_a_name():
    """`protocol.py` here and `protocol.py` there read the same in a traceback and a grep."""
    seen: dict[str, list[str]] = {}
    for path in ROOT.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(path.name, []).append(_module(path))
    assert not {n: m for n, m in seen.items() if len(m) > 1}


def test_rooms_import_downward_only():
    assert not upward_imports(_graph()), "\n".join(upward_imports(_graph()))


def test_a_planted_upward_import_is_caught(tmp_path):
    """The check above can fail: the store made to import the sweep is an upward import."""
    import shutil

    copy = tmp_path / "mlit"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    leases = copy / "store" / "leases.py"
    leases.write_text(
        leases.read_text() + "\n\ndef _planted():\n    from mlit.sweep import phases\n"
    )
    assert upward_imports(_graph(copy)) == [
        "mlit.store.leases (store) -> mlit.sweep (sweep)",
        "mlit.store.leases (store) -> mlit.sweep.phases (sweep)",
    ]


def test_no_cycle_between_rooms_or_modules():
    graph = _graph()
    cycles = sorted(m for m in graph if m in _closure(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"
    rooms: dict[str, set[str]] = {name: set() for name in RANK}
    for src, targets in graph.items():
        if room_of(src):
            rooms[room_of(src)] |= {room_of(t) for t in targets if room_of(t)} - {room_of(src)}
    assert not [r for r in rooms if r in _closure(rooms, r)], rooms


def test_the_planner_imports_no_trainer_tune_demo_builder_or_engine():
    graph = _graph()
    forbidden = {
        "mlit.training.trainer",
        "mlit.training.trials",
        "mlit.demo.base_model",
        "mlit.demo.judge_model",
        "mlit.serving.engines.hf",
        "mlit.serving.engines.vllm",
        "mlit.serving.engines.scheduler",
        "mlit.serving.model_server",
        "mlit.serving.app",
    }
    for planner in ("mlit.planning.plan", "mlit.sweep.preview", "mlit.planning.model_keys"):
        assert not (_closure(graph, planner) & forbidden), planner


def test_the_model_server_names_no_engine():
    source = (ROOT / "serving" / "model_server.py").read_text("utf-8")
    for name in ('"hf"', '"vllm"', "'hf'", "'vllm'"):
        assert name not in source, name


def test_no_module_is_over_400_lines():
    long = {
        _module(p): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text("utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_mlit_name_in_the_docs_and_comments_exists():
    """A renamed or moved module or function leaves no stale `mlit.x.y` behind in ARCHITECTURE.md,
    README.md or the package's own docstrings and comments."""
    texts = [REPO / "README.md", REPO / "ARCHITECTURE.md", *ROOT.rglob("*.py")]
    dotted = re.compile(r"(?<![\w/])mlit(?:\.[A-Za-z_]\w*)+")
    # A file name, a logger name, and the rules id every mixture manifest carries (it is part of
    # every model key: renaming it would orphan every stored model).
    not_names = ("mlit.log", "mlit.engine", "mlit.mixtures")
    stale = {
        f"{path.name}: {name}"
        for path in texts
        for name in dotted.findall(path.read_text("utf-8"))
        if name not in not_names and "vllm" not in name and not _resolves(name)
    }
    assert not stale, sorted(stale)


def test_architecture_md_names_every_room_and_module():
    text = (REPO / "ARCHITECTURE.md").read_text("utf-8")
    for name, _ in ROOMS:
        assert f"{name}/" in text, f"room {name} is not in ARCHITECTURE.md"
    for module in _graph():
        if module not in ENTRY_POINTS and room_of(module):
            assert module.rpartition(".")[2] in text, f"{module} is not in ARCHITECTURE.md"
