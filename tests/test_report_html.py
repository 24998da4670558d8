"""The HTML report in a real browser: headless Chromium opens it offline, draws it, and the cycle is red.

Needs Debian's ``chromium`` (``apt-get install -y --no-install-recommends chromium``).
The reports come from ``kdlgdb report`` on the real dumps. Chromium runs with
networking features off and a throw-away profile; the file must render without
any of them, as it would when mailed to someone.
"""
from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import samples
from realgdb import kdlgdb

pytestmark = pytest.mark.realkernel

WIDTH, HEIGHT = 1200, 1600


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: apt-get install -y --no-install-recommends chromium")
    return exe


def _browse(html: Path, tmp: Path, *what: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``file://html`` with ``what`` (``--screenshot=...`` or ``--dump-dom``)."""
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *what, html.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def _report(scenario: str, real_kernel: str, tmp: Path) -> Path:
    dump = samples.ensure_dump(scenario, True, real_kernel)
    out = tmp / f"{scenario}.html"
    # The vmlinux found by the dump's release; a kernel of ours has it in the sample cache, given as a user would.
    vmlinux = [str(dump.vmlinux)] if real_kernel in samples.builder.BUILT_KERNELS else []
    done = kdlgdb("report", *vmlinux, str(dump.path), "-o", str(out))
    assert done.returncode == 0, done.stderr  # written, whatever it found
    return out


def _pixels(png: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG, decoded with the stdlib."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3))
        prev = line
    return width, height, rows


def _red_pixels(rows: list[bytes]) -> int:
    """Pixels that are Graphviz's "red" (#ff0000), allowing for anti-aliasing."""
    count = 0
    for row in rows:
        for x in range(0, len(row), 3):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if r > 220 and g < 60 and b < 60:
                count += 1
    return count


@pytest.mark.parametrize("scenario", ["kdl_mutex", "kdl_control"])
def test_chromium_draws_the_report_offline(real_kernel: str, scenario: str, tmp_path: Path) -> None:
    html = _report(scenario, real_kernel, tmp_path)
    png = tmp_path / f"{scenario}.png"
    done = _browse(html, tmp_path, f"--screenshot={png}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 20_000
    width, height, rows = _pixels(png)
    assert (width, height) == (WIDTH, HEIGHT)
    red = _red_pixels(rows)
    if samples.expected(scenario, real_kernel)["cycles"]:
        assert red > 1000, red  # the cycle's edges, tasks and locks, drawn
    else:
        assert red < 300, red  # only the legend's swatch: no cycle in the picture


def test_the_dom_has_the_svg_with_red_cycle_edges(real_kernel: str, tmp_path: Path) -> None:
    html = _report("kdl_mutex", real_kernel, tmp_path)
    done = _browse(html, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<svg") == 1
    truth = samples.ensure_dump("kdl_mutex", True, real_kernel).truth
    cycle = re.findall(r'<g id="([^"]+)" class="edge cycle">(.*?)</g>', dom, re.DOTALL)
    assert len(cycle) == 4  # m1 -> m2's lock -> m2 -> m1's lock -> m1
    assert all('stroke="red"' in body for _, body in cycle)
    waits = {name for name, _ in cycle if name.startswith("wait_")}
    assert waits == {f"wait_{truth['tasks']['kdl_m1']}_" + _addr(dom, truth["tasks"]["kdl_m1"]),
                     f"wait_{truth['tasks']['kdl_m2']}_" + _addr(dom, truth["tasks"]["kdl_m2"])}
    holds = {name.split("_")[1] for name, _ in cycle if name.startswith("hold_")}
    assert holds == {truth["locks"][lk]["address"][2:] for lk in ("m1", "m2")}
    # kdl_m3 waits behind the cycle: its edge is drawn, not red.
    m3 = re.search(rf'<g id="wait_{truth["tasks"]["kdl_m3"]}_[0-9a-f]+" class="edge wait">(.*?)</g>', dom, re.DOTALL)
    assert m3 and 'stroke="red"' not in m3.group(1)
    # The summary sentence came first, as text a reader sees.
    assert re.search(r'<p class="summary">"kdl_m1" \(pid \d+\) and "kdl_m2" \(pid \d+\) deadlock on m1 and m2 '
                     r"\[kdl_mutex\]: ABBA order", dom)


# Measures, in the page as Chromium lays it out, the font size in CSS pixels of every label of a task or lock
# (Graphviz's font size in the SVG's units times the scale the page draws the SVG at). Added to a copy only:
# the report itself has no script.
_MEASURE = """<script>
const px = [];
for (const text of document.querySelectorAll("figure.graph g.node text")) {
  const m = text.getScreenCTM();
  px.push(parseFloat(text.getAttribute("font-size")) * Math.hypot(m.a, m.b));
}
const out = document.createElement("pre");
out.id = "kd-label-px";
out.textContent = JSON.stringify(px);
document.body.appendChild(out);
</script>"""


def _label_px(html: Path, tmp: Path) -> list[float]:
    """The rendered font size of each task and lock label of the report's wait-for pictures, in CSS pixels."""
    measured = tmp / ("measured-" + html.name)
    measured.write_text(html.read_text().replace("</body>", _MEASURE + "</body>"))
    done = _browse(measured, tmp, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="kd-label-px">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, done.stdout[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


# Many parts: kdl_chain's four chains on every kernel; kdl_scale_1k's sixteen cycles and chains (its dump is built
# on the default kernel only).
@pytest.mark.parametrize("scenario", ["kdl_chain", "kdl_scale_1k"])
def test_the_wait_for_labels_stay_legible_with_many_parts(real_kernel: str, scenario: str, tmp_path: Path) -> None:
    """One picture per connected part, one under the other: every task and lock label is drawn at 9 px or more
    at the page's width (all parts side by side in one picture drew seven parts' labels ~5 px high)."""
    if scenario == "kdl_scale_1k" and real_kernel != samples.DEFAULT_KERNEL:
        pytest.skip(f"kdl_scale_1k is dumped on {samples.DEFAULT_KERNEL} only")
    html = _report(scenario, real_kernel, tmp_path)
    figures = html.read_text().count('<figure class="graph">')
    assert figures >= (4 if scenario == "kdl_chain" else 10)
    sizes = _label_px(html, tmp_path)
    assert len(sizes) >= 3 * figures  # two tasks and a lock at least in each part
    assert min(sizes) >= 9.0, sorted(sizes)[:10]


def _addr(dom: str, pid: int) -> str:
    m = re.search(rf'<g id="task_{pid}_([0-9a-f]+)" class="node task ', dom)
    assert m, pid
    return m.group(1)
