"""Atomic writes: the final name holds a whole file or nothing; the temp file honours the umask."""
import os

import numpy as np
import pytest

from braintune_dist.io import atomic_path, write_text


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half a ta")
            raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []                 # no partial file, no temp file
    write_text(out, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("new, torn")
            raise RuntimeError("writer died")
    assert out.read_text() == "old\n" and list(tmp_path.iterdir()) == [out]


def test_suffix_kept_and_umask_applies(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.npy", fsync=True) as tmp:
            assert tmp.suffix == ".npy" and tmp.parent == tmp_path
            np.save(tmp, np.arange(3))                      # np.save would append .npy to another suffix
    finally:
        os.umask(old)
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2]
    assert (tmp_path / "x.npy").stat().st_mode & 0o777 == 0o644      # mkstemp would give 0600
