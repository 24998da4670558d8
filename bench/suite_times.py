#!/usr/bin/env python3
"""Where the test suite's time goes: per file and per kernel, from pytest's ``--durations=0`` output.

    python3 -m pytest -q --durations=0 > /tmp/suite.log; python3 bench/suite_times.py /tmp/suite.log

Prints the seconds of setup + call + teardown summed per test file and per kernel (the kernel is the
first parameter of a real-kernel test's id). The sums are of test time in all xdist workers together,
so they add up to about twice the wall time on two workers.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(tests/[^:]+)::([^\s\[]+)(?:\[([^\]]*)\])?")
KERNEL = re.compile(r"^(\d+\.\d+[^-]*-\d+[^-]*-[a-z0-9]+-amd64|\d+\.\d+\.\d+\+deb\d+-[a-z]+-amd64|6\.1-lockdep)")


def main(path: str) -> None:
    by_file: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    by_test: dict[str, float] = defaultdict(float)
    total = 0.0
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            seconds, _, file, test, params = float(m[1]), m[2], m[3], m[4], m[5] or ""
            k = KERNEL.match(params)
            total += seconds
            by_file[file] += seconds
            by_kernel[k[1] if k else "(no kernel)"] += seconds
            by_test[f"{file}::{test}"] += seconds
    for title, table in (("file", by_file), ("kernel", by_kernel), ("test function (top 25)", by_test)):
        print(f"{'seconds':>8}  {title}")
        for name, s in sorted(table.items(), key=lambda kv: -kv[1])[:25]:
            print(f"{s:8.1f}  {name}")
        print()
    print(f"{total:8.1f}  in all")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")
