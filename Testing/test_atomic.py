"""URSAMLib.atomic: a file is replaced whole or not at all, with a plain file's permissions."""
import json
import os

import pytest

from URSAMLib import atomic


def test_a_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("old")
    atomic.write_json(path, {"a": [1, 2]}, indent=1)
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".csv") and temporary.exists()
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_the_new_file_has_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o640


def test_the_temporary_keeps_the_suffix_a_writer_chooses_the_format_by(tmp_path):
    with atomic.replacing(tmp_path / "ct.nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz")
        temporary.write_bytes(b"x")
    with atomic.replacing(tmp_path / "weights", ".pth") as temporary:
        assert temporary.suffix == ".pth"
        temporary.write_bytes(b"x")
    assert (tmp_path / "ct.nii.gz").read_bytes() == (tmp_path / "weights").read_bytes() == b"x"
