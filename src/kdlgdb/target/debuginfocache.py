"""What the dump's own kallsyms and BTF decode to, kept per kernel build ID.

Decoding ~90,000-160,000 kallsyms names and indexing ~100,000 BTF types takes 0.15-0.25 s of CPU per
dump, and gives the same result for every dump of one kernel build: VMCOREINFO's ``BUILD-ID`` (the
vmlinux's GNU build ID, since v5.9) names it. The first dump of a build writes one file
(``$KDLGDB_CACHE/debuginfo/BUILD-ID.v1``, by default under ``~/.cache/kdlgdb``; ``KDLGDB_CACHE=`` off)
with the symbols' names and static addresses, the BTF bytes and their index; the next dumps load it
in a few tens of milliseconds. Static addresses do not depend on KASLR, so one file serves every boot.
A file that cannot be read or written is ignored: the tables are decoded again.
"""
from __future__ import annotations

import array
import marshal
import os
import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["DebugInfo", "load", "save", "cache_path"]

VERSION = 1
_BUILD_ID = re.compile(r"^[0-9a-f]{8,128}$")


@dataclass
class DebugInfo:
    """A kernel build's decoded kallsyms (in the tables' order) and BTF (its bytes and :attr:`Btf.index`)."""

    typed: list[str]
    addresses: list[int]
    btf: bytes
    btf_index: tuple[bytes, bytes]


def cache_path(build_id: Optional[str]) -> Optional[str]:
    """The file for ``build_id``, or None (no build ID, or the cache turned off with ``KDLGDB_CACHE=``)."""
    root = os.environ.get("KDLGDB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kdlgdb"))
    if not root or build_id is None or not _BUILD_ID.match(build_id.lower()):
        return None
    return os.path.join(root, "debuginfo", f"{build_id.lower()}.v{VERSION}")


def load(build_id: Optional[str]) -> Optional[DebugInfo]:
    """The kept DebugInfo of ``build_id``, or None."""
    path = cache_path(build_id)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            doc = marshal.loads(f.read())  # (marshal.load reads a file object by small pieces: 20 times slower)
        addresses = array.array("Q")
        addresses.frombytes(doc["addresses"])
        return DebugInfo(doc["typed"].split("\n"), addresses.tolist(), doc["btf"], tuple(doc["btf_index"]))
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        return None


def save(build_id: Optional[str], info: DebugInfo) -> None:
    """Keep ``info`` for ``build_id`` (written whole or not at all; a failure is ignored)."""
    path = cache_path(build_id)
    if path is None:
        return
    doc = {"typed": "\n".join(info.typed), "addresses": array.array("Q", info.addresses).tobytes(), "btf": info.btf,
           "btf_index": info.btf_index}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(doc, f)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
