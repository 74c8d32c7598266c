"""Files and folders made unwritable for real, also where the tests run as root (whom the mode bits do not stop)."""
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def writable(path: Path) -> bool:
    """A real write probe: a file opened for writing, a folder made in a folder (nothing is changed)."""
    try:
        if path.is_dir():
            os.rmdir(tempfile.mkdtemp(dir=path))
        else:
            open(path, "r+b").close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def read_only(*roots: Path):
    """Every file and folder under ``roots`` unwritable while the block runs, then as before.

    Mode bits first (a-w); where a probe can still write (root), the immutable attribute (``chattr +i``, which
    stops root too, on ext4, xfs and btrfs); where neither holds, the test is skipped, saying why."""
    paths = [p for r in roots for p in ([r] + sorted(r.rglob("*")) if r.is_dir() else [r])]
    modes = {p: p.stat().st_mode for p in paths}
    immutable = False
    try:
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        if any(writable(p) for p in paths) and shutil.which("chattr"):
            immutable = True                     # undone below even where only some paths took it
            subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
        if any(writable(p) for p in paths):
            pytest.skip("cannot make a file unwritable here: running as root, and chattr +i is refused")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
        for p, mode in modes.items():
            p.chmod(mode)
