"""The package's layers, as ARCHITECTURE.md draws them, hold: no module imports one of
a higher layer (or a sibling unit of its own layer), and no two modules import each
other at load time.

The imports are read from the source (``ast``), not by importing: every import
counts for the layers, wherever it is (a function body, ``if TYPE_CHECKING:``); for
cycles only those a module runs when it is loaded (its top level, outside
``if TYPE_CHECKING:``), the ones that can meet a half-initialised module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "desync_decl"

# Lowest first. A unit is a subpackage, or a top-level module named here; "base" is
# every other top-level module (and the package itself): they may import each other.
# A unit may import itself and the units of lower layers only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("formats", "signing"),
    ("chunker", "stores"),
    ("archive", "assemble", "manifest"),
    ("ops",),
    ("reconcile", "mount", "server"),
    ("cli",),
    ("__main__",),
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a package's own name for its __init__)
    line: int
    at_load: bool  # run when the importer is loaded (top level, not TYPE_CHECKING)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (a folder below ``root``) by dotted name."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def imports(root: Path, package: str) -> Iterator[Import]:
    """Every import of a module of ``package`` by a module of ``package``."""
    known = modules(root, package)
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        at_load = _load_time_nodes(tree)
        for node in ast.walk(tree):
            for target in _targets(node, name, is_package, known):
                if target.split(".")[0] == package:
                    yield Import(name, target, node.lineno, id(node) in at_load)


def _targets(node: ast.AST, importer: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return found or [base]


def _load_time_nodes(tree: ast.Module) -> set[int]:
    """The import statements run when the module loads: its top level and the
    ``if``/``try``/``with`` blocks there, but not ``if TYPE_CHECKING:``."""
    found: set[int] = set()

    def visit(body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                found.add(id(stmt))
            elif isinstance(stmt, ast.If):
                if not _is_type_checking(stmt.test):
                    visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                for block in (stmt.body, stmt.orelse, stmt.finalbody):
                    visit(block)
                for handler in stmt.handlers:
                    visit(handler.body)
            elif isinstance(stmt, ast.With):
                visit(stmt.body)

    visit(tree.body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def unit(module: str, root: Path, layers: Sequence[Sequence[str]] = LAYERS) -> str:
    """The unit a module belongs to: its subpackage, a top-level module named in
    ``layers``, or "base" for any other top-level module."""
    parts = module.split(".")
    if len(parts) >= 2 and (root / parts[0] / parts[1]).is_dir():
        return parts[1]
    if len(parts) == 2 and any(parts[1] in layer for layer in layers):
        return parts[1]
    return "base"


def upward_imports(
    found: Sequence[Import], layers: Sequence[Sequence[str]], root: Path
) -> list[str]:
    """Each import of a unit from a higher layer or a sibling of the same layer."""
    layer_of = {u: i for i, layer in enumerate(layers) for u in layer}
    wrong = []
    for imp in found:
        source, target = unit(imp.importer, root, layers), unit(imp.imported, root, layers)
        if source == target:
            continue
        if source not in layer_of or target not in layer_of:
            wrong.append(f"{imp.importer}:{imp.line}: unit {source} or {target} has no layer")
        elif layer_of[target] >= layer_of[source]:
            wrong.append(
                f"{imp.importer}:{imp.line} imports {imp.imported}"
                f" ({source}, layer {layer_of[source]} -> {target}, layer {layer_of[target]})"
            )
    return wrong


# Each cffi extension module (built by ext/, no .py source) and the one module that
# wraps it; everything else reaches the C code through the wrapper, so a layer's use of
# C is visible in its imports (formats/ has none of its own: ARCHITECTURE.md).
CFFI_WRAPPERS = {
    "desync_decl._chunker_cffi": "desync_decl.chunker",
    "desync_decl._siphash_cffi": "desync_decl.siphash",
    "desync_decl._goodbye_cffi": "desync_decl.goodbye_table",
    "desync_decl._filebatch_cffi": "desync_decl.file_batch",
    "desync_decl._repeats_cffi": "desync_decl.repeats",
    "desync_decl._outputbatch_cffi": "desync_decl.output_batch",
    "desync_decl._entrybatch_cffi": "desync_decl.entry_batch",
    "desync_decl._catar_cffi": "desync_decl.catar_leaves",
}


def cffi_imports(found: Sequence[Import], wrappers: dict[str, str]) -> list[str]:
    """Each import of a cffi extension module (``*_cffi``) by another module than its
    wrapper (an unknown extension has none)."""
    return [
        f"{imp.importer}:{imp.line} imports the C extension {imp.imported}"
        for imp in found
        if imp.imported.rsplit(".", 1)[-1].endswith("_cffi")
        and wrappers.get(imp.imported) != imp.importer
    ]


def import_cycles(found: Sequence[Import]) -> list[list[str]]:
    """The cycles of load-time imports between modules (each as a path that returns
    to its start), by a depth-first search."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if imp.at_load and imp.importer != imp.imported:
            graph.setdefault(imp.importer, set()).add(imp.imported)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


# --- the package ----------------------------------------------------------------------


def test_every_unit_of_the_package_has_a_layer():
    units = {unit(m, ROOT) for m in modules(ROOT, PACKAGE)}
    placed = {u for layer in LAYERS for u in layer}
    assert units == placed


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(list(imports(ROOT, PACKAGE)), LAYERS, ROOT) == []


def test_only_its_wrapper_imports_a_c_extension():
    assert cffi_imports(list(imports(ROOT, PACKAGE)), CFFI_WRAPPERS) == []


def test_no_modules_import_each_other_at_load_time():
    assert import_cycles(list(imports(ROOT, PACKAGE))) == []


def test_reading_an_index_does_not_load_the_chunker():
    """``formats`` is below ``chunker``: an index reader never loads its C extension."""
    reached, todo = set(), ["desync_decl.formats.index"]
    found = list(imports(ROOT, PACKAGE))
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [i.imported for i in found if i.importer == module and i.at_load]
    assert "desync_decl.chunker" not in reached


# --- the checker, on packages made for it -----------------------------------------------


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TOY_LAYERS = (("base",), ("low",), ("high",))


def test_the_checker_finds_a_planted_cycle(tmp_path):
    _package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/low/__init__.py": "",
            "toy/low/a.py": "from toy.low import b\n",
            "toy/low/b.py": "import toy.low.c\n",
            "toy/low/c.py": "from toy.low.a import thing\n",
        },
    )
    cycles = import_cycles(list(imports(tmp_path, "toy")))
    assert cycles == [["toy.low.a", "toy.low.b", "toy.low.c", "toy.low.a"]]


def test_an_import_inside_a_function_or_for_type_checking_is_no_cycle(tmp_path):
    _package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/low/__init__.py": "",
            "toy/low/a.py": "from toy.low import b\n",
            "toy/low/b.py": "def f():\n    from toy.low import a\n",
            "toy/low/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.low import d\n"
            ),
            "toy/low/d.py": "from toy.low import c\n",
        },
    )
    assert import_cycles(list(imports(tmp_path, "toy"))) == []


def test_the_checker_finds_an_upward_import_wherever_it_is(tmp_path):
    _package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/util.py": "",
            "toy/low/__init__.py": "",
            "toy/low/a.py": "from toy import util\n\ndef f():\n    from toy.high import b\n",
            "toy/high/__init__.py": "",
            "toy/high/b.py": "from toy.low import a\nfrom .. import util\n",
        },
    )
    wrong = upward_imports(list(imports(tmp_path, "toy")), TOY_LAYERS, tmp_path)
    assert wrong == ["toy.low.a:4 imports toy.high.b (low, layer 1 -> high, layer 2)"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from toy.high import b\n",
            ["toy.util:1 imports toy.high.b (base, layer 0 -> high, layer 2)"],
        ),
        (
            "from .high.b import x\n",
            ["toy.util:1 imports toy.high.b (base, layer 0 -> high, layer 2)"],
        ),
        ("from . import low\n", ["toy.util:1 imports toy.low (base, layer 0 -> low, layer 1)"]),
    ],
)
def test_a_base_module_may_not_import_a_layer_above(tmp_path, source, expected):
    _package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/util.py": source,
            "toy/low/__init__.py": "",
            "toy/high/__init__.py": "",
            "toy/high/b.py": "",
        },
    )
    assert upward_imports(list(imports(tmp_path, "toy")), TOY_LAYERS, tmp_path) == expected


def test_the_checker_finds_a_c_extension_imported_past_its_wrapper(tmp_path):
    _package(
        tmp_path,
        {
            "toy/__init__.py": "",
            "toy/fast.py": "from toy._fast_cffi import ffi, lib\n",
            "toy/low/__init__.py": "",
            "toy/low/a.py": "from toy import fast\nfrom toy._fast_cffi import lib\n",
            "toy/low/b.py": "import toy._other_cffi\n",
        },
    )
    found = list(imports(tmp_path, "toy"))
    assert upward_imports(found, TOY_LAYERS, tmp_path) == []  # all base: layers miss it
    assert cffi_imports(found, {"toy._fast_cffi": "toy.fast"}) == [
        "toy.low.a:2 imports the C extension toy._fast_cffi",
        "toy.low.b:1 imports the C extension toy._other_cffi",
    ]
