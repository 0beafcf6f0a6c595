"""emc's modules import in one direction: a walk of every import statement in emc/ (module level and inside
functions alike) finds no circle, so a package never needs a module that needs it back."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emc"


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name, path, modules):
    """The emc modules one file imports: `from X import a` names X.a when that is a module, else X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph():
    modules = all_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_known_imports():
    graph = import_graph()
    assert "emc.errors" in graph["emc.platforms.k210.kmodel"]
    assert len(graph) > 50


def test_a_planted_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_in_emc():
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_k210_formats_build_on_the_shared_core_never_the_reverse():
    """chip/ (what the K210 computes) needs nothing else of the platform; lowering/ needs chip/ only; v3/ and v4/
    need chip/ and lowering/ but never each other."""
    k210 = "emc.platforms.k210."
    may_use = {"chip": {"chip"}, "lowering": {"chip", "lowering"}, "v3": {"chip", "lowering", "v3"},
               "v4": {"chip", "lowering", "v4"}}
    wrong = []
    for name, deps in import_graph().items():
        part = name[len(k210):].split(".")[0] if name.startswith(k210) else None
        if part not in may_use:
            continue
        for dep in deps:
            if dep.startswith(k210) and dep[len(k210):].split(".")[0] not in may_use[part]:
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports against the K210 layering: " + "; ".join(sorted(wrong))
