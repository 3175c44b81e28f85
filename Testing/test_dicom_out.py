"""URSAMLib.dicom_out: DICOM SEG, RT Structure Set and Parametric Map of a run on a DICOM series.

Every object is read back with pydicom alone (not with the library that wrote it) and put on the
source grid by its own plane positions, then compared with the NIfTI outputs of the same run:
the SEG voxel for voxel with rectified.nii.gz, the RTSTRUCT's contours rasterized (even-odd)
with DSC >= 0.95, the Parametric Map value for value with uncertainty.nii.gz. dciodvfy (Debian
package dicom3tools, installed by `make install` as root) must find no error in any of them.

The real runs (LiteMedSAM, few organs) happen once per series (module-scoped fixtures); the writers'
edge cases run directly on synthetic masks on the real series' geometry.
"""
from __future__ import annotations

import contextlib
import io as text_io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from skimage.draw import polygon

from conftest import ABDOMEN, DCMQI
from URSAMLib import __version__, dicom_out, io
from URSAMLib.catalogue import match_name
from URSAMLib.cli import main
from URSAMLib.errors import URSAMError
from URSAMLib.metrics import dice

ALL_KINDS = "seg,seg-ensemble,rtstruct,uncertainty"


@dataclass
class Run:
    series: Path
    out: Path
    classes: dict[int, str]
    stderr: str


def segment(folder: Path, series: Path, labels: Path, classes: dict[int, str], organs: str, *extra: str) -> Run:
    (folder / "classes.json").write_text(json.dumps({str(k): v for k, v in classes.items()}))
    out = folder / "out"
    err = text_io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["segment", str(series), "-o", str(out), "--prompt-labels", str(labels), "--classes",
                     str(folder / "classes.json"), "--organs", organs, "--num-aug", "2", "--quiet", *extra])
    assert code == 0, err.getvalue()
    return Run(series, out, {k: v for k, v in classes.items() if v in organs.split(",")}, err.getvalue())


@pytest.fixture(scope="module", params=["abdomen-ts", "ct3slice-dcmqi"])
def run(request, tmp_path_factory) -> Run:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "abdomen-ts":
        if not (ABDOMEN / "dicom").is_dir():
            pytest.skip(f"{ABDOMEN} not present")
        classes = {int(k): v for k, v in json.loads((ABDOMEN / "classes.json").read_text()).items()}
        return segment(folder, ABDOMEN / "dicom", ABDOMEN / "dicom_labels.nii.gz", classes, "liver,spleen",
                       "--dicom-out", "seg,rtstruct,uncertainty")
    if not DCMQI.is_dir():
        pytest.skip(f"{DCMQI} not present")
    return segment(folder, DCMQI, DCMQI / "liver_spine_seg.nrrd", {1: "liver", 2: "spine"}, "liver,spine",
                   "--dicom-out", ALL_KINDS)


# --- reading the objects back, by their own geometry ------------------------------------------------

def on_grid(reference: sitk.Image, position) -> int:
    """The slice k of ``reference`` on which a frame at ``position`` (its top left pixel, mm) lies."""
    i, j, k = reference.TransformPhysicalPointToContinuousIndex([float(v) for v in position])
    assert abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - round(k)) < 1e-3, (i, j, k)
    return int(round(k))


def frames(dataset) -> np.ndarray:
    return dataset.pixel_array.reshape(int(dataset.get("NumberOfFrames", 1)), dataset.Rows, dataset.Columns)


def frame_positions(dataset) -> list:
    return [item.PlanePositionSequence[0].ImagePositionPatient for item in dataset.PerFrameFunctionalGroupsSequence]


def seg_labels(path: Path, reference: sitk.Image, classes: dict[int, str]) -> np.ndarray:
    """A SEG as a label map ``[k, j, i]`` on ``reference``'s grid, segments mapped back to the
    class values through their tracking IDs (the class names)."""
    seg = pydicom.dcmread(path)
    value_of = {s.SegmentNumber: {v: k for k, v in classes.items()}[s.TrackingID] for s in seg.SegmentSequence}
    labels = np.zeros(reference.GetSize()[::-1], np.uint16)
    for pixels, item, position in zip(frames(seg), seg.PerFrameFunctionalGroupsSequence, frame_positions(seg)):
        where = item if "SegmentIdentificationSequence" in item else seg.SharedFunctionalGroupsSequence[0]
        number = where.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        labels[on_grid(reference, position)][pixels > 0] = value_of[number]
    return labels


def rasterized(path: Path, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Each ROI of an RT Structure Set as a mask ``[k, j, i]``: its contours filled even-odd."""
    rtstruct = pydicom.dcmread(path)
    names = {roi.ROINumber: roi.ROIName for roi in rtstruct.StructureSetROISequence}
    masks = {}
    for roi in rtstruct.ROIContourSequence:
        mask = np.zeros(reference.GetSize()[::-1], bool)
        for contour in roi.get("ContourSequence", []):
            points = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints and contour.ContourGeometricType == "CLOSED_PLANAR"
            ijk = np.array([reference.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
            k = ijk[0, 2]
            assert np.allclose(ijk[:, 2], round(k), atol=1e-3), "a contour off its slice"
            inside = np.zeros(mask.shape[1:], bool)
            inside[polygon(ijk[:, 1], ijk[:, 0], inside.shape)] = True
            mask[int(round(k))] ^= inside
        masks[names[roi.ReferencedROINumber]] = mask
    return masks


def nifti(path: Path, series: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    assert io.same_voxel_centres(image, io.read_ct(series)) and image.GetSize() == io.read_ct(series).GetSize()
    return sitk.GetArrayFromImage(image), image


def dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        reason = "dciodvfy is not installed (Debian package dicom3tools; `make install` installs it as root)"
        if os.environ.get("URSAM_REQUIRE_DATA"):
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=300)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


# --- the real runs ---------------------------------------------------------------------------------

def test_seg_masks_equal_the_rectified_label_map_voxel_for_voxel(run):
    rectified, grid = nifti(run.out / "rectified.nii.gz", run.series)
    assert rectified.any()
    assert np.array_equal(seg_labels(run.out / "seg.dcm", grid, run.classes), rectified)
    if (run.out / "seg_ensemble.dcm").exists():
        ensemble, _ = nifti(run.out / "ensemble.nii.gz", run.series)
        assert np.array_equal(seg_labels(run.out / "seg_ensemble.dcm", grid, run.classes), ensemble)


def test_seg_segments_carry_the_catalogue_terminology_name_and_colour(run):
    seg = pydicom.dcmread(run.out / "seg.dcm")
    assert sorted(s.TrackingID for s in seg.SegmentSequence) == sorted(run.classes.values())
    for segment in seg.SegmentSequence:
        organ = match_name(segment.TrackingID)
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        if organ is None:  # e.g. spine: a generic anatomical structure under its class name
            assert segment.SegmentLabel == segment.TrackingID and kind.CodeValue == dicom_out.UNKNOWN_TYPE[1]
            continue
        assert segment.SegmentLabel == organ.name
        assert (kind.CodingSchemeDesignator, kind.CodeValue) == (organ.type.scheme, organ.type.value)
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == (organ.category.scheme, organ.category.value)
        from highdicom.color import CIELabColor

        colour = CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(colour, [255 * c for c in organ.color], atol=1.5)
        assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == "URSAM UR-SAM"


def test_rtstruct_contours_rasterize_back_onto_the_rectified_organs(run):
    rectified, grid = nifti(run.out / "rectified.nii.gz", run.series)
    masks = rasterized(run.out / "rtstruct.dcm", grid)
    for label, key in run.classes.items():
        organ = match_name(key)
        score = dice(masks[organ.name if organ else key], rectified == label)
        assert score >= 0.95, (key, score)


def test_rtstruct_contours_reference_the_slice_they_lie_on(run):
    rtstruct = pydicom.dcmread(run.out / "rtstruct.dcm")
    sources = {str(d.SOPInstanceUID): d for d in dicom_out.read_source(run.series, io.read_ct(run.series),
                                                                       lambda m: None).datasets}
    contours = [c for roi in rtstruct.ROIContourSequence for c in roi.get("ContourSequence", [])]
    assert contours
    for contour in contours:
        source = sources[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        normal = np.cross(*np.array(source.ImageOrientationPatient, dtype=float).reshape(2, 3))
        heights = np.array(contour.ContourData, dtype=float).reshape(-1, 3) @ normal
        assert np.allclose(heights, np.dot(np.array(source.ImagePositionPatient, dtype=float), normal), atol=1e-3)


def test_parametric_map_equals_the_uncertainty_map_in_nats(run):
    uncertainty, grid = nifti(run.out / "uncertainty.nii.gz", run.series)
    pm = pydicom.dcmread(run.out / "uncertainty.dcm")
    assert pm.BitsAllocated == 32 and "FloatPixelData" in pm
    values = np.full(uncertainty.shape, np.nan, np.float32)
    for pixels, position in zip(frames(pm), frame_positions(pm)):
        values[on_grid(grid, position)] = pixels
    assert uncertainty.max() > 0.1
    np.testing.assert_allclose(values, uncertainty, rtol=0, atol=1e-7)
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue, unit.CodeMeaning) == ("UCUM", "{nat}", "nat")
    assert mapping.RealWorldValueSlope == 1 and mapping.RealWorldValueIntercept == 0


def test_objects_carry_the_source_identity_new_series_and_urs_am_identification(run):
    source = dicom_out.read_source(run.series, io.read_ct(run.series), lambda m: None).datasets[0]
    series = set()
    for name in sorted(p.name for p in run.out.glob("*.dcm")):
        dataset = pydicom.dcmread(run.out / name)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                        "StudyDate", "AccessionNumber"):
            assert dataset.get(keyword) == source.get(keyword), (name, keyword)
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
        series.add(dataset.SeriesInstanceUID)
        assert dataset.SeriesDescription.startswith(f"URSAM {__version__} ")
        assert dataset.Manufacturer == "URSAM" and dataset.SoftwareVersions == __version__
        contribution = next(c for c in dataset.ContributingEquipmentSequence if c.Manufacturer == "URSAM")
        assert contribution.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
        assert "backbone litemedsam" in contribution.ContributionDescription
        assert dataset.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert len(series) == len(list(run.out.glob("*.dcm")))  # a new series for each object
    summary = json.loads((run.out / "summary.json").read_text())
    assert set(p.name for p in run.out.glob("*.dcm")) <= set(summary["outputs"])


def test_every_object_passes_dciodvfy_without_errors(run):
    for path in sorted(run.out.glob("*.dcm")):
        assert dciodvfy_errors(path) == [], path.name


def test_an_anonymized_series_gets_its_missing_uids_with_one_warning(run):
    lines = [line for line in run.stderr.splitlines() if "carry no" in line]
    if run.series.name != "dicom":  # ct3slice-dcmqi has every UID
        assert lines == []
        return
    assert len(lines) == 1 and lines[0].startswith("ursam: warning: ") and "Study Instance UID" in lines[0]
    first = pydicom.dcmread(sorted(run.series.glob("*.dcm"))[0], stop_before_pixels=True)
    assert not first.get("StudyInstanceUID") and not first.get("SOPInstanceUID")
    # the SOP Instance UIDs come from the file meta, and the study UID is the same on every run
    sources = dicom_out.read_source(run.series, io.read_ct(run.series), lambda m: None).datasets
    assert {str(d.SOPInstanceUID) for d in sources} == {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
        for p in run.series.glob("*.dcm")}
    seg = pydicom.dcmread(run.out / "seg.dcm")
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} <= {
        str(d.SOPInstanceUID) for d in sources}


# --- the writers on synthetic masks, on the real series' geometry -----------------------------------

@pytest.fixture(scope="module")
def dcmqi_source():
    if not DCMQI.is_dir():
        pytest.skip(f"{DCMQI} not present")
    image = io.read_ct(DCMQI)
    return dicom_out.read_source(DCMQI, image, lambda m: None), image


def synthetic_maps(shape) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """A right kidney with a hole, touching the image border; a one-voxel liver; a ring of an organ the
    catalogue does not know; an empty spleen; and a smooth uncertainty map."""
    labels = np.zeros(shape, np.uint16)
    labels[:, 0:120, 0:90] = 2
    labels[1, 40:60, 30:50] = 0
    labels[2, 300, 200] = 5
    rows, columns = np.ogrid[:shape[1], :shape[2]]
    ring = (np.hypot(rows - 250, columns - 380) < 60) & (np.hypot(rows - 250, columns - 380) > 30)
    labels[0][ring] = 9
    uncertainty = np.linspace(0, np.log(2), labels.size, dtype=np.float32).reshape(shape)
    return ({"rectified": labels, "ensemble": (labels == 2).astype(np.uint16) * 2, "uncertainty": uncertainty},
            {2: "kidney_right", 5: "liver", 9: "my_structure", 1: "spleen"})


def test_writers_round_trip_synthetic_masks_exactly(dcmqi_source, tmp_path):
    source, image = dcmqi_source
    maps, organs = synthetic_maps(source.shape)
    written = dicom_out.write_outputs(tmp_path, ("seg", "seg-ensemble", "rtstruct", "uncertainty"), source, maps,
                                      organs, {"backbone": "test"})
    assert written == ["seg.dcm", "seg_ensemble.dcm", "rtstruct.dcm", "uncertainty.dcm"]
    assert np.array_equal(seg_labels(tmp_path / "seg.dcm", image, organs), maps["rectified"])
    assert np.array_equal(seg_labels(tmp_path / "seg_ensemble.dcm", image, organs), maps["ensemble"])
    masks = rasterized(tmp_path / "rtstruct.dcm", image)
    # axis-aligned outlines, with a hole and at the border, come back exactly; so does a ring
    assert np.array_equal(masks["Right kidney"], maps["rectified"] == 2)
    assert np.array_equal(masks["my_structure"], maps["rectified"] == 9)
    assert masks["Liver"].sum() == 1 and masks["Liver"][2, 300, 200] and not masks["Spleen"].any()
    rtstruct = pydicom.dcmread(tmp_path / "rtstruct.dcm")
    kidney = next(r for r in rtstruct.RTROIObservationsSequence if r.ROIObservationLabel == "kidney_right")
    assert kidney.RTROIIdentificationCodeSequence[0].CodeValue == match_name("kidney_right").type.value
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    right = next(s for s in seg.SegmentSequence if s.TrackingID == "kidney_right")
    modifier = right.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeMeaning == "Right"
    pm = pydicom.dcmread(tmp_path / "uncertainty.dcm")
    values = np.zeros(source.shape, np.float32)
    for pixels, position in zip(frames(pm), frame_positions(pm)):
        values[on_grid(image, position)] = pixels
    assert np.array_equal(values, maps["uncertainty"])
    for name in written:
        assert dciodvfy_errors(tmp_path / name) == [], name


def test_a_run_that_found_nothing_still_writes_valid_objects(dcmqi_source, tmp_path):
    source, image = dcmqi_source
    empty = np.zeros(source.shape, np.uint16)
    maps = {"rectified": empty, "ensemble": empty, "uncertainty": np.zeros(source.shape, np.float32)}
    written = dicom_out.write_outputs(tmp_path, ("seg", "rtstruct", "uncertainty"), source, maps, {5: "liver"}, {})
    assert not seg_labels(tmp_path / "seg.dcm", image, {5: "liver"}).any()
    for name in written:
        assert dciodvfy_errors(tmp_path / name) == [], name


def test_kinds_are_parsed_and_unknown_ones_named():
    assert dicom_out.parse_kinds("seg, rtstruct,seg") == ("seg", "rtstruct")
    with pytest.raises(ValueError, match="unknown DICOM output rt; choose any of seg, seg-ensemble"):
        dicom_out.parse_kinds("seg,rt")
    assert dicom_out.filenames(("uncertainty", "seg")) == ["uncertainty.dcm", "seg.dcm"]


def test_dicom_out_needs_a_dicom_series(tmp_path):
    with pytest.raises(URSAMError, match="needs a DICOM series as input"):
        dicom_out.check_request(str(ABDOMEN / "ct_small.nii.gz"), ("seg",))
    dicom_out.check_request(str(ABDOMEN / "ct_small.nii.gz"), ())  # nothing asked, nothing to check


# --- with a stand-in model: writing through the staging folder, and ursam batch --------------------

def stand_in_segment(monkeypatch, out: Path, *extra: str) -> int:
    from stand_ins import use_stand_in

    use_stand_in(monkeypatch)
    classes = out.parent / "classes.json"
    classes.write_text('{"1": "liver", "2": "spine"}')
    return main(["segment", str(DCMQI), "-o", str(out), "--prompt-labels", str(DCMQI / "liver_spine_seg.nrrd"),
                 "--classes", str(classes), "--quiet", *extra])


def test_an_existing_dicom_output_is_replaced_only_with_overwrite(dcmqi_source, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg.dcm").write_bytes(b"last week's SEG")
    (out / "notes.txt").write_text("mine")
    assert stand_in_segment(monkeypatch, out, "--dicom-out", "seg") == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "seg.dcm").read_bytes() == b"last week's SEG"
    assert stand_in_segment(monkeypatch, out, "--dicom-out", "seg", "--overwrite") == 0
    assert pydicom.dcmread(out / "seg.dcm").Modality == "SEG" and (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".out.ursam-*"))  # no staging folder left


def test_batch_writes_dicom_objects_and_redoes_cases_made_without_them(dcmqi_source, tmp_path, monkeypatch):

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "case1").symlink_to(DCMQI)
    (cohort / "case1_labels.nrrd").symlink_to(DCMQI / "liver_spine_seg.nrrd")
    from stand_ins import use_stand_in

    use_stand_in(monkeypatch)
    (tmp_path / "classes.json").write_text('{"1": "liver", "2": "spine"}')
    argv = ["batch", str(cohort), "-o", str(tmp_path / "out"), "--prompt-labels-pattern", "*_labels.nrrd",
            "--classes", str(tmp_path / "classes.json")]
    assert main(argv) == 0 and not (tmp_path / "out" / "case1" / "seg.dcm").exists()
    assert main(argv + ["--dicom-out", "seg,uncertainty"]) == 0
    case = tmp_path / "out" / "case1"
    assert pydicom.dcmread(case / "seg.dcm").Modality == "SEG"
    assert pydicom.dcmread(case / "uncertainty.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
    assert {"seg.dcm", "uncertainty.dcm"} <= set(json.loads((case / "summary.json").read_text())["outputs"])
