"""Atomic replacement: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import numpy as np
import pytest

from upsampler.utils.files import replaced_atomically, write_atomically


def test_the_target_changes_only_when_the_block_completes(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with replaced_atomically(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not yet
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "features.npy"
    np.save(target, np.arange(3))
    with pytest.raises(RuntimeError, match="disk full"):
        with replaced_atomically(target) as tmp:
            np.save(tmp, np.arange(5))  # np.save keeps a name ending in .npy as it is
            raise RuntimeError("disk full")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npy"]


def test_write_atomically_writes_text_exactly(tmp_path):
    target = tmp_path / "loss.csv"
    write_atomically(target, "a,b\r\n1,2\n")
    assert target.read_bytes() == b"a,b\r\n1,2\n"
