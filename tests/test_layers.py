"""The layers (docs/architecture.md): a module imports only from its own layer or a lower one, only the two gdb
modules import ``gdb``, and the CLI's entry points into the gdb front end exist."""
from __future__ import annotations

import ast
from pathlib import Path

from kdlgdb import gdbrun

SRC = Path(__file__).parent.parent / "src" / "kdlgdb"

#: Lowest first. errors and model are what every layer shares.
LAYERS = (
    ("errors", "model"),
    ("target",),
    ("kernel",),
    ("analysis",),
    ("render",),
    ("frontends",),
    ("cli", "report", "gdbrun"),
)
# frontends/task.py is kd-task's gdb unwinder (gdb.unwinder), a part of the gdb front end.
GDB_MODULES = {"target/gdb.py", "frontends/gdb.py", "frontends/task.py"}


def _layer(module: str) -> int:
    """The layer of ``kdlgdb.X...`` (or of the package itself: the top)."""
    parts = module.split(".")
    if parts == ["kdlgdb", "__version__"]:
        return 0  # a constant of the package's __init__, which imports nothing
    if parts == ["kdlgdb"] or parts[1] == "__init__":
        return len(LAYERS)
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, at any depth (lazy imports count too)."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x, from .. import y
                    out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
                    continue
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for path in _sources():
        mine = _layer(_module_name(path))
        for line, module in _imports(path):
            if module.startswith("kdlgdb.") and _layer(module) > mine:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert wrong == []


def test_only_the_gdb_modules_import_gdb() -> None:
    importers = {str(path.relative_to(SRC)) for path in _sources()
                 for _, module in _imports(path) if module == "gdb" or module.startswith("gdb.")}
    assert importers == GDB_MODULES


def test_the_layer_test_sees_an_arrow_up() -> None:
    """The rule itself: kernel -> analysis is an arrow up; analysis -> kernel is not."""
    assert _layer("kdlgdb.analysis.kernlog") > _layer("kdlgdb.kernel.info")
    assert _layer("kdlgdb.kernel.functions") < _layer("kdlgdb.analysis.graph")
    assert _layer("kdlgdb.report") > _layer("kdlgdb.frontends.gdb") > _layer("kdlgdb.render.report")


def test_the_entry_points_the_cli_calls_exist() -> None:
    """gdbrun pastes these names into a ``gdb -ex python`` line: each must be a function of the gdb front end
    with those parameters (a rename that forgets gdbrun fails here, not only in a real-kernel test)."""
    path = SRC.parent / (gdbrun.FRONT_END.replace(".", "/") + ".py")
    functions = {node.name: node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
    for name, params in gdbrun.ENTRY_POINTS.items():
        assert name in functions, name
        assert tuple(a.arg for a in functions[name].args.args) == params, name
    assert {gdbrun.BATCH, gdbrun.BATCH_BUNDLE, gdbrun.BATCH_OPEN, gdbrun.REGISTER} == set(gdbrun.ENTRY_POINTS)


def test_no_source_file_is_over_600_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_the_report_style_sheet_is_package_data() -> None:
    """render/report_html.py reads report.css beside itself: from src/ (gdbext/kdlgdb.py) and when installed,
    where setup.cfg's package_data must carry it."""
    from kdlgdb.render.report_html import CSS_FILE

    assert CSS_FILE.is_file() and CSS_FILE.parent == SRC / "render"
    cfg = (SRC.parent.parent / "setup.cfg").read_text()
    assert "[options.package_data]" in cfg and "kdlgdb.render = *.css" in cfg
