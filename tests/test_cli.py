"""The ``kdlgdb`` command line itself (no dump needed)."""
from __future__ import annotations

import configparser
from pathlib import Path

from realgdb import kdlgdb

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_package_version() -> None:
    done = kdlgdb("--version")
    assert done.returncode == 0, done.stderr
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["version"] == "attr: kdlgdb.__version__"
    version = (ROOT / "src" / "kdlgdb" / "__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert done.stdout.strip() == f"kdlgdb {version}" and version.count(".") == 2
