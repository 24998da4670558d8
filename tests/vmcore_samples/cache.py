"""The sample builder's cache: where dumps and builds go, what a kernel and the host need, what a scenario
expects, and the key that tells a cached dump from an outdated one.

``<cache>/vmcores/<kernel>/<scenario>-<key>/`` holds one scenario's dumps; ``<key>`` hashes the scenario's files,
the sample's run, the kernel (and for a kernel of ours its source and config) and the builder's code
(:data:`BUILDER_FILES`, by definition: see :func:`definitions`). ``build.py`` describes the whole pipeline.
"""
from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import kernelbuild  # kernels of our own; keyed by their source and config
from catalog import ALL_KINDS, BUILT_KERNELS, DEFAULT_KERNEL, lockdep, sample

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"
BUSYBOX = Path("/bin/busybox")  # from busybox-static
QEMU = "qemu-system-x86_64"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """Something in the pipeline failed; the message says what and shows context."""


def log_stderr(msg: str) -> None:
    print(f"[kdl-build] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Paths, requirements, cache keys
# --------------------------------------------------------------------------

def cache_root() -> Path:
    """``$KDLGDB_CACHE``, or ``~/.cache/kdlgdb``."""
    env = os.environ.get("KDLGDB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdlgdb"


def kernel_paths(kernel: str) -> dict[str, Path]:
    """Where Debian puts the pieces of ``kernel`` this pipeline needs; for a kernel of ours
    (``BUILT_KERNELS``), where its build in the cache has them (see ``kernelbuild.py``)."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.paths(BUILT_KERNELS[kernel], cache_root())
    return {
        "vmlinux": Path(f"/usr/lib/debug/boot/vmlinux-{kernel}"),
        "vmlinuz": Path(f"/boot/vmlinuz-{kernel}"),
        "headers": Path(f"/lib/modules/{kernel}/build"),
        "modules": Path(f"/lib/modules/{kernel}"),
        "config": Path(f"/boot/config-{kernel}"),
    }


def kernel_release(kernel: str) -> str:
    """``uname -r`` of ``kernel`` (the OSRELEASE of its dumps): its name for Debian's, the built release
    for ours ('' before it is built)."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.release(BUILT_KERNELS[kernel], cache_root())
    return kernel


def ensure_kernel(kernel: str, log: Log = log_stderr) -> None:
    """Build ``kernel`` if it is one of ours and the cache lacks it (nothing to do for Debian's)."""
    bk = BUILT_KERNELS.get(kernel)
    if bk is None or kernelbuild.built(bk, cache_root()):
        return
    top = kernelbuild.kernel_dir(bk, cache_root())
    with file_lock(top.with_name(top.name + ".lock")):
        if not kernelbuild.built(bk, cache_root()):
            try:
                kernelbuild.build(bk, cache_root(), log)
            except kernelbuild.KernelBuildError as exc:
                raise BuildError(str(exc)) from None


def missing_kernel_parts(kernel: str) -> list[str]:
    """Human-readable list of what is missing for ``kernel`` (empty when complete). A kernel of ours
    that is not built yet lacks nothing when it can be built: the builder builds it on first use."""
    if kernel in BUILT_KERNELS:
        return kernelbuild.missing(BUILT_KERNELS[kernel])
    paths = kernel_paths(kernel)
    missing = []
    if not paths["vmlinux"].is_file():
        missing.append(f"{paths['vmlinux']} (apt-get install linux-image-{kernel}-dbg)")
    if not paths["vmlinuz"].is_file():
        missing.append(f"{paths['vmlinuz']} (apt-get install linux-image-{kernel})")
    if not (paths["headers"] / "Makefile").is_file():
        missing.append(f"{paths['headers']}/Makefile (apt-get install linux-headers-{kernel})")
    return missing


def missing_tools() -> list[str]:
    """Host tools the builder runs, that are not installed."""
    missing = []
    for tool, package in ((QEMU, "qemu-system-x86"), ("make", "make"), ("gcc", "gcc"),
                          ("makedumpfile", "makedumpfile")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} (apt-get install busybox-static)")
    return missing


def kernel_available(kernel: str = DEFAULT_KERNEL) -> bool:
    """True when the vmlinux with DWARF, the vmlinuz and the headers of ``kernel`` are present."""
    return not missing_kernel_parts(kernel)


def scenario_files(scenario: str) -> list[Path]:
    """The files that define ``scenario``'s module (source, Kbuild, expected.json); a sample name works too."""
    folder = SCENARIO_DIR / sample(scenario).scenario
    if not folder.is_dir():
        raise BuildError(f"unknown scenario {scenario!r}: no folder {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file())


def expected(scenario: str, kernel: str = "") -> dict[str, Any]:
    """The scenario's ``expected.json`` (wait-for facts, cycles, lock types); for ``kernel``, with the shape the
    same code takes there (:func:`for_kernel`)."""
    return for_kernel(json.loads((SCENARIO_DIR / sample(scenario).scenario / "expected.json").read_text()), kernel)


def for_kernel(exp: dict[str, Any], kernel: str) -> dict[str, Any]:
    """``exp`` for one kernel: a scenario whose code behaves differently on PREEMPT_RT (spinlock_t is an
    rt_mutex there, softirqs run in threads) gives that shape under ``"preempt_rt"``, key by key; one whose
    answer differs with lockdep under ``"lockdep"`` (its held_locks and DEBUG_SPINLOCK name owners the other
    kernels only infer; DEBUG_RT_MUTEXES's deadlock detection parks a task in S). The flavour is Debian's
    package name (``-rt-``) or the catalog's (:func:`lockdep`)."""
    if "-rt-" in kernel and "preempt_rt" in exp:
        exp = {**exp, **exp["preempt_rt"]}
    if lockdep(kernel) and "lockdep" in exp:
        exp = {**exp, **exp["lockdep"]}
    return exp


def sleeping_states(exp: dict[str, Any]) -> dict[str, str]:
    """The state each thread of a sleeping scenario is in once blocked: D, unless ``"states"`` says otherwise
    (alternatives as "D|S": which thread the kernel parks can depend on the boot)."""
    return {comm: exp.get("states", {}).get(comm, "D") for comm in exp["tasks"]}


# The files whose code makes a dump: the scenario's own files are added per scenario, the kernel's source and
# config through kernelbuild.kernel_key, the sample's run (module arguments, memory) through catalog.sample.
# tests/test_samples.py checks that every module of this directory the builder imports is here or in NOT_KEYED.
BUILDER_FILES = ("build.py", "cache.py", "initramfs.py", "init.sh", "guest.py", "truth.py", "formats.py")
NOT_KEYED = ("catalog.py", "kernelbuild.py")  # see above: what they contribute is hashed as data


def definitions(path: Path) -> list[tuple[str, str]]:
    """A Python file's top-level definitions as ``(name, syntax tree)`` pairs, without imports, comments
    and docstrings: moving a function from one builder file to another, or editing prose, keeps every
    key; any change to code, or to a string the code uses, changes them."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    pairs = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            name = ",".join(ast.unparse(t) for t in targets)
        else:
            name = ""  # a statement of its own (sys.path.insert, the __main__ block): its tree names it
        pairs.append((name, ast.dump(node)))
    return pairs


def builder_digest(files: tuple[str, ...] = BUILDER_FILES, folder: Path = HERE) -> bytes:
    """The code of the builder: every definition of its Python files (sorted, whatever file holds it),
    and the bytes of the others (the /init template)."""
    pairs: list[tuple[str, str]] = []
    for name in files:
        path = folder / name
        if path.suffix == ".py":
            pairs += definitions(path)
        else:
            pairs.append((name, path.read_text()))
    return "\0".join(f"{name}\0{tree}" for name, tree in sorted(pairs)).encode()


@functools.lru_cache(maxsize=1)
def this_builder() -> bytes:
    """This builder's :func:`builder_digest`, read once a process: an edit during a run does not split its dumps
    between two keys."""
    return builder_digest()


def scenario_key(scenario: str, kernel: str) -> str:
    """Short hash of the scenario's files, the builder's code and the kernel version."""
    h = hashlib.sha256()
    h.update(f"kernel={kernel}\n{sample(scenario)}\n".encode())
    if kernel in BUILT_KERNELS:  # its source version and config
        h.update(kernelbuild.kernel_key(BUILT_KERNELS[kernel]).encode())
    h.update(this_builder())
    for path in scenario_files(scenario):
        h.update(f"\0{path.name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def dump_dir(scenario: str, kernel: str = DEFAULT_KERNEL) -> Path:
    """The cache directory that holds (or will hold) the scenario's dumps."""
    return cache_root() / "vmcores" / kernel / f"{scenario}-{scenario_key(scenario, kernel)}"


def build_dir(scenario: str, kernel: str = DEFAULT_KERNEL) -> Path:
    """The cache directory for the scenario's module build and initramfs."""
    return cache_root() / "build" / kernel / f"{scenario}-{scenario_key(scenario, kernel)}"


def variant_name(kaslr: bool) -> str:
    return "kaslr" if kaslr else "nokaslr"


def variant_kinds(scenario: str) -> dict[str, str]:
    """The dump kinds a scenario's variants come in (kind -> file name suffix)."""
    return {kind: ALL_KINDS[kind] for kind in sample(scenario).kinds}


def variant_files(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> dict[str, Path]:
    """Paths of one variant's outputs: truth, console and a dump per kind ("elf", "phys", ...)."""
    d = dump_dir(scenario, kernel)
    v = variant_name(kaslr)
    files = {
        "truth": d / f"truth-{v}.json",
        "console": d / f"console-{v}.log",
    }
    for kind, suffix in variant_kinds(scenario).items():
        files[kind] = d / f"vmcore-{v}{suffix}"
    return files


def variant_complete(scenario: str, kaslr: bool, kernel: str = DEFAULT_KERNEL) -> bool:
    return all(p.is_file() for p in variant_files(scenario, kaslr, kernel).values())


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two test runs do not build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])

