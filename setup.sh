#!/usr/bin/env bash
# kdlgdb set-up: everything on a fresh Debian 12 machine, as root.
#   system packages (gdb and its Python's dependencies, QEMU, the pinned Debian
#   kernels with their headers, crash), each kernel's vmlinux with DWARF (from its
#   -dbg package), the Python package with its test dependencies, the crash
#   extension (crashext/kdlgdb.so), and the real-kernel sample dumps (built once,
#   cached outside the checkout in ${KDLGDB_CACHE:-~/.cache/kdlgdb}).
set -euo pipefail
cd "$(dirname "$0")"

# The kernels the real-kernel tests run on (tests/vmcore_samples/catalog.py KERNELS): Debian's three, which come
# with their packages, and the lock-debugging kernel the sample builder compiles from Debian's linux-source-6.1.
# $KDLGDB_KERNELS chooses others, e.g. KDLGDB_KERNELS="6.1.0-56-cloud-amd64" for Debian's 6.1 alone.
export KDLGDB_KERNELS="${KDLGDB_KERNELS:-$(python3 tests/vmcore_samples/build.py --list-kernels)}"
read -r -a DEBIAN_KERNELS <<< "$(python3 tests/vmcore_samples/build.py --list-debian-kernels)"
read -r -a KERNEL_PACKAGES <<< "$(python3 tests/vmcore_samples/build.py --list-packages)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

packages=(
  gdb python3 python3-pygments python3-tabulate       # gdb's embedded Python needs these
  python3-lzo python3-snappy python3-zstandard       # ... and these for compressed kdump pages
  makedumpfile                                       # the kdump-format sample dumps
  qemu-system-x86 busybox-static cpio xz-utils zstd   # the sample kernels and live tests
  graphviz chromium                                   # report pictures, and the HTML report's test
  make gcc
  crash                                               # the crash utility and its defs.h, for crashext/
)
packages+=("${KERNEL_PACKAGES[@]}")  # images and headers; for a kernel of ours its source and build tools
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Each kernel's vmlinux with DWARF. The -dbg packages install 1.8-6.7 GB (every module's
# debug info too); only /usr/lib/debug/boot/ is needed, so take just that from the .deb.
for k in "${DEBIAN_KERNELS[@]}"; do
  if [ ! -f "/usr/lib/debug/boot/vmlinux-$k" ]; then
    echo "setup: extracting the vmlinux of $k from linux-image-$k-dbg"
    tmp="$(mktemp -d)"
    chmod 755 "$tmp"  # apt's download user must be able to write there
    (cd "$tmp" && apt-get download -q "linux-image-$k-dbg")
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | $SUDO tar -x -C / ./usr/lib/debug/boot/
    rm -rf "$tmp"
  fi
done

# The kdlgdb command, the test tools and the benchmark's peer (drgn), for the python3 on PATH.
python3 -m pip install -q --disable-pip-version-check -e '.[test,bench]'

# The crash extension (crash> extend crashext/kdlgdb.so), built against crash's defs.h.
make -s -C crashext

# Real dumps of the scenario modules (reused when their sources did not change; outdated ones removed first,
# each kernel's set is ~13 GB), several guests at once; a kernel of ours is
# built first (cached by source version and config; ~5 min on 2 idle cores).
nice -n 10 python3 tests/vmcore_samples/build.py --prune
# An index of each vmlinux's DWARF: gdb then starts in 0.4 s of CPU instead of 3.9 s, crash in 2.6 s instead
# of 6.4 s, and the tests start both hundreds of times.
python3 tests/vmcore_samples/gdbindex.py
echo "setup: done"
