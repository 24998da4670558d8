#!/usr/bin/env bash
# kdlgdb set-up: everything on a fresh Debian 12 machine, as root.
#   system packages (gdb and its Python's dependencies, QEMU, the pinned Debian
#   kernel with its -dbg vmlinux and headers, crash), the Python package with its
#   test dependencies, the crash extension (crashext/kdlgdb.so), and the
#   real-kernel sample dumps (built once, cached outside the checkout in
#   ${KDLGDB_CACHE:-~/.cache/kdlgdb}).
set -euo pipefail
cd "$(dirname "$0")"

KERNEL="${KDLGDB_KERNEL:-6.1.0-56-cloud-amd64}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(
  gdb python3 python3-pygments python3-tabulate       # gdb's embedded Python needs these
  python3-lzo python3-snappy python3-zstandard       # ... and these for compressed kdump pages
  makedumpfile                                       # the kdump-format sample dumps
  qemu-system-x86 busybox-static cpio xz-utils zstd   # the sample kernels and live tests
  graphviz chromium                                   # report pictures, and the HTML report's test
  make gcc "linux-image-$KERNEL" "linux-headers-$KERNEL" "linux-image-$KERNEL-dbg"
  crash                                               # the crash utility and its defs.h, for crashext/
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The kdlgdb command and the test tools, for the python3 on PATH.
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# The crash extension (crash> extend crashext/kdlgdb.so), built against crash's defs.h.
make -s -C crashext

# Real dumps of the scenario modules (reused when their sources did not change).
python3 tests/vmcore_samples/build.py --kernel "$KERNEL"
echo "setup: done"
