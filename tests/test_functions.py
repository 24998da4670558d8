"""One vocabulary of kernel function names (kdlgdb.kernel.functions): no other module keeps its own list."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from kdlgdb.kernel import functions
from kdlgdb.model import Frame

SRC = Path(__file__).parent.parent / "src" / "kdlgdb"
NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")


def _literal_names(node: ast.AST) -> set[str]:
    """The identifier-like strings in the set, tuple, list, frozenset() or dict values of a literal."""
    names: set[str] = set()
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("frozenset", "set", "tuple") and node.args:
        return _literal_names(node.args[0])
    if isinstance(node, ast.BinOp):
        return _literal_names(node.left) | _literal_names(node.right)
    if isinstance(node, ast.Dict):
        for value in node.values:
            names |= _literal_names(value)
        return names
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        for elt in node.elts:
            if isinstance(elt, ast.Constant) and isinstance(elt.value, str) and NAME.match(elt.value):
                names.add(elt.value)
            elif isinstance(elt, (ast.Set, ast.Tuple, ast.List)):
                names |= _literal_names(elt)
    return names


def _name_sets() -> dict[str, dict[str, set[str]]]:
    """module -> constant -> the names its module-level literal defines (two or more names)."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for stmt in tree.body:
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
                name = getattr(target, "id", None)
                names = _literal_names(stmt.value)
                if name and name != "__all__" and len(names) >= 2:
                    found.setdefault(str(path.relative_to(SRC)), {})[name] = names
    return found


def test_no_two_modules_define_overlapping_name_sets() -> None:
    """No two modules define sets of kernel function names (names of the vocabulary) that overlap: a new
    list of function names goes into kernel/functions.py. (Sets of other names, registers or labels, may.)"""
    sets = _name_sets()
    vocabulary = set().union(*sets["kernel/functions.py"].values())
    modules = sorted(sets)
    clashes = []
    for i, a in enumerate(modules):
        names_a = set().union(*sets[a].values())
        for b in modules[i + 1:]:
            names_b = set().union(*sets[b].values())
            common = names_a & names_b & vocabulary
            if common:
                clashes.append((a, b, sorted(common)[:5]))
    assert clashes == []


def test_the_vocabulary_is_found_by_the_scan() -> None:
    sets = _name_sets()["kernel/functions.py"]
    assert "down_read_non_owner" in sets["ACQUIRE"] and "mutex_lock" in sets["SLOW_PATHS"] and "msleep" in sets["SLEEPS"] and "__schedule" in sets["SCHEDULER"]


def test_no_sleep_is_scheduler_plumbing() -> None:
    """A name in SLEEPS that SCHEDULER skips first could never match."""
    assert not functions.SLEEPS & functions.SCHEDULER
    assert not functions.COMPLETION_WAITS & functions.SCHEDULER


def test_every_public_acquire_of_a_sleeping_lock_is_an_acquire() -> None:
    """rt_mutex's API of mutexes and rwsems (their public entry points) and the slow paths' entry points
    are acquisitions for the held-lock inference too (down_read_non_owner was missing)."""
    public = {fn for kind in ("mutex", "rwsem") for fn in functions.RT_API[kind] if not fn.startswith("__")}
    assert public <= functions.ACQUIRE
    assert "down_read_non_owner" in functions.ACQUIRE and "up_read_non_owner" in functions.RELEASE


def test_frames() -> None:
    frames = [Frame(1, "__schedule", 0x10), Frame(2, "schedule", 0x10), Frame(3, "io_schedule", 0x1),
              Frame(4, "msleep", 0x2d), Frame(5, "ret_from_fork", 0x1f)]
    assert functions.past_scheduler(frames) == 3
    assert functions.io_wait(frames) == "io_schedule"
    assert functions.interesting_frame(frames) is frames[3]
    assert functions.slow_path(frames) is None
    assert functions.slow_path(frames[:3] + [Frame(6, "__mutex_lock.constprop.0", 0x1ed)]) == ("mutex", 3)
