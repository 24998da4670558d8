"""Scale: the kdl_scale sample with 1,000 kthreads, on a real dump and live (bench/bench_scale.py
runs the 5,000 and 10,000 ones). Every answer is checked against the guest's own truth: its three
hidden cycles exactly, every chain by its root and size, the counts (tests/expectations.check_scale).
"""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import time

import pytest
import samples
from expectations import check_scale
from realgdb import EXTENSION, gdb, waitfor_json

SAMPLE = "kdl_scale_1k"


def test_scale_samples_load_one_module_with_their_thread_count() -> None:
    assert [samples.builder.sample(s).args for s in samples.SCALE_SAMPLES] == ["n=1000", "n=5000", "n=10000"]
    assert samples.builder.scenario_key("kdl_scale_1k", "k") != samples.builder.scenario_key("kdl_scale_5k", "k")
    init = samples.builder.init_script("kdl_scale_5k")
    assert "insmod /lib/modules/kdl_scale.ko n=5000;" in init
    assert "if [ yes = yes ]; then\n    say \"KDL-BLOCKED\"" in init  # the module says when it is done
    assert "if [ no = yes ]" in samples.builder.init_script("kdl_abba")


def test_compact_truth_is_parsed() -> None:
    console = """\
[    6.5] kdl-truth task kdl_s7 101
[    6.5] kdl-truth task kdl_s3 97
[    6.5] kdl-truth cycle A kdl_s7:mutex:ffff888003000008 kdl_s3:rwsem-read:ffffffffc0432000
[    6.5] kdl-truth behind A 8
[    6.5] kdl-truth chain 220 3 1
[    6.5] kdl-truth count blocked 200
kdl-info text ffffffff81000000
"""
    truth = samples.builder.make_truth(console, SAMPLE, samples.DEFAULT_KERNEL, kaslr=False)
    assert truth["cycles"] == {"A": {"members": [
        {"comm": "kdl_s7", "kind": "mutex", "address": "0xffff888003000008", "pid": 101},
        {"comm": "kdl_s3", "kind": "rwsem-read", "address": "0xffffffffc0432000", "pid": 97}], "behind": 8}}
    assert truth["chains"] == [{"root": 220, "blocked": 3, "locks": 1}]
    assert truth["counts"] == {"blocked": 200} and truth["module"] == "kdl_scale"
    with pytest.raises(samples.BuildError, match="no kdl-truth chains lines"):
        samples.builder.make_truth(console.replace("chain 220", "chian 220"), SAMPLE, samples.DEFAULT_KERNEL, False)


@pytest.mark.realkernel

def test_waitfor_on_the_1k_dump(real_kernel: str) -> None:
    dump = samples.ensure_dump(SAMPLE, kaslr=True, kernel=real_kernel)
    assert dump.truth["counts"]["threads"] == 1000 and dump.truth["counts"]["blocked"] == 200
    status, doc = waitfor_json(dump.vmlinux, dump.path)
    check_scale(doc, dump.truth)
    assert status == 1
    assert doc["release"] == samples.release(real_kernel)
    assert int(doc["kaslr_offset"], 16) == dump.kernel_offset


@pytest.mark.realkernel
def test_waitfor_on_a_live_1k_guest_reads_in_bulk(real_kernel: str) -> None:
    """Over the gdbstub: the same answer, and two reads per task (its task_struct, its stack) plus a
    number that does not grow with the tasks: probes for the KASLR slide (at most 512), the locks, the
    code around return addresses."""
    with samples.boot_live(SAMPLE, kaslr=True, kernel=real_kernel) as live:
        remote = f"127.0.0.1:{live.gdb_port}"
        status, doc = waitfor_json(live.vmlinux, remote=remote)
        check_scale(doc, live.truth)
        assert status == 1
        done = gdb(live.vmlinux, None, "kd-tasks",
                   "python import kdlgdb.frontends.gdb as f; print('kdl-reads', f.kernel().target.reads)", remote=remote)
    tasks = len([line for line in done.stdout.splitlines() if re.match(r">?\s+\d+\s+\d+\s+[0-9a-f]+\s+[A-Z]\s", line)])
    reads = int(re.search(r"^kdl-reads (\d+)$", done.stdout, re.MULTILINE).group(1))
    assert tasks > live.truth["counts"]["threads"]
    # The part that does not grow with the tasks: the KASLR probes (512), the locks and the code around return
    # addresses, and since session 6 the ORC tables (one orc_lookup block per code region unwound) and the slab
    # pages of heap locks. The lock-debugging kernel (-Os, lockdep's code between every lock call) needs ~2,000
    # of them on this sample, Debian's kernels fewer; still per sample, not per task.
    assert reads <= 2 * tasks + 512 + 2000, f"{reads} reads for {tasks} tasks"


class Terminal:
    """gdb on a pseudo-terminal: what a user types, and what they see."""

    def __init__(self, *argv: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], list(argv), dict(os.environ, TERM="dumb"))
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 120) -> str:
        """Read until ``pattern`` (a regular expression) shows up in the new output; return that output."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while not re.search(pattern, self.seen[start:]):
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {pattern!r} within {timeout} s; the terminal shows:\n{self.seen[-3000:]}")
            self.seen += os.read(self.fd, 65536).decode(errors="replace")
        return self.seen[start:]

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        os.close(self.fd)


@pytest.mark.realkernel
def test_ctrl_c_stops_kd_waitfor_and_gdb_goes_on(real_kernel: str) -> None:
    """A real ^C on gdb's terminal during kd-waitfor: the progress line goes, one line says so, no
    traceback; gdb answers, and kd-waitfor then runs to the end. A test hook slows each progress report
    down, so that the ^C lands inside the analysis (the 1k dump takes well under a second)."""
    dump = samples.ensure_dump(SAMPLE, kaslr=True, kernel=real_kernel)
    prompt = r"\(gdb\) $"
    term = Terminal("gdb", "-nx", "-q", str(dump.vmlinux), str(dump.path), "-ex", "set pagination off",
                    "-ex", f"source {EXTENSION}", "-ex", "set kd-color off")
    try:
        term.expect(prompt)
        term.type("python import time, kdlgdb.frontends.gdb as f; f.fast = f._progress; "
                  "f._progress = lambda *a: (f.fast(*a), time.sleep(0.3))\n")
        term.expect(prompt)
        term.type("kd-waitfor\n")
        term.expect(r"kdlgdb: tasks \d+")  # progress, on a terminal
        term.type("\x03")
        stopped = term.expect(prompt)
        assert re.search(r"\r\x1b\[K\s*kd-waitfor: interrupted\r?\n", stopped), repr(term.seen[-2000:])
        assert "Traceback" not in stopped and "DEADLOCK" not in stopped
        term.type("print 6 * 7\n")
        assert "$1 = 42" in term.expect(prompt)
        term.type("python f._progress = f.fast\n")
        term.expect(prompt)
        term.type("kd-waitfor\n")
        shown = term.expect(prompt)
        pids = sorted(m["pid"] for m in dump.truth["cycles"]["A"]["members"])
        assert re.search(rf"\nDEADLOCK: \"kdl_s\d+\" \(pid {pids[0]}\) and \"kdl_s\d+\" \(pid {pids[1]}\)", shown), shown
        assert "interrupted" not in shown
    finally:
        term.close()


# Run by gdb with a dump loaded: kdlgdb's own reads of the ELF file against gdb's reads of the same addresses.
_SAME_BYTES = r"""
import random, sys
sys.path.insert(0, SRC)
import gdb
from kdlgdb.target.gdb import GdbTarget
target = GdbTarget()
loads = sorted((v, m) for v, _, f, m, _ in target.dump.loads if v >= 0xffff800000000000 and m)
starts = {v for v, _ in loads}
across = [(v + m - 64, 128) for v, m in loads if v + m in starts][:200]  # reads over a segment boundary
rng = random.Random(7)
inside = [(v + rng.randrange(0, m - 256) // 8 * 8, 256) for v, m in rng.sample(loads, 300) if m > 256]
bad = [(a, n) for a, n in across + inside if target.read(a, n) != bytes(gdb.selected_inferior().read_memory(a, n))]
print("kdl-same", len(across), len(inside), len(bad), [hex(a) for a, _ in bad[:5]])
"""


@pytest.mark.realkernel
def test_dump_reader_gives_gdbs_bytes(real_kernel: str, tmp_path) -> None:
    """kdlgdb reads a gdb-loaded ELF vmcore itself (gdb's reads slow down with each vmapped stack's segment):
    the same bytes as gdb, inside segments and across the boundary of adjacent ones."""
    dump = samples.ensure_dump(SAMPLE, kaslr=True, kernel=real_kernel)
    script = tmp_path / "same.py"
    script.write_text(f"SRC = {str(EXTENSION.parent.parent / 'src')!r}\n" + _SAME_BYTES)
    done = gdb(dump.vmlinux, dump.path, f"source {script}")
    across, inside, bad = re.search(r"^kdl-same (\d+) (\d+) (\d+)", done.stdout, re.MULTILINE).groups()
    assert int(across) > 0 and int(inside) > 250
    assert bad == "0", done.stdout
