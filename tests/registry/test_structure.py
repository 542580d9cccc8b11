"""The house stays readable: no import circles in fastpeft/, each folder says its job in one line,
every package ships, and FASTPEFT_BACKEND is read in one place."""

import ast
from pathlib import Path

import tomllib

FASTPEFT = Path(__file__).resolve().parents[2] / "fastpeft"
ROOT = FASTPEFT.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in FASTPEFT.rglob("*.py") if "kernels" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fastpeft modules `path` imports (also inside functions): `from a import b` counts as
    importing a.b when that is a module, else a. Parents imported implicitly are not edges."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m for m in found if m in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_fastpeft():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["fastpeft.patch"], "the import scan found nothing: it is broken"
    assert _cycles(graph) == []


def test_the_scan_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_adapters_do_not_import_patch():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("fastpeft.adapters"):
            assert "fastpeft.patch" not in _imports(name, path, set(modules)), name


def test_every_folder_says_its_job_in_a_one_line_docstring():
    for init in [*FASTPEFT.rglob("__init__.py"), ROOT / "kernels" / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(init.read_text()), clean=False)
        assert doc, f"{init.relative_to(ROOT)} has no docstring"
        assert len(doc.splitlines()[0]) > 20, f"{init.relative_to(ROOT)}: say the folder's job"


def test_every_package_is_listed_for_installation():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    packages = {_module_name(p) for p in FASTPEFT.rglob("__init__.py")}
    packages.discard("fastpeft.kernels")  # the folder is kernels/, mapped by package-dir
    assert packages <= listed, sorted(packages - listed)


def test_fastpeft_backend_is_read_in_one_place():
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in FASTPEFT.rglob("*.py")
        if "backend_override(" in path.read_text() and path.name != "env.py"
    ]
    assert readers == ["fastpeft/dispatch.py"]
    mentions = [
        path.relative_to(ROOT).as_posix()
        for path in FASTPEFT.rglob("*.py")
        if '"FASTPEFT_BACKEND"' in path.read_text()
    ]
    assert sorted(mentions) == ["fastpeft/dispatch.py", "fastpeft/env.py"]  # the reader, messages
