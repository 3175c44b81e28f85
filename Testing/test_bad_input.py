"""Every bad input of the table in docs/bad-input.md ("What happens with bad input"), tried as a user would.

Each case prepares its files in an empty folder and runs the ``ursam`` command there with
relative paths, in a process of its own (``python -m URSAMLib.cli``), exactly as typed in a
terminal. It then checks what the user gets: the exit status, one line ``ursam: error: ...`` on
stderr (or ``ursam: warning: ...`` lines for a run that goes on), no traceback, and no output
folder unless the run succeeded. A few cases run ``ursam``'s ``main()`` in this process instead,
because they replace one part of URSAM (a stand-in model, a localizer pushed off the image, a
smaller free memory) or because they need torch, which this process has already imported.

That page is checked against these runs: the table row that names a case must quote what the
user sees (``…`` stands for a part that differs from run to run), and every row's test must exist.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ABDOMEN, HEAD_NECK, DCMQI, ROOT, damaged_resources, synthetic_ct

BAD_INPUT_PAGE = ROOT / "docs" / "bad-input.md"
SECTION = "# What happens with bad input"
STANDARD = ["segment", "ct.nii.gz", "-o", "out", "--prompt-labels", "labels.nii.gz", "--classes", "classes.json",
            "--organs", "liver"]


def standard(**replace) -> list[str]:
    """The standard command with some of its arguments replaced (``{"-o": "x"}`` style, by flag)."""
    argv = list(STANDARD)
    for flag, value in replace.items():
        if flag == "ct":
            argv[1] = value
        else:
            argv[argv.index(flag) + 1] = value
    return argv


@dataclass
class Case:
    """A bad input: ``make(folder)`` prepares files and returns the arguments after ``ursam``."""

    make: Callable[[Path], list[str]]
    code: int = 2
    in_process: str = ""
    """Why the case runs in this process (then ``patch(monkeypatch, folder)`` may replace a part)."""
    patch: Callable | None = None
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None
    """Further checks on the folder after the run (e.g. an existing file is unchanged)."""


# --- preparing inputs ---------------------------------------------------------------------------

def link_abdomen(folder: Path, ct="ct_small.nii.gz", labels="labels_small.nii.gz") -> None:
    """The abdomen slab, its labels and class map under the names of the standard command."""
    for source, name in ((ct, "ct.nii.gz"), (labels, "labels.nii.gz"), ("classes.json", "classes.json")):
        if source:
            (folder / name).symlink_to(ABDOMEN / source)


def write(folder: Path, name: str, image: sitk.Image, compress: bool = True) -> None:
    sitk.WriteImage(image, str(folder / name), compress)


def labels_for(image: sitk.Image) -> sitk.Image:
    """A liver (label 5) on ``image``'s grid, where the bright block of synthetic_ct is."""
    labels = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 30).astype(np.uint8) * 5)
    labels.CopyInformation(image)
    return labels


def with_voxels(array: np.ndarray, like: sitk.Image | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    return image


def synthetic_case(folder: Path, array: np.ndarray, name="ct.nii.gz", compress=True) -> list[str]:
    """A CT of the given voxels on synthetic_ct's grid, its labels, and the abdomen class map."""
    grid = synthetic_ct()
    write(folder, name, with_voxels(array, grid), compress)
    write(folder, "labels.nii.gz", labels_for(grid))
    (folder / "classes.json").symlink_to(ABDOMEN / "classes.json")
    return standard(ct=name)


def ct_with_air() -> np.ndarray:
    """synthetic_ct's voxels with air around the body, so only the intended flaw stands out."""
    array = sitk.GetArrayFromImage(synthetic_ct()).astype(np.float32)
    array[:, :6, :] = -1000
    return array


def cut(folder: Path, name: str, image: sitk.Image, keep: float, compress: bool) -> list[str]:
    write(folder, "whole-" + name, image, compress)
    data = (folder / ("whole-" + name)).read_bytes()
    (folder / name).write_bytes(data[:int(len(data) * keep)])
    (folder / ("whole-" + name)).unlink()
    link_abdomen(folder, ct=None)
    return standard(ct=name)


def nifti_with_pixdim(folder: Path, index: int, value: float) -> list[str]:
    args = synthetic_case(folder, ct_with_air(), name="ct.nii", compress=False)
    data = bytearray((folder / "ct.nii").read_bytes())
    struct.pack_into("<f", data, 76 + 4 * index, value)
    (folder / "ct.nii").write_bytes(bytes(data))
    return args


def huge_sparse_nifti(folder: Path) -> list[str]:
    """A complete NIfTI of 2048 x 2048 x 300 voxels that takes no disk space (a sparse file)."""
    write(folder, "ct.nii", with_voxels(np.zeros((2, 16, 16), np.int16)), compress=False)
    data = bytearray((folder / "ct.nii").read_bytes()[:352])
    struct.pack_into("<8h", data, 40, 3, 2048, 2048, 300, 1, 1, 1, 1)
    (folder / "ct.nii").write_bytes(bytes(data))
    with open(folder / "ct.nii", "r+b") as handle:
        handle.truncate(352 + 2048 * 2048 * 300 * 2)
    link_abdomen(folder, ct=None)
    return standard(ct="ct.nii")


def one_slice(folder: Path) -> list[str]:
    """One axial slice saved as a volume (e.g. exported from a viewer)."""
    image = with_voxels(ct_with_air(), synthetic_ct())[:, :, 3:4]
    write(folder, "ct.nii.gz", image)
    write(folder, "labels.nii.gz", labels_for(image))
    (folder / "classes.json").symlink_to(ABDOMEN / "classes.json")
    return standard()


def dicom_series(folder: Path) -> list[str]:
    """The 512 x 512 x 20 DICOM series of the abdomen and its labels."""
    if not (folder / "dicom").exists():
        (folder / "dicom").symlink_to(ABDOMEN / "dicom")
    (folder / "labels.nii.gz").symlink_to(ABDOMEN / "dicom_labels.nii.gz")
    (folder / "classes.json").symlink_to(ABDOMEN / "classes.json")
    return standard(ct="dicom")


def altered_series(change: Callable) -> Callable[[Path], list[str]]:
    """The abdomen DICOM series as the standard command's CT, each file ``i`` (in position order,
    2 mm apart) passed through ``change(i, dataset)``; a file for which it returns False is left out."""
    def make(folder: Path) -> list[str]:
        import pydicom

        (folder / "dicom").mkdir()
        for index, source in enumerate(sorted((ABDOMEN / "dicom").glob("*.dcm"))):
            dataset = pydicom.dcmread(source)
            if change(index, dataset) is not False:
                dataset.save_as(folder / "dicom" / source.name)
        dicom_series(folder)  # its labels and class map; "dicom" is ours already
        return standard(ct="dicom")

    return make


def shifted(index: int, dataset, by=(0.0, 0.0, 0.0)) -> None:
    dataset.ImagePositionPatient = [float(p) + d for p, d in zip(dataset.ImagePositionPatient, by)]


def mr_volume() -> np.ndarray:
    """T1-like: positive values, dark noisy background, the synthetic organ bright."""
    rng = np.random.default_rng(0)
    base = sitk.GetArrayFromImage(synthetic_ct()).astype(np.float32)
    return np.where(base > 30, rng.normal(1400, 60, base.shape), rng.normal(600, 40, base.shape)).clip(0, 4000)


def pet_volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = sitk.GetArrayFromImage(synthetic_ct()).astype(np.float32)
    return np.where(base > 30, rng.normal(9, 1, base.shape), np.abs(rng.normal(0.8, 0.3, base.shape)))


def template_for_the_abdomen(folder: Path) -> list[str]:
    """A template of the abdomen slab (liver, spleen) and a head-and-neck CT to segment with it."""
    link_abdomen(folder)
    (folder / "hn.nii.gz").symlink_to(HEAD_NECK / "validation" / "pt_201_ct.nii.gz")
    from URSAMLib.cli import main

    assert main(["build-template", "--images", str(folder / "ct.nii.gz"), "--labels", str(folder / "labels.nii.gz"),
                 "--classes", str(folder / "classes.json"), "-o", str(folder / "abdomen-template"), "--organs",
                 "liver,spleen", "--region", "abdomen"]) == 0
    return ["segment", "hn.nii.gz", "-o", "out", "--template", "abdomen-template", "--quiet"]


def map_every_support_one_metre_up(monkeypatch, folder):
    """As if registration had placed the template far from the CT: what a template of another body
    region would give if the supports could not be overlapped with the CT."""
    from URSAMLib.localize import registration

    monkeypatch.setattr(registration, "register_affine",
                        lambda fixed, moving, seed=0: sitk.TranslationTransform(3, (0.0, 0.0, -1000.0)))


def little_free_memory(monkeypatch, folder):
    from URSAMLib import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 100 * 10**6)


def stand_in_model(monkeypatch, folder):
    from stand_ins import use_stand_in

    use_stand_in(monkeypatch)


def unverifiable_stand_in(monkeypatch, folder):
    from URSAMLib import backbones
    from stand_ins import StandInBackbone

    class Unverified(StandInBackbone):
        weights_verified, weights_sha256 = False, "9f" * 32

    monkeypatch.setattr(backbones, "load_backbone", lambda *args, **kwargs: Unverified())


def code_carrying_checkpoint(folder: Path) -> list[str]:
    import torch

    class Payload:
        def __reduce__(self):
            return (open, (str(folder / "code-ran"), "w"))

    torch.save({"weight": torch.ones(1), "x": Payload()}, folder / "evil.pth")
    link_abdomen(folder)
    return standard() + ["--checkpoint", "evil.pth"]


def two_series(folder: Path) -> list[str]:
    (folder / "series").mkdir()
    for source in list((ABDOMEN / "dicom").iterdir())[:3] + list(DCMQI.glob("*.dcm")):
        (folder / "series" / f"{source.parent.name}-{source.name}").symlink_to(source)
    link_abdomen(folder, ct=None)
    return standard(ct="series")


def vector_volume(folder: Path) -> list[str]:
    grid = synthetic_ct()
    write(folder, "ct.nrrd", sitk.Compose(grid, grid, grid))
    link_abdomen(folder, ct=None)
    return standard(ct="ct.nrrd")


def non_integer_labels(folder: Path) -> list[str]:
    link_abdomen(folder, labels=None)
    labels = sitk.ReadImage(str(ABDOMEN / "labels_small.nii.gz"))
    array = sitk.GetArrayFromImage(labels).astype(np.float32)
    array[10, 50, 60] = 2.5
    write(folder, "labels.nii.gz", with_voxels(array, labels))
    return standard()


def unchanged(path: str, content: bytes) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert (folder / path).read_bytes() == content

    return check


def existing_output(folder: Path) -> list[str]:
    link_abdomen(folder)
    (folder / "out").mkdir()
    (folder / "out" / "summary.json").write_bytes(b"last week's summary")
    return standard()


def input_among_outputs(folder: Path) -> list[str]:
    link_abdomen(folder, ct=None)
    (folder / "out").mkdir()
    (folder / "out" / "rectified.nii.gz").write_bytes((ABDOMEN / "ct_small.nii.gz").read_bytes())
    return standard(ct="out/rectified.nii.gz") + ["--overwrite"]


def files(**named: bytes | str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        for name, content in named.items():
            name = name.replace("__", ".")
            (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)

    return make


def then(*steps) -> Callable[[Path], list[str]]:
    """Run preparation steps in order; the last one returns the arguments."""
    def make(folder: Path) -> list[str]:
        for step in steps[:-1]:
            step(folder)
        return steps[-1](folder)

    return make


def png(folder: Path) -> list[str]:
    sitk.WriteImage(with_voxels(np.arange(4096, dtype=np.uint8).reshape(64, 64)), str(folder / "ct.png"))
    link_abdomen(folder, ct=None)
    return standard(ct="ct.png")


def png_named_nifti(folder: Path) -> list[str]:
    png(folder)
    (folder / "ct.png").rename(folder / "ct.nii.gz")
    return standard()


def four_d(folder: Path) -> list[str]:
    write(folder, "ct.nii.gz", sitk.JoinSeries([synthetic_ct(seed=0), synthetic_ct(seed=1)]))
    link_abdomen(folder, ct=None)
    return standard()


def nan_voxels(value: float) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        array = ct_with_air()
        array[2, 20, 20] = value
        return synthetic_case(folder, array)

    return make


def damaged_package(monkeypatch, folder: Path) -> None:
    """URSAM's packaged files as a copy in which one byte of the abdomen template has changed."""
    damaged_resources(monkeypatch, folder.parent, "templates/abdomen/supports/*_labels.nii.gz")


REGION_ARGS = ["segment", "ct.nii.gz", "-o", "out", "--region"]


def abdomen_with(*extra: str, ct="ct_small.nii.gz", labels="labels_small.nii.gz", args=None):
    def make(folder: Path) -> list[str]:
        link_abdomen(folder, ct=ct, labels=labels)
        return (args or standard()) + list(extra)

    return make


CASES: dict[str, Case] = {
    # files and formats
    "missing-file": Case(abdomen_with(ct=None)),
    "text-named-nifti": Case(then(files(ct__nii__gz="patient: Jane Doe\n"), abdomen_with(ct=None))),
    "png-named-nifti": Case(png_named_nifti),
    "dicom-file-named-nrrd": Case(then(lambda f: (f / "ct.nrrd").symlink_to(DCMQI / "01.dcm"),
                                       abdomen_with(ct=None, args=standard(ct="ct.nrrd")))),
    "empty-file": Case(then(files(ct__nii__gz=b""), abdomen_with(ct=None))),
    "nifti-gz-cut-short": Case(lambda f: cut(f, "ct.nii.gz", synthetic_ct(), 0.6, True)),
    "nifti-cut-short": Case(lambda f: cut(f, "ct.nii", synthetic_ct(), 0.6, False)),
    "metaimage-cut-short": Case(lambda f: cut(f, "ct.mha", synthetic_ct(), 0.6, False)),
    "nrrd-cut-short": Case(lambda f: cut(f, "ct.nrrd", synthetic_ct(), 0.6, True)),
    "single-dicom-file": Case(then(lambda f: (f / "01.dcm").symlink_to(DCMQI / "01.dcm"),
                                   abdomen_with(ct=None, args=standard(ct="01.dcm")))),
    "two-dicom-series": Case(two_series),
    "folder-without-dicom": Case(then(lambda f: (f / "scans").mkdir(), abdomen_with(ct=None,
                                                                                    args=standard(ct="scans")))),
    "dicom-missing-slice": Case(altered_series(lambda i, d: i != 7)),
    "dicom-uneven-spacing": Case(altered_series(lambda i, d: shifted(i, d, (0, 0, -1.0 if i >= 10 else 0)))),
    "dicom-gantry-tilt": Case(altered_series(lambda i, d: shifted(i, d, (0, 0.5 * i, 0)))),
    # geometry and size
    "2d-image": Case(png),
    "4d-image": Case(four_d),
    "colour-image": Case(vector_volume),
    "one-slice": Case(one_slice),
    "zero-spacing": Case(lambda f: nifti_with_pixdim(f, 1, 0.0)),
    "absurd-spacing": Case(lambda f: nifti_with_pixdim(f, 3, 80.0)),
    "too-large": Case(huge_sparse_nifti),
    "too-large-for-free-memory": Case(dicom_series, in_process="a smaller free memory", patch=little_free_memory),
    # voxel values
    "constant-volume": Case(lambda f: synthetic_case(f, np.zeros_like(ct_with_air()))),
    "nan-voxels": Case(nan_voxels(float("nan"))),
    "infinite-voxels": Case(nan_voxels(float("inf"))),
    "mr-intensities": Case(lambda f: synthetic_case(f, mr_volume()) + ["--quiet"], code=0,
                           in_process="a stand-in model", patch=stand_in_model),
    "pet-intensities": Case(lambda f: synthetic_case(f, pet_volume()) + ["--quiet"], code=0,
                            in_process="a stand-in model", patch=stand_in_model),
    # prompts, labels, class maps
    "labels-on-another-grid": Case(abdomen_with(labels="labels.nii.gz")),
    "labels-not-integer": Case(non_integer_labels),
    "labels-without-classes": Case(abdomen_with(args=STANDARD[:6] + STANDARD[8:])),
    "no-prompt-source": Case(abdomen_with(args=["segment", "ct.nii.gz", "-o", "out"])),
    "class-map-not-json": Case(then(files(my_classes__json="{1: liver}"),
                                    abdomen_with(args=standard(**{"--classes": "my_classes.json"})))),
    "organ-not-in-class-map": Case(abdomen_with(args=standard(**{"--organs": "liver,hepar"}))),
    "organ-not-in-labels": Case(abdomen_with(args=standard(**{"--organs": "urinary_bladder"}))),
    "not-a-template": Case(then(lambda f: (f / "templates").mkdir(),
                                abdomen_with(args=["segment", "ct.nii.gz", "-o", "out", "--template", "templates"]))),
    "template-for-another-region": Case(template_for_the_abdomen, in_process="registration pushed off the image",
                                        patch=map_every_support_one_metre_up),
    "unknown-region": Case(abdomen_with(args=REGION_ARGS + ["thorax"])),
    "damaged-package": Case(abdomen_with(args=REGION_ARGS + ["abdomen"]), in_process="a damaged copy of Resources/",
                            patch=damaged_package),
    # outputs
    "existing-output-folder": Case(existing_output, check=unchanged("out/summary.json", b"last week's summary")),
    "output-is-a-file": Case(then(files(out="notes"), abdomen_with()), check=unchanged("out", b"notes")),
    "dicom-out-from-nifti": Case(abdomen_with("--dicom-out", "seg,rtstruct")),
    "dicom-out-unknown-kind": Case(then(dicom_series, lambda f: standard(ct="dicom") + ["--dicom-out", "seg,rt"])),
    "input-among-outputs": Case(input_among_outputs,
                                check=lambda f: unchanged("out/rectified.nii.gz",
                                                          (ABDOMEN / "ct_small.nii.gz").read_bytes())(f)),
    # model and weights
    "unknown-backbone": Case(abdomen_with("--backbone", "sam-vit-z")),
    "unknown-device": Case(abdomen_with("--device", "gpu")),
    "device-not-available": Case(abdomen_with("--device", "cuda"), in_process="torch"),
    "checkpoint-missing": Case(abdomen_with("--checkpoint", "weights/sam.pth")),
    "official-checkpoint-cut-short": Case(then(files(sam_vit_b_01ec64__pth=b"0123456789"),
                                               abdomen_with("--backbone", "sam-vit-b", "--checkpoint",
                                                            "sam_vit_b_01ec64.pth"))),
    "checkpoint-not-matching-its-pin": Case(then(files(mine__pth=b"weights of my own"),
                                                 abdomen_with("--backbone", "medsam-vit-b", "--checkpoint", "mine.pth",
                                                              "--checkpoint-sha256", "0" * 64))),
    "pin-not-a-sha256": Case(then(files(mine__pth=b"w"), abdomen_with("--checkpoint", "mine.pth",
                                                                      "--checkpoint-sha256", "12ab"))),
    "checkpoint-not-a-checkpoint": Case(then(files(notes__pth="my notes"),
                                             abdomen_with("--checkpoint", "notes.pth")), in_process="torch"),
    "checkpoint-carrying-code": Case(code_carrying_checkpoint, in_process="torch",
                                     check=lambda f: not (f / "code-ran").exists() or pytest.fail("code ran")),
    "checkpoint-nobody-vouches-for": Case(then(files(mine__pth=b"w"), abdomen_with("--checkpoint", "mine.pth",
                                                                                   "--quiet")),
                                          code=0, in_process="a stand-in model", patch=unverifiable_stand_in),
    "sam-weights-not-downloaded": Case(abdomen_with("--backbone", "sam-vit-b"), env={"URSAM_CACHE": "cache"}),
    "medsam-weights-missing": Case(abdomen_with("--backbone", "medsam-vit-b"), env={"URSAM_CACHE": "cache"}),
    "download-without-address": Case(lambda f: ["download-weights", "medsam-vit-b", "--cache", "cache"]),
    # parameters
    "num-aug-out-of-range": Case(abdomen_with("--num-aug", "0")),
    "ratio-out-of-range": Case(abdomen_with("--ratio", "0.9")),
    "window-reversed": Case(abdomen_with("--window", "240,-160")),
    "output-not-given": Case(abdomen_with(args=STANDARD[:2] + STANDARD[4:])),
}


# --- running and checking ---------------------------------------------------------------------

def run_as_user(case: Case, folder: Path, monkeypatch, capfd) -> tuple[int, str]:
    args = case.make(folder)
    if not case.in_process:
        done = subprocess.run([sys.executable, "-m", "URSAMLib.cli", *args], cwd=folder, capture_output=True,
                              text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **case.env})
        assert done.stdout == "" or case.code == 0
        return done.returncode, done.stderr
    from URSAMLib.cli import main

    monkeypatch.chdir(folder)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.patch:
        case.patch(monkeypatch, folder)
    capfd.readouterr()
    code = main(args)
    return code, capfd.readouterr().err


def documented_rows() -> list[tuple[str, str, str]]:
    """The rows (input, what the user sees, test) of the table in docs/bad-input.md."""
    text = BAD_INPUT_PAGE.read_text()
    assert SECTION in text, f"{BAD_INPUT_PAGE.name} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and len(cells) == 3 and not set(cells[0]) <= {"-", " "} and cells[0] != "input":
            rows.append(tuple(cells))
    return rows


def documented(case_id: str) -> list[str]:
    """The messages docs/bad-input.md quotes for a case (its backticked ursam: lines)."""
    rows = [row for row in documented_rows() if f"test_cli_bad_input[{case_id}]" in row[2]]
    assert len(rows) == 1, f"docs/bad-input.md needs exactly one row for {case_id}, has {len(rows)}"
    quoted = re.findall(r"`(ursam: [^`]+)`", rows[0][1])
    assert quoted, f"the docs/bad-input.md row for {case_id} quotes no message"
    return quoted


def shows(message: str, stderr: str) -> bool:
    """Whether stderr holds the documented message; '…' in it stands for any text."""
    pattern = ".*?".join(re.escape(part) for part in message.split("…"))
    return re.search(pattern, stderr) is not None


@pytest.mark.subprocess
@pytest.mark.parametrize("case_id", list(CASES))
def test_cli_bad_input(case_id, tmp_path, monkeypatch, capfd, abdomen, head_neck, dcmqi):
    case = CASES[case_id]
    if case_id == "device-not-available":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this computer has a CUDA device")
    folder = tmp_path / "user"
    folder.mkdir()
    code, stderr = run_as_user(case, folder, monkeypatch, capfd)
    assert "Traceback" not in stderr, stderr
    assert code == case.code, stderr
    lines = stderr.splitlines()
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith("ursam: error: "), stderr
        if case_id not in ("existing-output-folder", "output-is-a-file", "input-among-outputs"):
            assert not (folder / "out").exists()
    else:
        assert lines and all(line.startswith("ursam: warning: ") for line in lines), stderr
        summary = json.loads((folder / "out" / "summary.json").read_text())
        assert [f"ursam: warning: {w}" for w in summary["warnings"]] == lines
    if case.check:
        case.check(folder)
    for message in documented(case_id):
        assert shows(message, stderr), f"docs/bad-input.md says {message!r}; the user sees {stderr!r}"


def test_every_documented_row_names_a_test_that_exists():
    sources = {path.name: path.read_text() for path in (ROOT / "Testing").glob("test_*.py")}
    cited = set()
    for what, sees, test in documented_rows():
        for reference in re.findall(r"`([\w.]+\.py)::(\w+)(?:\[([\w-]+)\])?`", test) or pytest.fail(
                f"row {what!r} names no test"):
            file, function, parameter = reference
            assert file in sources and re.search(rf"^def {function}\(", sources[file], re.M), reference
            if function == "test_cli_bad_input":
                assert parameter in CASES, parameter
                cited.add(parameter)
    assert cited == set(CASES), f"cases without a row in docs/bad-input.md: {sorted(set(CASES) - cited)}"
