"""URSAMLib.outputs: all-or-nothing output folders that never destroy a user's files."""
import os

import pytest

from URSAMLib.errors import URSAMError
from URSAMLib.outputs import check_output_dir, staged_output


def test_new_folder_appears_only_when_everything_was_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with staged_output(out, overwrite=False) as staging:
            (staging / "ensemble.nii.gz").write_text("half")
            raise RuntimeError("crash while writing")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_output(out, overwrite=False) as staging:
        (staging / "ensemble.nii.gz").write_text("done")
    assert (out / "ensemble.nii.gz").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_staged_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with staged_output(tmp_path / "run", overwrite=False) as staging:
            (staging / "summary.json").write_text("{}")
        assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "run" / "summary.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)


def test_existing_files_need_overwrite_and_other_files_survive_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "my_notes.txt").write_text("keep me")
    (out / "rectified.nii.gz").write_text("old")
    with pytest.raises(URSAMError, match="--overwrite"):
        check_output_dir(out, overwrite=False)
    with staged_output(out, overwrite=True) as staging:
        (staging / "rectified.nii.gz").write_text("new")
    assert (out / "rectified.nii.gz").read_text() == "new"
    assert (out / "my_notes.txt").read_text() == "keep me"
    with pytest.raises(URSAMError, match="not a folder"):
        check_output_dir(out / "my_notes.txt", overwrite=True)
    check_output_dir(tmp_path / "empty", overwrite=False)  # absent: fine


def test_an_input_among_the_files_a_run_would_replace_is_refused(tmp_path):
    from URSAMLib.outputs import OUTPUT_FILES, check_inputs_survive

    out = tmp_path / "run"
    out.mkdir()
    (out / "rectified.nii.gz").write_text("the user's only copy")
    with pytest.raises(URSAMError, match="is one of the files this run writes into .* would be replaced"):
        check_inputs_survive(out, list(OUTPUT_FILES), [str(tmp_path / "ct.nii.gz"), str(out / "rectified.nii.gz")])
    with pytest.raises(URSAMError, match="is the input folder"):
        check_inputs_survive(out, list(OUTPUT_FILES), [str(out)])  # e.g. a DICOM series folder
    check_inputs_survive(out, list(OUTPUT_FILES), [str(out / "ct.nii.gz"), None])  # other names are safe
