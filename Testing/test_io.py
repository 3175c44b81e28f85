"""URSAMLib.io: reading every format in ../shared/data, axial slicing for any direction, grids."""
import functools
import gzip
import itertools
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import synthetic_ct
from URSAMLib import io
from URSAMLib.errors import URSAMError


def signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for column, (row, sign) in enumerate(zip(perm, signs)):
                matrix[row, column] = sign
            yield matrix


def rotation(degrees_about_z):
    a = np.radians(degrees_about_z)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def assert_axial_orientation(image):
    """Axial x, y, z steps must point (mostly) to patient left, posterior, superior."""
    axial, frame = io.axial_array(image)
    stored = sitk.GetArrayFromImage(image)
    rng = np.random.default_rng(1)
    for _ in range(20):
        zyx = np.array([rng.integers(0, n - 1) for n in axial.shape])
        ijk = frame.index_to_stored(zyx)
        assert axial[tuple(zyx)] == stored[tuple(ijk[::-1].astype(int))]
        here = np.array(image.TransformContinuousIndexToPhysicalPoint(ijk.tolist()))
        for axis, physical in ((2, 0), (1, 1), (0, 2)):  # axial x → L, y → P, z → S
            step = zyx.copy()
            step[axis] += 1
            there = np.array(image.TransformContinuousIndexToPhysicalPoint(frame.index_to_stored(step).tolist()))
            delta = there - here
            assert np.argmax(np.abs(delta)) == physical and delta[physical] > 0


@pytest.mark.parametrize("direction", list(signed_permutations()), ids=lambda d: str(d.astype(int).tolist()))
def test_axial_array_is_oriented_for_every_axis_permutation_and_flip(direction):
    assert_axial_orientation(synthetic_ct(direction=direction))


def test_axial_array_of_an_oblique_image_uses_the_closest_axes():
    image = synthetic_ct(direction=rotation(25) @ np.diag([1, -1, 1]))
    assert_axial_orientation(image)


def test_a_45_degree_image_is_refused_with_a_clear_message():
    with pytest.raises(URSAMError, match="oblique"):
        io.AxialFrame.of(synthetic_ct(direction=rotation(45)))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1, -1, 1]), rotation(20) @ np.diag([1, -1, -1]),
                                       np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]])])
def test_image_from_axial_restores_the_exact_voxels_and_grid(direction):
    image = synthetic_ct(direction=direction)
    axial, _ = io.axial_array(image, np.int16)
    back = io.image_from_axial(axial, image)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert back.GetOrigin() == image.GetOrigin() and back.GetDirection() == image.GetDirection()
    assert back.GetSpacing() == image.GetSpacing()


@pytest.mark.parametrize("name", ["ct_small.nii.gz", "labels_small.nii.gz", "dicom"])
def test_round_trip_of_real_abdomen_data_through_the_axial_frame(abdomen, tmp_path, name):
    image = io.read_image(abdomen / name)
    axial, frame = io.axial_array(image, np.int32)
    assert axial.shape == frame.shape and len(frame.shape) == 3
    out = tmp_path / "out.nii.gz"
    io.write_image(io.image_from_axial(axial, image), out)
    again = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(image).astype(np.int32))
    assert np.allclose(again.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(again.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert np.allclose(again.GetDirection(), image.GetDirection(), atol=1e-6)


def test_nifti_in_ras_is_flipped_to_the_radiological_view(abdomen):
    image = io.read_ct(abdomen / "ct_small.nii.gz")  # direction diag(-1, -1, 1)
    frame = io.AxialFrame.of(image)
    assert frame.flips == (False, True, True) and frame.shape == (30, 101, 122)
    assert frame.spacing == (3.0, 3.0, 3.0)


def test_dicom_series_reads_in_hounsfield_units_with_its_geometry(abdomen):
    image = io.read_ct(abdomen / "dicom")
    assert image.GetSize() == (512, 512, 20)
    assert np.allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    values = sitk.GetArrayViewFromImage(image)
    assert values.min() < -900 and 900 < values.max()  # air and bone, rescaled to HU


def test_label_map_written_from_dicom_with_flipped_rows_is_reindexed_exactly(abdomen):
    ct = io.read_ct(abdomen / "dicom")
    raw = sitk.ReadImage(str(abdomen / "dicom_labels.nii.gz"))
    assert raw.GetDirection() != ct.GetDirection()  # stored with the y axis reversed
    on_ct = io.read_label_map(abdomen / "dicom_labels.nii.gz", ct)
    assert on_ct.GetSize() == ct.GetSize() and on_ct.GetDirection() == ct.GetDirection()
    # Same physical voxels: the axial arrays of the raw and re-indexed maps agree.
    assert np.array_equal(io.axial_array(on_ct, np.int32)[0], io.axial_array(raw, np.int32)[0])
    liver = io.axial_array(on_ct, np.int32)[0] == 5
    hu = io.axial_array(ct)[0]
    assert 20 < np.median(hu[liver]) < 200  # the liver label sits on liver-like tissue


def test_dcmqi_dicom_slices_and_nrrd_masks_share_a_grid(dcmqi, tmp_path):
    ct = io.read_ct(dcmqi)
    assert ct.GetSize() == (512, 512, 3)
    for mask_name in ("liver_seg.nrrd", "spine_seg.nrrd", "heart_seg.nrrd", "liver_spine_seg.nrrd"):
        mask = io.read_label_map(dcmqi / mask_name, ct)
        axial, _ = io.axial_array(mask, np.uint16)
        assert axial.any()
        io.write_image(io.image_from_axial(axial, ct), tmp_path / "m.nrrd")
        again = io.read_label_map(tmp_path / "m.nrrd", ct)
        assert np.array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(mask))
    liver_spine = io.axial_array(io.read_label_map(dcmqi / "liver_spine_seg.nrrd", ct), np.uint16)[0]
    spine = io.axial_array(io.read_label_map(dcmqi / "spine_seg.nrrd", ct), np.uint16)[0]
    hu = io.axial_array(ct)[0]
    assert np.median(hu[spine > 0]) > np.median(hu[liver_spine == 1])  # bone brighter than liver


def test_label_map_on_another_grid_is_refused(abdomen):
    ct = io.read_ct(abdomen / "ct_small.nii.gz")
    with pytest.raises(URSAMError, match="another grid"):
        io.read_label_map(abdomen / "labels.nii.gz", ct)  # 112 slices vs 30


def test_label_map_in_memory_is_checked_and_reindexed_like_a_file():
    ct = synthetic_ct(direction=np.diag([1, -1, 1]))
    labels = sitk.GetImageFromArray((sitk.GetArrayFromImage(ct) > 0).astype(np.uint8)[:, ::-1])
    labels.SetSpacing(ct.GetSpacing())
    labels.SetOrigin(ct.TransformIndexToPhysicalPoint((0, ct.GetSize()[1] - 1, 0)))
    # same voxel centres, rows stored the other way round: re-indexed, not resampled
    on_ct = io.label_map_on_grid(labels, ct, "in-memory labels")
    assert np.array_equal(sitk.GetArrayFromImage(on_ct), (sitk.GetArrayFromImage(ct) > 0).astype(np.uint16))
    shifted = sitk.Image(labels)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(URSAMError, match="in-memory labels is on another grid"):
        io.label_map_on_grid(shifted, ct, "in-memory labels")


def test_unreadable_files_give_one_clear_error(tmp_path):
    fake = tmp_path / "ct.nii.gz"
    fake.write_text("this is not an image\n")
    with pytest.raises(URSAMError, match="named like a NIfTI file .* but holds text"):
        io.read_ct(fake)
    with pytest.raises(URSAMError, match="does not exist"):
        io.read_ct(tmp_path / "missing.nii.gz")
    with pytest.raises(URSAMError, match="no DICOM series"):
        io.read_ct(tmp_path)


def test_two_dimensional_and_constant_images_are_refused(tmp_path):
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)), str(png))
    with pytest.raises(URSAMError, match="2-D image"):
        io.read_ct(png)
    zero = tmp_path / "zero.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 32, 32), np.int16)), str(zero))
    with pytest.raises(URSAMError, match="constant"):
        io.read_ct(zero)


def test_nan_and_bad_spacing_are_refused():
    image = sitk.GetImageFromArray(np.full((4, 32, 32), np.nan, np.float32))
    with pytest.raises(URSAMError, match="NaN"):
        io.check_volume(image, "x")
    image = synthetic_ct()
    image.SetSpacing((1.0, 1.0, 80.0))  # ITK itself refuses zero spacing when it reads a file
    with pytest.raises(URSAMError, match="spacing"):
        io.check_volume(image, "x")


def test_class_maps_are_validated(tmp_path, abdomen):
    classes = io.read_classes(abdomen / "classes.json")
    assert classes[1] == "spleen" and classes[52] == "aorta"
    bad = tmp_path / "c.json"
    bad.write_text('{"one": "spleen"}')
    with pytest.raises(URSAMError, match="not an integer"):
        io.read_classes(bad)
    bad.write_text("{not json")
    with pytest.raises(URSAMError, match="not valid JSON"):
        io.read_classes(bad)
    bad.write_text('{"1": "liver", "2": "liver"}')
    with pytest.raises(URSAMError, match="twice"):
        io.read_classes(bad)


# --- bad files: refused from the header, before any voxel is read ---------------------------

def write_nifti(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), str(path).endswith(".gz"))
    return path


def patch_nifti_header(path, offset, fmt, *values):
    """Overwrite fields of an uncompressed NIfTI-1 header in place."""
    import struct

    data = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, data, offset, *values)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def no_voxel_reading(monkeypatch):
    """Fail the test if URSAM reads voxels (the checks must come from the header alone)."""
    def refuse(header):
        raise AssertionError(f"voxels of {header.path} were read")

    monkeypatch.setattr(io.reading, "_read_voxels", refuse)


def test_a_4d_image_is_refused_from_its_header(tmp_path, no_voxel_reading):
    four = tmp_path / "4d.nii.gz"  # e.g. a perfusion series: two 3-D volumes in one file
    sitk.WriteImage(sitk.JoinSeries([synthetic_ct(seed=0), synthetic_ct(seed=1)]), str(four))
    with pytest.raises(URSAMError, match="is a 4-D image; URSAM needs a 3-D CT volume: extract one 3-D volume"):
        io.read_ct(four)


def test_a_volume_beyond_the_hard_cap_is_refused_before_allocating(tmp_path, no_voxel_reading):
    # A complete (sparse) NIfTI of 2048 x 2048 x 300 voxels: its header alone decides.
    huge = write_nifti(tmp_path / "huge.nii", np.zeros((2, 16, 16), np.int16))
    patch_nifti_header(huge, 40, "8h", 3, 2048, 2048, 300, 1, 1, 1, 1)
    with open(huge, "r+b") as handle:
        handle.truncate(352 + 2048 * 2048 * 300 * 2)
    with pytest.raises(URSAMError, match=r"2048x2048x300 = 1,258,291,200 voxels, more than URSAM handles.*crop it"):
        io.read_ct(huge)
    with pytest.raises(URSAMError, match="more than URSAM handles"):
        io.read_image(huge)  # any image, not only a CT


def test_a_volume_larger_than_the_free_memory_is_refused_before_allocating(abdomen, monkeypatch, no_voxel_reading):
    from URSAMLib import memory

    voxels = 512 * 512 * 20  # the DICOM series' header: the size is known before its 20 files are read
    monkeypatch.setattr(memory, "available_memory", lambda: voxels * memory.BYTES_PER_VOXEL // 2)
    with pytest.raises(URSAMError, match=r"512x512x20 voxels: segmenting it needs about 0\.3 GB of memory, but only "
                                         r"0\.1 GB is free\. Close other programs, or crop it"):
        io.read_ct(abdomen / "dicom")


def test_when_the_free_memory_is_unknown_only_the_hard_cap_applies(abdomen, monkeypatch):
    from URSAMLib import memory

    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert io.read_ct(abdomen / "ct_small.nii.gz").GetSize() == (122, 101, 30)


@pytest.mark.parametrize("spacing", [0.0, 1e-6, float("nan")])
def test_zero_or_absurd_spacing_in_a_nifti_header_is_refused(tmp_path, spacing, no_voxel_reading):
    # ITK turns a zero pixdim into 1 mm without a word; URSAM reads the header itself.
    ct = write_nifti(tmp_path / "ct.nii", synthetic_array())
    patch_nifti_header(ct, 80, "f", spacing)
    with pytest.raises(URSAMError, match="spacing"):
        io.read_ct(ct)


def synthetic_array():
    return sitk.GetArrayFromImage(synthetic_ct())


@pytest.mark.parametrize("name, content, message", [
    ("ct.nii.gz", "png", "named like a NIfTI file (.nii.gz) but holds a PNG image; rename it to its real format"),
    ("ct.nrrd", "dicom", "named like a NRRD file (.nrrd) but holds a DICOM image; a DICOM CT is a series of files"),
    ("ct.nii", "nrrd", "named like a NIfTI file (.nii) but holds a NRRD image"),
    ("ct.mha", "text", "named like a MetaImage file (.mha) but holds text, not an image"),
    ("ct.nii.gz", "empty", "is empty (0 bytes)"),
    ("ct.nii.gz", "noise", "named like a NIfTI file (.nii.gz) but its content is not a NIfTI image"),
])
def test_content_that_does_not_match_the_file_name_is_refused(tmp_path, dcmqi, name, content, message):
    source = {"png": tmp_path / "a.png", "dicom": dcmqi / "01.dcm", "nrrd": dcmqi / "liver_seg.nrrd"}
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(4096, dtype=np.uint8).reshape(64, 64)), str(tmp_path / "a.png"))
    data = {"text": b"patient notes\n", "empty": b"", "noise": bytes(np.random.default_rng(0).integers(
        0, 256, 5000, dtype=np.uint8))}
    data = data[content] if content in data else source[content].read_bytes()
    (tmp_path / name).write_bytes(data)
    with pytest.raises(URSAMError) as error:
        io.read_image(tmp_path / name)
    assert message in str(error.value)


def test_a_single_dicom_file_asks_for_the_series_folder(dcmqi):
    with pytest.raises(URSAMError, match="is a single DICOM image .one slice.; give the folder"):
        io.read_ct(dcmqi / "01.dcm")


@pytest.mark.parametrize("name, compress", [("ct.nii", False), ("ct.nii.gz", True), ("ct.nrrd", False),
                                            ("ct.nrrd", True), ("ct.mha", False), ("ct.mha", True)])
def test_truncated_files_are_refused_and_itk_prints_nothing(tmp_path, capfd, name, compress):
    # ITK itself reads a truncated NIfTI as if the missing voxels were 0, and MetaImage's reader
    # prints its own diagnostics on stderr: the user must see neither.
    whole = tmp_path / ("whole" + name[2:])
    sitk.WriteImage(synthetic_ct(), str(whole), compress)
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[:int(len(data) * 0.9)])
    with pytest.raises(URSAMError, match="cut short|Could not read"):
        io.read_ct(cut)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_infinite_voxels_and_an_undefined_position_are_refused():
    array = synthetic_array().astype(np.float32)
    array[2, 3, 4] = np.inf
    with pytest.raises(URSAMError, match="NaN or infinite voxels"):
        io.check_volume(sitk.GetImageFromArray(array), "x")
    image = synthetic_ct()
    image.SetOrigin((0.0, float("nan"), 0.0))
    with pytest.raises(URSAMError, match="no valid position"):
        io.check_volume(image, "x")


def test_headers_of_real_data_match_what_is_read(abdomen, dcmqi):
    for path in (abdomen / "ct_small.nii.gz", abdomen / "dicom", dcmqi, dcmqi / "liver_seg.nrrd"):
        header = io.read_header(path)
        image = io.read_image(path)
        assert header.size == image.GetSize() and header.dimension == image.GetDimension()
        assert header.bytes_per_voxel == sitk.GetArrayViewFromImage(image).itemsize
        assert np.allclose(header.spacing[:2], image.GetSpacing()[:2])
    assert io.read_header(abdomen / "dicom").format == "DICOM" and len(io.read_header(abdomen / "dicom").files) == 20


# --- intensities that are not CT: a warning, measured against real CT -------------------------

@pytest.mark.slow
def test_no_ct_in_the_shared_data_is_taken_for_another_modality(abdomen, head_neck, dcmqi):
    paths = [abdomen / "ct.nii.gz", abdomen / "ct_small.nii.gz", abdomen / "dicom", dcmqi,
             abdomen.parent / "chest-ct" / "ct.nii.gz", *sorted(head_neck.glob("*/*_ct.nii.gz"))]
    warned = {}
    for path in paths:
        message = io.intensity_warning(io.axial_array(io.read_image(path))[0], str(path))
        if message:
            warned[str(path)] = message
    assert len(paths) > 200 and warned == {}


def body_phantom(shape=(12, 96, 96), seed=0):
    """Masks of a body cross-section: (body, fat rim, organ, bone) — what any modality images."""
    z, y, x = np.indices(shape)
    cy, cx = shape[1] / 2, shape[2] / 2
    radius = ((y - cy) / (0.4 * shape[1])) ** 2 + ((x - cx) / (0.45 * shape[2])) ** 2
    body = radius < 1
    fat = body & (radius > 0.75)
    organ = ((y - cy + 10) ** 2 + (x - cx - 12) ** 2) < 150
    bone = ((y - cy - 20) ** 2 + (x - cx) ** 2) < 25
    return body, fat, organ, bone


def mr_like(seed=0):
    """T1-weighted-like: positive values 0..4000, dark background noise, bright fat."""
    rng = np.random.default_rng(seed)
    body, fat, organ, bone = body_phantom()
    mr = rng.rayleigh(15, body.shape)  # background: Rician noise, never negative
    mr[body] = rng.normal(900, 80, body.sum())
    mr[fat] = rng.normal(2600, 150, fat.sum())
    mr[organ] = rng.normal(1300, 90, organ.sum())
    mr[bone] = rng.normal(250, 40, bone.sum())  # cortical bone is dark in MR
    return np.clip(mr, 0, 4000).astype(np.float32)


def pet_like(seed=0, units="suv"):
    """FDG-PET-like: ~0 outside, 0.5-2.5 SUV in the body, hot spots up to 20 (Bq/mL: x 5000)."""
    rng = np.random.default_rng(seed)
    body, _, organ, _ = body_phantom()
    pet = np.abs(rng.normal(0, 0.02, body.shape))
    pet[body] = rng.gamma(4, 0.3, body.sum())
    pet[organ] = rng.normal(12, 3, organ.sum())
    return (pet * (5000 if units == "bq" else 1)).astype(np.float32)


def ct_like(seed=0):
    rng = np.random.default_rng(seed)
    body, fat, organ, bone = body_phantom()
    ct = rng.normal(-1000, 10, body.shape)
    ct[body] = rng.normal(40, 15, body.sum())
    ct[fat] = rng.normal(-100, 15, fat.sum())
    ct[organ] = rng.normal(60, 10, organ.sum())
    ct[bone] = rng.normal(800, 100, bone.sum())
    return ct.astype(np.float32)


@pytest.mark.parametrize("volume, reason", [
    (mr_like(), "no voxel is below -500 HU, where air should be"),
    (pet_like(units="suv"), "no voxel is below -500 HU"),
    (pet_like(units="bq"), "no voxel is below -500 HU"),
    ((mr_like() - mr_like().mean()) / mr_like().std(), "no voxel is below -500 HU"),  # a z-scored MR
    (ct_like() + 1024, "no voxel is below -500 HU"),  # a CT stored without its rescale intercept
    (ct_like() * 10, "the body's median intensity is"),  # a CT in tenths of HU
], ids=["mr", "pet-suv", "pet-bq", "mr-z-scored", "ct-without-rescale", "ct-times-10"])
def test_mr_pet_and_unrescaled_ct_are_warned_about(volume, reason):
    message = io.intensity_warning(volume, "scan.nii.gz")
    assert message is not None and reason in message
    assert message.startswith("scan.nii.gz does not look like a CT in Hounsfield units")
    assert "window URSAM applies is then meaningless" in message


def test_the_synthetic_ct_phantom_is_not_warned_about():
    # the phantom the other modalities are made from passes, so the warnings above are the modality's
    assert io.intensity_warning(ct_like(), "ct") is None


def test_a_ct_cropped_to_an_organ_passes_but_air_free_tissue_alone_is_warned_about(abdomen):
    ct_image = io.read_ct(abdomen / "ct_small.nii.gz")
    ct = io.axial_array(ct_image)[0]
    labels = io.axial_array(io.read_label_map(abdomen / "labels_small.nii.gz", ct_image), np.uint16)[0]
    zs, ys, xs = np.nonzero(labels == 5)
    crop = ct[zs.min():zs.max(), ys.min() + 10:ys.max() - 10, xs.min() + 10:xs.max() - 10]
    assert io.intensity_warning(crop, "liver crop") is None  # a little bowel gas or lung is enough
    # The heuristic's known limit: a volume holding no air at all (here: the liver's voxels alone) is
    # warned about. The warning says why, so the user can judge; it does not stop the run.
    message = io.intensity_warning(ct[labels == 5], "liver voxels")
    assert message is not None and "no voxel is below -500 HU" in message


# --- fuzzing the volume loader: mutated NIfTI headers, truncated files -----------------------
# Bounded (a fixed number of examples, each a 23 kB file) and deterministic (the derandomized
# "ci" hypothesis profile of conftest.py). Whatever the bytes, read_ct either returns a volume
# that passed every check or raises URSAMError with one line; nothing else escapes, and ITK
# prints nothing of its own.

NIFTI_FIELDS = [(40, "h"), (42, "h"), (44, "h"), (46, "h"), (48, "h"),  # dim[0..4]
                (70, "h"), (72, "h"),  # datatype, bitpix
                (76, "f"), (80, "f"), (84, "f"), (88, "f"),  # pixdim[0..3] (pixdim[0]: qfac)
                (108, "f"), (112, "f"), (116, "f"),  # vox_offset, scl_slope, scl_inter
                (252, "h"), (254, "h"),  # qform_code, sform_code
                (256, "f"), (260, "f"), (268, "f"), (272, "f"),  # quatern_b, _c, qoffset_x, _y
                (280, "f"), (284, "f"), (296, "f"), (316, "f")]  # srow_x[0..1], srow_y[0], srow_z[1]


@functools.lru_cache(maxsize=1)
def base_nifti() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/ct.nii"
        sitk.WriteImage(sitk.Cast(synthetic_ct(), sitk.sitkInt16), path)
        with open(path, "rb") as handle:
            return handle.read()


field_value = {"h": st.one_of(st.integers(-32768, 32767), st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 16, 32767])),
               "f": st.one_of(st.floats(width=32), st.sampled_from([0.0, -1.0, 1e-7, 1e30, float("nan"),
                                                                    float("inf"), 352.0, 348.0, 1e9]))}
typed_mutation = st.sampled_from(NIFTI_FIELDS).flatmap(
    lambda field: st.tuples(st.just(field[0]), st.just(field[1]), field_value[field[1]]))
byte_mutation = st.tuples(st.integers(0, 351), st.just("B"), st.integers(0, 255))


def assert_read_ct_accepts_or_explains(path, capfd):
    try:
        image = io.read_ct(path)
    except URSAMError as error:
        assert "\n" not in str(error) and str(error)
    else:
        io.check_volume(image, "accepted")  # what is accepted passed every check
        assert image.GetDimension() == 3
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.one_of(typed_mutation, byte_mutation), min_size=1, max_size=5),
       compressed=st.booleans(), cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_fuzz_mutated_nifti_headers(tmp_path, capfd, mutations, compressed, cut):
    data = bytearray(base_nifti())
    for offset, fmt, value in mutations:
        struct.pack_into("<" + fmt, data, offset, value)
    if cut is not None:
        data = data[:int(len(data) * cut)]
    path = tmp_path / ("ct.nii.gz" if compressed else "ct.nii")
    path.write_bytes(gzip.compress(bytes(data), mtime=0) if compressed else bytes(data))
    assert_read_ct_accepts_or_explains(path, capfd)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["ct.nii", "ct.nii.gz", "ct.nrrd", "ct.mha"]), compressed=st.booleans(),
       keep=st.floats(0.0, 1.0, exclude_max=True), flip=st.one_of(st.none(), st.integers(0, 10**6)))
def test_fuzz_truncated_or_damaged_files(tmp_path, capfd, name, compressed, keep, flip):
    whole = tmp_path / ("whole-" + name)
    sitk.WriteImage(synthetic_ct(), str(whole), compressed or name.endswith(".gz"))
    data = bytearray(whole.read_bytes())
    if flip is not None:  # one damaged byte anywhere
        data[flip % len(data)] ^= 0x5A
    path = tmp_path / name
    path.write_bytes(bytes(data[:int(len(data) * keep)]))
    assert_read_ct_accepts_or_explains(path, capfd)


@pytest.mark.parametrize("name, dtype", [("ct.nii", np.float32), ("ct.nii.gz", np.float32), ("ct.nii.gz", np.float64)])
def test_nan_and_infinite_nifti_voxels_are_found_though_itk_reads_them_as_zero(tmp_path, name, dtype):
    array = synthetic_array().astype(dtype)
    array[1, 2, 3], array[4, 5, 6] = np.nan, -np.inf
    write_nifti(tmp_path / name, array)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name)))).all()  # ITK: zeros
    with pytest.raises(URSAMError, match=r"contains NaN or infinite voxels \(2, which would be read as 0\)"):
        io.read_ct(tmp_path / name)


def _series_copy(folder, change) -> None:
    """The first 6 files of the abdomen DICOM series in ``folder``, each passed through ``change(i, dataset)``
    (headers only matter: the geometry check reads no voxels)."""
    import pydicom

    from conftest import ABDOMEN

    folder.mkdir()
    for index, source in enumerate(sorted((ABDOMEN / "dicom").glob("*.dcm"))[:6]):
        dataset = pydicom.dcmread(source)
        change(index, dataset)
        dataset.save_as(folder / source.name)


def test_dicom_series_off_a_regular_grid_are_refused_from_their_headers(abdomen, tmp_path):
    def rotated(index, dataset):
        if index == 3:
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 0.9998, 0.02]

    def repeated(index, dataset):
        if index == 3:
            dataset.ImagePositionPatient = [float(v) for v in dataset.ImagePositionPatient[:2]] + [
                float(dataset.ImagePositionPatient[2]) + 2.0]  # on the position of the file before it

    _series_copy(tmp_path / "rotated", rotated)
    with pytest.raises(URSAMError, match="have different orientations"):
        io.read_header(tmp_path / "rotated")
    _series_copy(tmp_path / "repeated", repeated)
    with pytest.raises(URSAMError, match="holds two slices at one position"):
        io.read_header(tmp_path / "repeated")
    _series_copy(tmp_path / "fine", lambda index, dataset: None)
    assert io.read_header(tmp_path / "fine").size == (512, 512, 6)
