"""Run by gdb's Python on a loaded dump: each hung-task report's stack in the dump's own kernel log beside
kdlgdb's exact backtrace of the same task, as JSON (``compare(out)``); tests/test_unwind_kernels.py reads it."""
from __future__ import annotations

import json
import re
import traceback

_INFO_SYMBOL = re.compile(r"^(?P<name>\S+)(?: \+ (?P<offset>\d+))? in section")


def elf_name(k, frame) -> str:
    """A vmlinux frame named by gdb's minimal symbols (the ELF symbol table, as kallsyms names it: the nearest
    label, ``entry_SYSCALL_64_after_hwframe+0x6e``, ``f.constprop.0+0x33``); module frames as kdlgdb names them."""
    import gdb  # type: ignore[import-not-found]

    if frame.module is not None or not k.in_image(frame.pc):
        return frame.describe()
    m = _INFO_SYMBOL.match(gdb.execute(f"info symbol {k.unrelocate(frame.pc):#x}", to_string=True))
    return f"{m['name']}+{int(m['offset'] or 0):#x}" if m else frame.describe()


def kernel_pc(k, frame: str):
    """The address of a vmlinux frame the kernel printed (``name+0x6e``), or None (a module's, an unknown name)."""
    m = re.match(r"^(?P<name>[\w.$]+)\+0x(?P<offset>[0-9a-f]+)$", frame)
    address = k.symbol(m["name"]) if m else None
    return address + int(m["offset"], 16) if address is not None else None


def compare(out: str) -> None:
    try:
        from kdlgdb.analysis.kernlog import hung_task_stacks
        from kdlgdb.kernel.collect import collect
        from kdlgdb.kernel.layout import Kernel
        from kdlgdb.kernel.printk import kernel_log
        from kdlgdb.target.gdb import GdbTarget

        k = Kernel(GdbTarget())
        snap = collect(k, source_lines=False)
        stacks = hung_task_stacks(kernel_log(k, []))
        tasks = {t.pid: t for t in snap.tasks}
        doc = {"tasks": {}, "methods": {}}
        for task in snap.tasks:
            doc["methods"][task.unwinder] = doc["methods"].get(task.unwinder, 0) + 1
        for pid, frames in sorted(stacks.items()):
            task = tasks.get(pid)
            doc["tasks"][str(pid)] = {
                "kernel": frames,
                "ours": [elf_name(k, f) for f in task.frames] if task else None,
                "kernel_pcs": [kernel_pc(k, f) for f in frames],
                "ours_pcs": [f.pc for f in task.frames] if task else None,
                "comm": task.comm if task else None, "state": task.state if task else None,
                "method": task.unwinder if task else None, "error": task.unwind_error if task else None,
            }
        doc["errors"] = {str(t.pid): t.unwind_error for t in snap.tasks if t.unwind_error}
    except Exception:
        doc = {"exception": traceback.format_exc()}
    with open(out, "w") as f:
        json.dump(doc, f)
