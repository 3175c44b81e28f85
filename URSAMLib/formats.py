"""Image files recognised by their content, and checked to be complete, before ITK reads them.

ITK picks a reader by trying each format, so a PNG named ``ct.nii.gz`` is read as a 2-D PNG,
and a DICOM file named ``ct.nrrd`` as a DICOM slice. It also reads a *truncated* NIfTI file
(``.nii`` or ``.nii.gz``) without complaint, filling the missing voxels with zeros: a CT cut
short by a failed copy would be segmented as if half of it were water. And it reads NaN and
infinite NIfTI voxels as 0. This module tells what a file holds from its first bytes
(:func:`sniff`) and whether a NIfTI file holds all the voxels its header announces, all of them
finite (:func:`nifti_problem`), so :mod:`URSAMLib.io` can refuse these with a clear message.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# File name ending → (ITK ImageIO that must read it, the format's name for users).
BY_SUFFIX: dict[str, tuple[str, str]] = {
    ".nii": ("NiftiImageIO", "NIfTI"),
    ".nii.gz": ("NiftiImageIO", "NIfTI"),
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".nhdr": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
    ".dcm": ("GDCMImageIO", "DICOM"),
}

IMAGE_SUFFIXES = tuple(ending for ending, (_, name) in BY_SUFFIX.items() if name != "DICOM")
"""The volume files URSAM reads: .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd (a DICOM CT is a folder of files)."""

_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"NRRD", "NRRD"),
    (128, b"DICM", "DICOM"),
    (0, b"\x89PNG", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"PK\x03\x04", "ZIP archive"),
    (0, b"%PDF", "PDF document"),
    (0, b"\x89HDF", "HDF5"),
]

_HEAD_BYTES = 1024


def suffix(path: str | os.PathLike) -> str:
    """The file name's format ending, lower case (``.nii.gz`` counts as one)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _head(path: Path) -> bytes:
    """The first bytes of a file, gunzipped if it is gzip-compressed (b"" if unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as handle:
                return handle.read(_HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""
    return head


def sniff(path: str | os.PathLike) -> str | None:
    """The format a file's content is in (a name from :data:`BY_SUFFIX` or another well-known
    format), ``"text"`` for plain text, ``"an empty file"``, or None when it is not recognised."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "an empty file"
    except OSError:
        return None
    head = _head(path)
    if not head:
        return None
    if _nifti_layout(head) is not None:
        return "NIfTI"
    for offset, magic, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    first_line = head.split(b"\n", 1)[0]
    if first_line.startswith((b"ObjectType", b"NDims")) and b"=" in first_line:
        return "MetaImage"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text"


# ---------------------------------------------------------------------------------------
# NIfTI headers

@dataclass(frozen=True)
class _Layout:
    """Where a NIfTI-1 or NIfTI-2 header keeps the fields checked here."""

    endian: str
    dim: tuple[int, str]
    """Offset and struct format of the 8 dimensions."""
    pixdim: tuple[int, str]
    vox_offset: tuple[int, str]
    bitpix: tuple[int, str]
    datatype: tuple[int, str]


def _nifti_layout(head: bytes) -> _Layout | None:
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        for endian in "<>":
            if struct.unpack_from(endian + "i", head, 0)[0] == 348:
                return _Layout(endian, (40, "8h"), (76, "8f"), (108, "f"), (72, "h"), (70, "h"))
    if len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"):
        for endian in "<>":
            if struct.unpack_from(endian + "i", head, 0)[0] == 540:
                return _Layout(endian, (16, "8q"), (104, "8d"), (168, "q"), (14, "h"), (12, "h"))
    return None


def _field(head: bytes, layout: _Layout, which: tuple[int, str]):
    offset, fmt = which
    values = struct.unpack_from(layout.endian + fmt, head, offset)
    return values if len(values) > 1 else values[0]


def nifti_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a NIfTI file that ITK would read anyway (a phrase that follows the file's
    name: "is cut short: ..."), or None.

    Checks that the voxel spacing is a positive number (ITK silently turns 0 into 1 mm), that
    the file holds every voxel its header announces (ITK silently reads a truncated file, the
    missing voxels as zeros) and that float voxels are finite (ITK reads NaN and infinity as 0);
    for a ``.nii.gz`` that means decompressing it once, which also verifies its checksum.
    """
    path = Path(path)
    head = _head(path)
    layout = _nifti_layout(head)
    if layout is None:
        return None  # not a NIfTI file: ITK's own reader reports it
    dims = _field(head, layout, layout.dim)
    pixdim = _field(head, layout, layout.pixdim)
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]):
        return (f"has impossible dimensions {dims[1:max(1, min(ndim, 7)) + 1]} in its header: it is damaged; "
                "copy or export it again")
    spatial = pixdim[1:min(ndim, 3) + 1]
    if any(not math.isfinite(s) or s == 0 for s in spatial):
        return (f"has voxel spacing {tuple(round(s, 6) for s in spatial)} mm in its header; spacing must be "
                "positive: fix the image header or export the image again")
    bits = _field(head, layout, layout.bitpix)
    vox_offset = _field(head, layout, layout.vox_offset)
    if bits <= 0 or bits % 8 or not math.isfinite(vox_offset) or vox_offset < 0:
        return None  # ITK refuses these itself
    expected = int(vox_offset) + math.prod(dims[1:ndim + 1]) * bits // 8
    floats = _FLOAT_TYPES.get(_field(head, layout, layout.datatype))
    dtype = np.dtype(layout.endian + floats) if floats and np.dtype(floats).itemsize * 8 == bits else None
    stored, intact, nonfinite = _scan(path, int(vox_offset), expected, dtype)
    if not intact:
        return (f"is damaged or cut short: its compressed data breaks off after {stored:,} of the {expected:,} "
                "bytes its header announces (an interrupted copy or download?); copy or export it again")
    if stored < expected:
        return (f"is cut short: it holds {stored:,} of the {expected:,} bytes its header announces "
                "(an interrupted copy or download?); copy or export it again")
    if nonfinite:
        return (f"contains NaN or infinite voxels ({nonfinite:,}, which would be read as 0); replace them "
                "(e.g. by -1024 HU) first")
    return None


_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


def _scan(path: Path, vox_offset: int, expected: int, dtype: np.dtype | None) -> tuple[int, bool, int]:
    """Read a NIfTI file's data once: how many bytes it holds (uncompressed), whether its gzip stream
    is intact (complete, with matching checksums), and how many voxels are NaN or infinite (for a
    float ``dtype``). Decompresses in bounded pieces and stops well past ``expected`` bytes, so a
    "zip bomb" costs neither memory nor much time."""
    total, nonfinite, carry = 0, 0, b""

    def take(block: bytes) -> None:
        nonlocal total, nonfinite, carry
        start, total = total, total + len(block)
        low, high = max(vox_offset - start, 0), min(expected - start, len(block))
        if dtype is None or high <= low:
            return
        data = carry + block[low:high]
        usable = len(data) - len(data) % dtype.itemsize
        values = np.frombuffer(data[:usable], dtype)
        nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
        carry = data[usable:]

    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        if not compressed:
            if dtype is None:
                return path.stat().st_size, True, 0
            while block := handle.read(1 << 22):
                take(block)
            return total, True, nonfinite
        inflate = zlib.decompressobj(31)  # gzip framing: the CRC-32 and length are checked at the end
        pending = b""
        while total <= expected + (64 << 20):
            if not pending:
                pending = handle.read(1 << 20)
                if not pending:
                    return total, inflate.eof, nonfinite
            try:
                take(inflate.decompress(pending, 1 << 22))
            except zlib.error:
                return total, False, nonfinite
            if inflate.eof:  # end of a gzip member: another may follow (e.g. bgzip)
                pending = inflate.unused_data or handle.read(1 << 20)
                if not pending.startswith(b"\x1f\x8b"):
                    return total, True, nonfinite
                inflate = zlib.decompressobj(31)
            else:
                pending = inflate.unconsumed_tail
        return total, True, nonfinite
