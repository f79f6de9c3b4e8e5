"""The package's house rules, read from the code's own imports: data flows down, every import points down.

Each llmlab module belongs to a stage (its package, or the ground floor for the small shared modules at the top
of ``llmlab/``). A module may import its own stage and the stages below it, never one above, and never a sibling
stage of the same height; imports written inside functions count the same as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "llmlab"
MAX_LINES = 700

#: Height of each stage; a module may import only from its own stage or a lower height.
GROUND = {"config", "errors", "schema", "events", "tokens", "pricing", "paths", "serving", "sqlkit", "text"}
STAGES = {
    "ground": 0,
    "localmodel": 1,
    "store": 2,
    "collector": 2,
    "testing": 2,
    "plan": 3,
    "tracing": 4,
    "run": 5,
    "readback": 6,
    "analysis": 7,
    "view": 7,
    "results": 8,
    "report": 7.5,  # llmlab/report.py: the shareable HTML report; above analysis and view, below results
    "history": 9,
    "sweep": 10,
    "face": 11,  # llmlab/__init__.py: the public API
    "demo": 12,  # written on the public face, as a user's script would be
    "cli": 13,
    "main": 14,  # python -m llmlab
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "face"
    if parts[1] == "__main__":
        return "main"
    head = parts[1]
    if head in GROUND:
        return "ground"
    return head


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, module: str, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported llmlab module, names taken from it, line) for every import in the file, wherever it is written."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llmlab":
                    out.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llmlab":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if submodules:
                out.extend((s, [], node.lineno) for s in submodules)
                names = [n for n in names if f"{target}.{n}" not in known]
                if not names:
                    continue
            out.append((target, names, node.lineno))
    return out


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, list[str], int]]]]:
    modules = _modules()
    known = set(modules)
    return modules, {m: _imports(p, m, known) for m, p in modules.items()}


def test_no_module_is_over_700_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_module_has_a_known_stage():
    unknown = sorted(m for m in _modules() if _stage(m) not in STAGES)
    assert not unknown, f"give these a stage in STAGES: {unknown}"


def test_imports_point_down():
    _, graph = _graph()
    upward = []
    for module, imports in graph.items():
        here = _stage(module)
        for target, _names, line in imports:
            there = _stage(target)
            if there == here:
                continue
            if STAGES[there] >= STAGES[here]:
                upward.append(f"{module}:{line} imports {target} ({here} -> {there})")
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    _, graph = _graph()
    edges = {m: sorted({t for t, _n, _l in imports if t in graph and t != m}) for m, imports in graph.items()}
    # A package's __init__ importing its own submodules is how a package shows its face, not a circle.
    for m in edges:
        edges[m] = [t for t in edges[m] if not t.startswith(m + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_private_name_crosses_a_package_wall():
    _, graph = _graph()

    def package(m: str) -> str:
        parts = m.split(".")
        return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] not in GROUND) else "llmlab"

    crossing = []
    for module, imports in graph.items():
        for target, names, line in imports:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and package(target) != package(module):
                crossing.append(f"{module}:{line} takes {private} from {target}")
    assert not crossing, "\n".join(crossing)
