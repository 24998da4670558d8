"""What a sample guest boots: the scenario's module built against the kernel's headers, and an initramfs with
busybox, the kernel's own modules the scenario needs, and the ``/init`` script (``init.sh``, filled in per
scenario and kernel)."""
from __future__ import annotations

import lzma
import shutil
import stat
import subprocess
import time
from pathlib import Path

from cache import (BUSYBOX, HERE, SCENARIO_DIR, BuildError, Log, build_dir, ensure_kernel, expected, kernel_paths,
                   log_stderr, scenario_files, sleeping_states, tail)
from catalog import sample

MAKE_TIMEOUT = 300.0


def build_module(scenario: str, kernel: str, force: bool = False, log: Log = log_stderr) -> Path:
    """Compile the scenario module out of tree (in the cache) and return the .ko path."""
    bdir = build_dir(scenario, kernel) / "module"
    ko = bdir / f"{sample(scenario).scenario}.ko"
    if ko.is_file() and not force:
        return ko
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)
    for path in scenario_files(scenario):
        if path.suffix == ".c" or path.name == "Kbuild":
            shutil.copy2(path, bdir / path.name)
    ensure_kernel(kernel, log)
    headers = kernel_paths(kernel)["headers"]
    cmd = ["make", "-C", str(headers), f"M={bdir}", "modules"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=MAKE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{' '.join(cmd)} took more than {MAKE_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0 or not ko.is_file():
        raise BuildError(f"building {scenario}.ko failed ({' '.join(cmd)}):\n{tail(proc.stdout)}")
    log(f"{scenario}: module for {kernel} built in {time.monotonic() - t0:.1f} s")
    return ko


def fw_cfg_module(kernel: str) -> bytes:
    """The kernel's qemu_fw_cfg module, decompressed (6.1 ships .ko, 6.12 .ko.xz)."""
    base = kernel_paths(kernel)["modules"] / "kernel" / "drivers" / "firmware"
    for path in (base / "qemu_fw_cfg.ko", base / "qemu_fw_cfg.ko.xz", base / "qemu_fw_cfg.ko.zst"):
        if path.is_file():
            return _module_bytes(path)
    raise BuildError(f"no qemu_fw_cfg module under {base}: without it -device vmcoreinfo stays empty")


def _module_bytes(path: Path) -> bytes:
    """A kernel module file's contents, decompressed (.ko, .ko.xz, .ko.zst)."""
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".zst":
        if shutil.which("zstd") is None:
            raise BuildError(f"{path} needs zstd to decompress (apt-get install zstd)")
        return subprocess.run(["zstd", "-dc", str(path)], check=True, stdout=subprocess.PIPE,
                              timeout=60).stdout
    return path.read_bytes()


def guest_modules(scenario: str, kernel: str) -> list[tuple[str, bytes]]:
    """The kernel's own modules a scenario's guest script needs (``expected.json`` ``guest_modules``,
    e.g. brd, ext4), with what they depend on, in load order: ``[(name, contents)]``. A module
    built into this kernel (``modules.builtin``) is left out."""
    wanted = expected(scenario).get("guest_modules", [])
    if not wanted:
        return []
    root = kernel_paths(kernel)["modules"]
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_ko_name(path): path for path in deps}
    builtin = {_ko_name(line) for line in (root / "modules.builtin").read_text().split()}
    order: list[str] = []

    def add(path: str) -> None:
        for dep in deps.get(path, []):
            add(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        if name in by_name:
            add(by_name[name])
        elif name not in builtin:
            raise BuildError(f"{scenario} needs module {name}, which {kernel} neither has nor builds in")
    return [(_ko_name(path), _module_bytes(root / path)) for path in order]


def _ko_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` -> ``ext4``."""
    return Path(path).name.split(".ko", 1)[0]


INIT_TEMPLATE = HERE / "init.sh"  # the guest's /init, with @...@ words filled in by init_script


def init_script(scenario: str, kernel: str = "") -> str:
    """The guest's /init for ``scenario`` on ``kernel``."""
    exp, run = expected(scenario, kernel), sample(scenario)
    blocked = "|".join(["kdl_*:D"] + [f"{comm}:{alt}" for comm, st in sleeping_states(exp).items() if st != "D"
                                      for alt in st.split("|") if alt != "D"])
    return (INIT_TEMPLATE.read_text().replace("@MODULE@", run.scenario).replace("@ARGS@", run.args).replace("@BLOCKED@", blocked)
            .replace("@NTHREADS@", str(len(exp["tasks"])))
            .replace("@BLOCKED_WHEN_LOADED@", "yes" if exp.get("blocked_when_loaded") else "no")
            .replace("@GUEST_MODULES@", " ".join(name for name, _ in guest_modules(scenario, kernel)) if kernel else ""))


def cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """An uncompressed cpio archive in the kernel's ``newc`` format.

    ``entries`` are ``(name, mode, data, (rdev_major, rdev_minor))``; ``mode``
    includes the file type bits (``stat.S_IFDIR`` and so on).
    """
    out = bytearray()

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    def add(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(encoded)
        pad4()
        out.extend(data)
        pad4()

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(ino, name, mode, data, rdev)
    add(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def build_initramfs(scenario: str, kernel: str, force: bool = False, log: Log = log_stderr) -> Path:
    """Module + busybox + /init, packed as ``initramfs.cpio`` in the build cache."""
    path = build_dir(scenario, kernel) / "initramfs.cpio"
    if path.is_file() and not force:
        return path
    ko = build_module(scenario, kernel, force=force, log=log)
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [
        ("bin", d, b"", (0, 0)),
        ("dev", d, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("lib", d, b"", (0, 0)),
        ("lib/modules", d, b"", (0, 0)),
        ("proc", d, b"", (0, 0)),
        ("sys", d, b"", (0, 0)),
        ("tmp", d, b"", (0, 0)),
        ("init", x, init_script(scenario, kernel).encode(), (0, 0)),
        ("bin/busybox", x, BUSYBOX.read_bytes(), (0, 0)),
        ("lib/modules/qemu_fw_cfg.ko", f, fw_cfg_module(kernel), (0, 0)),
        (f"lib/modules/{ko.name}", f, ko.read_bytes(), (0, 0)),
        ("lib/modules/guest", d, b"", (0, 0)),
    ]
    entries += [(f"lib/modules/guest/{name}.ko", f, data, (0, 0)) for name, data in guest_modules(scenario, kernel)]
    guest = SCENARIO_DIR / sample(scenario).scenario / "guest.sh"
    if guest.is_file():
        entries.append(("guest.sh", f, guest.read_bytes(), (0, 0)))
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(cpio_newc(entries))
    tmp.rename(path)
    return path


