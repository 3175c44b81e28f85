"""URSAMLib.formats: what a file holds, from its bytes, and whether a NIfTI file is complete."""
import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import synthetic_ct
from URSAMLib import formats


def test_the_formats_of_the_real_data_are_recognised_by_content(abdomen, dcmqi, head_neck):
    assert formats.sniff(abdomen / "ct_small.nii.gz") == "NIfTI"
    assert formats.sniff(head_neck / "validation/pt_201_ct.nii.gz") == "NIfTI"
    assert formats.sniff(dcmqi / "01.dcm") == "DICOM"
    assert formats.sniff(dcmqi / "liver_seg.nrrd") == "NRRD"
    assert formats.sniff(abdomen / "classes.json") == "text"
    for path in (abdomen / "ct.nii.gz", abdomen / "labels_small.nii.gz", head_neck / "validation/pt_201_oar.nii.gz"):
        assert formats.nifti_problem(path) is None


@pytest.mark.parametrize("name, compress, expected", [("a.mha", False, "MetaImage"), ("a.mha", True, "MetaImage"),
                                                      ("a.nrrd", True, "NRRD"), ("a.nii", False, "NIfTI"),
                                                      ("a.png", False, "PNG"), ("a.tif", False, "TIFF")])
def test_formats_written_by_simpleitk(tmp_path, name, compress, expected):
    image = synthetic_ct() if not name.endswith((".png", ".tif")) else \
        sitk.GetImageFromArray(np.zeros((20, 20), np.uint8))
    sitk.WriteImage(image, str(tmp_path / name), compress)
    assert formats.sniff(tmp_path / name) == expected


def test_suffixes_count_nii_gz_as_one():
    assert formats.suffix("/a/b/CT.NII.GZ") == ".nii.gz" and formats.suffix("x.nrrd") == ".nrrd"
    assert formats.suffix("series/IM0001") == ""


def test_a_big_endian_nifti_header_is_read(tmp_path):
    path = tmp_path / "be.nii"
    sitk.WriteImage(synthetic_ct(), str(path))
    data = bytearray(path.read_bytes())
    # re-encode the fields the check reads in big-endian order
    dims = struct.unpack_from("<8h", data, 40)
    pixdim = struct.unpack_from("<8f", data, 76)
    bitpix = struct.unpack_from("<h", data, 72)[0]
    vox_offset = struct.unpack_from("<f", data, 108)[0]
    struct.pack_into(">i", data, 0, 348)
    struct.pack_into(">8h", data, 40, *dims)
    struct.pack_into(">8f", data, 76, *pixdim)
    struct.pack_into(">h", data, 72, bitpix)
    struct.pack_into(">f", data, 108, vox_offset)
    path.write_bytes(bytes(data))
    assert formats.sniff(path) == "NIfTI" and formats.nifti_problem(path) is None
    path.write_bytes(bytes(data[:-10]))
    assert "cut short" in formats.nifti_problem(path)


def test_a_corrupt_gzip_stream_is_found(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(synthetic_ct(), str(path), True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC of the uncompressed data
    path.write_bytes(bytes(data))
    with gzip.open(path) as handle:
        assert handle.read(348)  # the header itself still reads
    assert "damaged or cut short" in formats.nifti_problem(path)
