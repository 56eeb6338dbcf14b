"""Image reading and writing with SimpleITK; the ONLY module where axes flip.

SimpleITK speaks (x, y, z); numpy arrays from it are (z, y, x). Everything outside this module uses array
order: images are float32 ``(C, Z, Y, X)``, label maps integer ``(Z, Y, X)``, spacings ``(z, y, x)`` in mm.
:class:`Geometry` keeps the ITK header as read so that outputs are written back with the input's exact
spacing, origin and direction.

2D images (PNG and friends, or 2D NIfTI) are read as a single slice ``(1, Y, X)`` with a z spacing of 999, the
convention nnU-Net uses so that its planner never pools across slices.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from sauronnet.atomic import atomic_path

#: z spacing given to 2D images (nnU-Net's convention).
SPACING_2D = 999.0
#: Tolerances when comparing the geometries of the files of one case (mm and direction cosines).
GEOMETRY_RTOL = 1e-5
GEOMETRY_ATOL = 1e-5


@dataclass(frozen=True)
class Geometry:
    """Header of an image as SimpleITK reports it, in ITK (x, y, z) order.

    Attributes:
        spacing: voxel size, ITK order (x, y[, z]).
        origin: world position of the first voxel, ITK order.
        direction: direction cosines, row-major, ITK order (4 or 9 values).
        shape: array shape in numpy order (z, y, x) — always 3 values (2D images get z = 1).
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    shape: tuple[int, ...]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order (z, y, x); 2D images get z = :data:`SPACING_2D`."""
        if len(self.spacing) == 2:
            return (SPACING_2D, float(self.spacing[1]), float(self.spacing[0]))
        return tuple(float(s) for s in self.spacing[::-1])  # type: ignore[return-value]

    def mismatch(self, other: Geometry) -> str | None:
        """Describes how ``other`` differs from this geometry beyond tolerance, or None if they agree."""
        if self.shape != other.shape:
            return f"shape {other.shape} != {self.shape}"
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if a.shape != b.shape or not np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL):
                return f"{name} {tuple(np.round(b, 6))} != {tuple(np.round(a, 6))}"
        return None


def _geometry_of(img: sitk.Image) -> Geometry:
    size = img.GetSize()
    shape = (1, size[1], size[0]) if len(size) == 2 else tuple(int(s) for s in size[::-1])
    return Geometry(tuple(float(s) for s in img.GetSpacing()), tuple(float(o) for o in img.GetOrigin()),
                    tuple(float(d) for d in img.GetDirection()), shape)


def read_geometry(path: str | Path) -> Geometry:
    """Reads only the header of ``path`` (cheap; no voxel data)."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise ValueError(f"{path}: SimpleITK cannot read this file's header ({_first_line(e)}); "
                         "re-export it as .nii.gz, .nrrd or .mha") from e
    size = reader.GetSize()
    if len(size) not in (2, 3) or reader.GetNumberOfComponents() != 1:
        raise ValueError(f"{path}: expected a 2D or 3D single-component image, got size {size} with "
                         f"{reader.GetNumberOfComponents()} components; split channels into separate files "
                         "(CASE_0000, CASE_0001, ...)")
    shape = (1, size[1], size[0]) if len(size) == 2 else tuple(int(s) for s in size[::-1])
    return Geometry(tuple(float(s) for s in reader.GetSpacing()), tuple(float(o) for o in reader.GetOrigin()),
                    tuple(float(d) for d in reader.GetDirection()), shape)


#: NIfTI datatype codes of floating-point voxels (float32, float64) and their numpy types
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(voxel offset, total bytes the file must hold, numpy float type or None) of a NIfTI-1/-2 header, or None
    if ``header`` is not NIfTI."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            offset = max(352, int(struct.unpack(order + "f", header[108:112])[0]))
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            dims = struct.unpack(order + "8q", header[16:80])
            offset = max(544, struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    n = dims[0]
    if not 1 <= n <= 7 or any(d < 0 for d in dims[1:n + 1]):
        return None
    size = offset + int(np.prod(dims[1:n + 1], dtype=np.int64)) * bitpix // 8
    dtype = order + _NIFTI_FLOATS[datatype] if datatype in _NIFTI_FLOATS else None
    return offset, size, dtype


def _stream(path: Path, compressed: bool):
    """The file's (decompressed) bytes in chunks; stops quietly where a truncated gzip stream ends."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if compressed else None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            if inflate is None:
                yield chunk
                continue
            try:
                yield inflate.decompress(chunk)
            except zlib.error:
                return
            if inflate.eof:
                return


def check_nifti(path: Path) -> None:
    """Raises ValueError for a NIfTI file (.nii, .nii.gz) that is incomplete or holds NaN/inf voxels.

    SimpleITK reads a half-written or half-copied file without any error (the missing voxels become zeros), and
    its NIfTI reader turns NaN and inf voxels into ordinary numbers, so neither can be seen after reading. A
    float file is therefore scanned as stored (one decompression); an integer one cannot hold NaN, and is checked
    by its size: a .nii by the file's, a .nii.gz by the uncompressed size in its last four bytes (gzip's ISIZE),
    decompressing it only when that disagrees.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")) or path.is_dir():
        return
    compressed = name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            header = f.read(544)
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the NIfTI header ({e}); the file is damaged or not NIfTI: "
                         "copy or export it again") from e
    layout = _nifti_layout(header)
    if layout is None:
        return
    offset, expected, dtype = layout
    if dtype is None and not compressed:
        actual = path.stat().st_size
    elif dtype is None:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
        actual = sum(len(c) for c in _stream(path, True))
    else:
        actual, bad, pending = 0, 0, b""
        item = np.dtype(dtype).itemsize
        for chunk in _stream(path, compressed):
            lo, hi = max(offset - actual, 0), max(min(len(chunk), expected - actual), 0)
            actual += len(chunk)
            pending += chunk[lo:hi]
            usable = len(pending) - len(pending) % item
            values = np.frombuffer(pending[:usable], dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            pending = pending[usable:]
        if actual >= expected and bad:
            raise ValueError(f"{path}: {bad} NaN/inf voxel(s) (SimpleITK would silently read them as other "
                             "values); replace them, e.g. with the background value")
    if actual < expected:
        raise ValueError(f"{path}: the file is incomplete ({actual:,} of {expected:,} bytes its header announces"
                         f"{', uncompressed' if compressed else ''}); it was cut while being written or copied: "
                         "copy or export it again")


def _read(path: Path) -> sitk.Image:
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    check_nifti(path)
    try:
        if path.is_dir():
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not names:
                raise ValueError(f"{path}: folder holds no DICOM series")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(names)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: SimpleITK cannot read this file ({_first_line(e)}); "
                         "re-export it as .nii.gz, .nrrd or .mha") from e
    if img.GetDimension() not in (2, 3) or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 2D or 3D single-component image, got dimension "
                         f"{img.GetDimension()} with {img.GetNumberOfComponentsPerPixel()} components; split "
                         "channels into separate files (CASE_0000, CASE_0001, ...)")
    return img


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _to_array(img: sitk.Image) -> np.ndarray:
    arr = sitk.GetArrayFromImage(img)
    return arr[None] if arr.ndim == 2 else arr


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Reads one image channel.

    Returns:
        ``data``: float32 (Z, Y, X); its :class:`Geometry`.
    """
    img = _read(Path(path))
    return _to_array(img).astype(np.float32, copy=False), _geometry_of(img)


def read_images(paths: Sequence[str | Path]) -> tuple[np.ndarray, Geometry]:
    """Reads the channels of one case and checks that their geometries agree.

    Returns:
        ``data``: float32 (C, Z, Y, X); the geometry of the first channel.

    Raises:
        ValueError: if a channel's shape, spacing, origin or direction differs from the first one's.
    """
    arrays, geometry = [], None
    for p in paths:
        arr, geo = read_image(p)
        if geometry is None:
            geometry = geo
        else:
            diff = geometry.mismatch(geo)
            if diff:
                raise ValueError(f"{p}: geometry differs from {paths[0]} ({diff}); resample all channels of a "
                                 "case onto the same grid")
        arrays.append(arr)
    if geometry is None:
        raise ValueError("read_images needs at least one file")
    return np.stack(arrays), geometry


def read_seg(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Reads a label map.

    Returns:
        ``seg``: the file's integer dtype (Z, Y, X) (floats are kept so that a caller can reject them);
        its :class:`Geometry`.
    """
    img = _read(Path(path))
    return _to_array(img), _geometry_of(img)


def write_seg(seg: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Writes a label map ``seg`` (Z, Y, X) with ``geometry``'s exact header, atomically."""
    path = Path(path)
    arr = np.asarray(seg)
    if arr.shape != tuple(geometry.shape):
        raise ValueError(f"{path}: label map shape {arr.shape} != geometry shape {geometry.shape}")
    dtype = np.uint8 if arr.min(initial=0) >= 0 and arr.max(initial=0) < 256 else np.int16
    img = sitk.GetImageFromArray(arr[0].astype(dtype) if len(geometry.spacing) == 2 else arr.astype(dtype))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    _write_atomic(img, path)


def write_image(data: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Writes a float32 image ``data`` (Z, Y, X) with ``geometry``'s exact header, atomically."""
    path = Path(path)
    arr = np.asarray(data, dtype=np.float32)
    img = sitk.GetImageFromArray(arr[0] if len(geometry.spacing) == 2 else arr)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    _write_atomic(img, path)


def write_channels(data: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Writes float32 maps ``data`` (C, Z, Y, X) of a 3D image as one 4D image (x, y, z, channel) whose first
    three axes carry ``geometry``'s exact spacing, origin and direction (viewers overlay it on the input)."""
    if len(geometry.spacing) != 3:
        raise ValueError("4D channel images are written for 3D geometries only")
    series = []
    for channel in np.asarray(data, dtype=np.float32):
        img = sitk.GetImageFromArray(channel)
        img.SetSpacing(geometry.spacing)
        img.SetOrigin(geometry.origin)
        img.SetDirection(geometry.direction)
        series.append(img)
    joined = sitk.JoinSeries(series, 0.0, 1.0)
    direction = np.eye(4)
    direction[:3, :3] = np.asarray(geometry.direction).reshape(3, 3)
    joined.SetDirection(direction.flatten().tolist())
    _write_atomic(joined, Path(path))


def _write_atomic(img: sitk.Image, path: Path) -> None:
    # the temporary file keeps the target's extension so SimpleITK picks the same format
    with atomic_path(path, "".join(path.suffixes) or ".nii.gz") as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
