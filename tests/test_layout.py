"""The house rules of the package, checked on its source (README, "Layout")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "semmech"
MODULES = sorted(SRC.rglob("*.py"))
# Imports allowed inside functions: none. Optional dependencies would be listed here with the
# reason; every dependency of semmech is a hard dependency in pyproject.toml.
OPTIONAL_IMPORTS: dict[str, str] = {}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    return ".".join(("semmech", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


def test_no_private_name_crosses_a_module():
    crossing = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for alias in node.names:
                    if alias.name.startswith("_"):
                        crossing.append(f"{_module_name(path)}: {alias.name} from {node.module}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                # module._private: a name of another module reached through its module object
                if isinstance(node.value, ast.Name) and node.value.id in {"io", "np", "torch"}:
                    crossing.append(f"{_module_name(path)}: {node.value.id}.{node.attr}")
    assert crossing == []


def test_imports_sit_at_module_level():
    local = []
    for path in MODULES:
        for fn in ast.walk(_tree(path)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        names = [a.name for a in node.names]
                        mod = getattr(node, "module", None) or names[0]
                        if mod.split(".")[0] not in OPTIONAL_IMPORTS:
                            local.append(f"{_module_name(path)}.{fn.name}: {mod}")
    assert local == []


def test_subpackage_inits_import_nothing():
    for init in SRC.rglob("__init__.py"):
        tree = _tree(init)
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], init


def test_the_import_graph_has_no_cycles():
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        name = _module_name(path)
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = graph.setdefault(name, set())
        for node in _tree(path).body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(
                        full if (SRC.parent / (full.replace(".", "/") + ".py")).exists() else target
                    )
    seen: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if seen.get(n) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [n]))
        if seen.get(n) == 2:
            return
        seen[n] = 1
        for d in graph.get(n, ()):
            if d in graph:
                visit(d, trail + [n])
        seen[n] = 2

    for n in graph:
        visit(n, [])


def test_the_grid_lookup_exists_once():
    """(beta, gamma) configurations are found by one function with one tolerance."""
    users = [_module_name(p) for p in MODULES if "isclose" in p.read_text()]
    assert users == ["semmech.cluster.grid"]


@pytest.mark.parametrize(
    "module",
    [
        "semmech.config",
        "semmech.prompts",
        "semmech.io",
        "semmech.startup",
        "semmech.model.source",
        "semmech.model.transcoder_format",
        "semmech.views.embedding_source",
        "semmech.steer.settings",
        "semmech.cluster.grid",
    ],
)
def test_modules_the_snakefile_imports_do_not_import_torch(module):
    """The Snakefile is parsed once per job on a cluster: its imports must stay light."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_workflow_scripts_call_one_stage_function_with_keywords():
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        tree = _tree(script)
        stage_imports = [
            n
            for n in tree.body
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("semmech.stages.")
        ]
        assert len(stage_imports) == 1 and len(stage_imports[0].names) == 1, script
        fn = stage_imports[0].names[0].name
        assert fn.startswith("run_"), script
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == fn
        ]
        assert len(calls) == 1 and not calls[0].args, f"{script}: call {fn} once, keywords only"


# Modules that write files outside the run directory, which carry no integrity records.
WRITERS_OUTSIDE_THE_RUN = {
    "semmech.logs": "job logs (results/<run>/logs/, left out of the manifest)",
    "semmech.model.loading": "the prepared default model under resources/, renamed into place whole",
    "semmech.stages.paper": "the LaTeX build directory paper/build/, outside the run",
}
WRITE_METHODS = {"to_csv", "to_parquet", "to_json", "savefig", "write_text", "write_bytes"}
WRITE_FUNCTIONS = {("json", "dump"), ("np", "save"), ("np", "savez"), ("yaml", "safe_dump")}


def _is_atomic_path(item: ast.withitem) -> bool:
    call = item.context_expr
    return isinstance(call, ast.Call) and (
        (isinstance(call.func, ast.Attribute) and call.func.attr == "atomic_path")
        or (isinstance(call.func, ast.Name) and call.func.id == "atomic_path")
    )


def _raw_writes(node: ast.AST, inside_atomic: bool = False):
    """Calls that write a file, outside a ``with atomic_path(...)`` block."""
    if isinstance(node, ast.With) and any(_is_atomic_path(i) for i in node.items):
        inside_atomic = True
    if isinstance(node, ast.Call) and not inside_atomic:
        f = node.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr in WRITE_METHODS
            and not (isinstance(f.value, ast.Name) and f.value.id == "io")  # io.write_text
        ):
            yield node.lineno, f.attr
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and (f.value.id, f.attr) in WRITE_FUNCTIONS
            and not (f.attr == "safe_dump" and len(node.args) < 2)  # to a string
        ):
            yield node.lineno, f"{f.value.id}.{f.attr}"
        if isinstance(f, ast.Name) and f.id == "open":
            mode = node.args[1] if len(node.args) > 1 else None
            mode = next((k.value for k in node.keywords if k.arg == "mode"), mode)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                yield node.lineno, f"open(..., {mode.value!r})"
    for child in ast.iter_child_nodes(node):
        yield from _raw_writes(child, inside_atomic)


def test_every_run_file_is_written_through_semmech_io():
    """semmech.io's writers record each file's sha256 beside it (``<file>.sha256``) and every
    reader checks it; a file written around them would have no record (or a stale one)."""
    raw = [
        f"{_module_name(path)}:{line} {what}"
        for path in MODULES
        if path.name != "io.py" or path.parent != SRC
        if _module_name(path) not in WRITERS_OUTSIDE_THE_RUN
        for line, what in _raw_writes(_tree(path))
    ]
    assert raw == []
