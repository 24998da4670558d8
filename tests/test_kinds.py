"""One spelling for dump formats and target kinds, and one place that sniffs a file's format."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from kdlgdb.target.base import TargetKind
from kdlgdb.target.dumpfile import DumpFormat, sniff
from kdlgdb.target.kdump import FLAT_SIGNATURE, KDUMP_SIGNATURE

SRC = Path(__file__).parent.parent / "src" / "kdlgdb"


def test_the_spellings_are_the_strings_they_always_were() -> None:
    assert [str(f) for f in DumpFormat] == ["elf-virtual", "elf-physical", "kdump"]
    assert [f.gdb_reads for f in DumpFormat] == [True, False, False]
    assert all(f.describe() for f in DumpFormat)
    assert (TargetKind.DUMP, TargetKind.LIVE) == ("dump", "live") and json.dumps(TargetKind.LIVE) == '"live"'
    assert f"{TargetKind.DUMP}" == "dump" and TargetKind("live") is TargetKind.LIVE


def test_sniff() -> None:
    assert sniff(io.BytesIO(KDUMP_SIGNATURE + bytes(8))) == "kdump"
    assert sniff(io.BytesIO(FLAT_SIGNATURE + bytes(8))) == "kdump"
    assert sniff(io.BytesIO(b"\x7fELF" + bytes(12))) == "elf"
    assert sniff(io.BytesIO(b"root:x:0:0:root")) is None


def test_one_place_looks_at_a_files_magic() -> None:
    """Only dumpfile.sniff compares a file's first bytes with the kdump signatures; nobody advises converting a
    dump to ELF (kd-open reads every format)."""
    users = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "convert it to ELF" not in text, path
        if re.search(r"startswith\((KDUMP|FLAT)_SIGNATURE|in \(b\"KDUMP", text):
            users.add(str(path.relative_to(SRC)))
    # (kdump.py's KdumpFile tells a flattened kdump from a normal one: inside one format, not which format)
    assert users == {"target/dumpfile.py", "target/kdump.py"}
