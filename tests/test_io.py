"""Tests of thagpu.io: reading CT files and DICOM series, writing labels back."""

from __future__ import annotations

import logging
import math
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from thagpu.errors import InputError
from thagpu.geometry import LPS_TO_RAS, Geometry
from thagpu.io import load_ct, save_labels, save_volume, write_image

BONE_HU = 1200
TISSUE_HU = 40
AIR_HU = -1000


# --------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------

def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    a, b = [n for n in range(3) if n != axis]
    m = np.eye(3)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


#: Direction matrices (columns: the i, j, k axes in LPS).
ORIENTATIONS = {
    "lps": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # i=P, j=S, k=L
    "flipped": np.diag([1.0, -1.0, -1.0]),  # i=L, j=A, k=I
    # i=S, j=R, k=P: permuted, flipped and left-handed (det -1).
    "permuted_flipped": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
    "oblique": _rotation(0, 20.0) @ _rotation(2, 20.0),
}

SIZE = (20, 24, 16)
SPACING = (0.8, 1.1, 2.5)
ORIGIN = (-30.5, 12.25, 101.0)


def _geometry(direction: np.ndarray) -> Geometry:
    return Geometry(size=SIZE, spacing=SPACING, origin=ORIGIN,
                    direction=tuple(float(d) for d in np.asarray(direction).ravel()))


def _ras_positions(geometry: Geometry) -> np.ndarray:
    """(I, J, K, 3) RAS millimetres of every stored voxel."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.size], indexing="ij"), axis=-1)
    lps = idx @ geometry.index_to_lps()[:3, :3].T + geometry.index_to_lps()[:3, 3]
    return lps @ LPS_TO_RAS.T


def _synthetic_ct(geometry: Geometry):
    """Stored (i, j, k) int16 CT and its bone blob: right, anterior and inferior."""
    ras = _ras_positions(geometry)
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    blob = ((x > np.quantile(x, 0.65)) & (y > np.quantile(y, 0.6))
            & (z < np.quantile(z, 0.4)))
    ct = np.full(geometry.size, TISSUE_HU, dtype=np.int16)
    ct[0, :, :] = AIR_HU  # air along one face
    ct[:, 0, :] = AIR_HU
    ct[blob] = BONE_HU
    return ct, blob


def _sitk_image(array_ijk: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk.transpose(2, 1, 0)))
    geometry.apply_to(image)
    return image


def _write(array_ijk, geometry: Geometry, path: Path) -> Path:
    sitk.WriteImage(_sitk_image(array_ijk, geometry), str(path))
    return path


def _write_dicom_series(folder: Path, array_ijk: np.ndarray, geometry: Geometry, *,
                        uid: str = "1.2.826.0.1.3680043.2.1125.7.1",
                        description: str = "synthetic CT", seed: int = 0,
                        prefix: str = "IM") -> list:
    """Write one int16 DICOM file per k slice under shuffled names; return them in k order."""
    folder.mkdir(parents=True, exist_ok=True)
    direction = geometry.direction_matrix
    orientation = "\\".join(f"{v:.10g}" for v in [*direction[:, 0], *direction[:, 1]])
    names = [f"{prefix}{n:04d}.dcm" for n in range(geometry.size[2])]
    random.Random(seed).shuffle(names)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(geometry.size[2]):
        position = np.asarray(geometry.origin) + direction[:, 2] * geometry.spacing[2] * k
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_ijk[:, :, k].T.astype(np.int16)))
        image.SetSpacing(geometry.spacing[:2])
        for tag, value in [
            ("0008|0060", "CT"),
            ("0008|103e", description),
            ("0020|000e", uid),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.7"),
            ("0020|0013", str(int(names[k][len(prefix):-4]) + 1)),  # shuffled too
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0037", orientation),
            ("0028|1052", "-1024"),
            ("0028|1053", "1"),
        ]:
            image.SetMetaData(tag, value)
        path = folder / names[k]
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


def _assert_one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(str(path) + ": ")
    assert excinfo.value.path == str(path)
    return message


#: How closely each format keeps a header through a write and a read: MetaImage
#: exactly; NRRD stores spacing x direction, so an oblique header comes back
#: within an ulp or so; NIfTI stores float32.
HEADER_ATOL = {".mha": 0.0, ".mhd": 0.0, ".nrrd": 1e-12, ".nii": 1e-6, ".nii.gz": 1e-6}


def _assert_same_header(written: sitk.Image, reference: Geometry, atol: float) -> None:
    assert tuple(written.GetSize()) == tuple(reference.size)
    for got, want in [(written.GetSpacing(), reference.spacing),
                      (written.GetOrigin(), reference.origin),
                      (written.GetDirection(), reference.direction)]:
        if atol == 0:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        else:
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=atol)


def _check_blob(volume, geometry: Geometry, blob: np.ndarray) -> None:
    """The blob lies right, anterior, inferior, and its centroid maps to the same RAS point."""
    mask = volume.array > 500
    assert mask.sum() == blob.sum()
    centroid = np.argwhere(mask).mean(axis=0)
    shape = np.asarray(volume.shape)
    assert centroid[0] > (shape[0] - 1) / 2  # patient right: large axis-0 indices
    assert centroid[1] > (shape[1] - 1) / 2  # anterior
    assert centroid[2] < (shape[2] - 1) / 2  # inferior
    expected = _ras_positions(geometry)[blob].mean(axis=0)
    np.testing.assert_allclose(volume.index_to_ras(centroid)[0], expected, rtol=0, atol=1e-3)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------

FILE_SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"]
FORMAT_NAMES = {".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".mha": "metaimage",
                ".mhd": "metaimage"}


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_file_round_trip(tmp_path, orientation, suffix):
    geometry = _geometry(ORIENTATIONS[orientation])
    ct, blob = _synthetic_ct(geometry)
    source = _write(ct, geometry, tmp_path / f"ct{suffix}")
    reference = Geometry.from_sitk(sitk.ReadImage(str(source)))

    volume = load_ct(source)

    assert volume.info["format"] == FORMAT_NAMES[suffix]
    assert volume.info["clipped_padding_voxels"] == 0
    assert volume.source == str(source)
    assert volume.array.dtype == np.float32
    assert volume.original == reference
    np.testing.assert_array_equal(volume.to_stored(volume.array), ct.astype(np.float32))
    _check_blob(volume, geometry, blob)

    out = save_labels((volume.array > 500).astype(np.uint8), volume, tmp_path / f"labels{suffix}")
    assert out == tmp_path / f"labels{suffix}"
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkUInt8
    _assert_same_header(written, reference, HEADER_ATOL[suffix])
    _assert_same_header(written, geometry, HEADER_ATOL[suffix])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0),
                                  blob.astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_dicom_round_trip(tmp_path, orientation):
    geometry = _geometry(ORIENTATIONS[orientation])
    ct, blob = _synthetic_ct(geometry)
    _write_dicom_series(tmp_path / "series", ct, geometry, seed=len(orientation))

    volume = load_ct(tmp_path / "series")

    assert volume.info["format"] == "dicom"
    assert volume.info["n_slices"] == SIZE[2]
    assert volume.info["dicom_series"]["other_series"] == 0
    assert "dicom_geometry_fixed" not in volume.info
    original = volume.original
    assert original.size == SIZE
    np.testing.assert_allclose(original.spacing, SPACING, atol=1e-5)
    # Slices are stacked along row x column, whatever the handedness written.
    d = original.direction_matrix
    assert np.linalg.det(d) == pytest.approx(1.0)
    np.testing.assert_allclose(d[:, :2], geometry.direction_matrix[:, :2], atol=1e-6)
    _check_blob(volume, geometry, blob)

    out = save_labels(volume.array > 500, volume, tmp_path / "labels.nii.gz")
    written = sitk.ReadImage(str(out))
    _assert_same_header(written, original, HEADER_ATOL[".nii.gz"])
    labels_ijk = sitk.GetArrayFromImage(written).transpose(2, 1, 0)
    np.testing.assert_array_equal(labels_ijk, (volume.to_stored(volume.array) > 500).astype(np.uint8))
    # The labelled voxels sit where the blob was written, in patient space.
    expected = _ras_positions(geometry)[blob].mean(axis=0)
    found = _ras_positions(Geometry.from_sitk(written))[labels_ijk == 1].mean(axis=0)
    np.testing.assert_allclose(found, expected, atol=1e-3)


def test_save_volume_round_trip(tmp_path):
    geometry = _geometry(ORIENTATIONS["oblique"])
    ct, _ = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.mha"))
    shifted = volume.with_array(volume.array + 0.4)  # rounds back to the same integers

    out = save_volume(shifted, tmp_path / "copy.nrrd")

    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkInt16
    _assert_same_header(written, volume.original, HEADER_ATOL[".nrrd"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), ct)
    again = load_ct(out)
    np.testing.assert_array_equal(again.array, volume.array)
    _assert_same_header(written, again.original, 0.0)


def test_save_volume_clips_to_int16(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nrrd"))
    array = volume.array.copy()
    array[1, 1, 1], array[2, 2, 2] = 1e6, -1e6
    out = save_volume(volume.with_array(array), tmp_path / "out.mha")
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)
    canonical = volume.orientation.to_canonical(stored)
    assert canonical[1, 1, 1] == 32767 and canonical[2, 2, 2] == -32768


def test_write_image_stored_order(tmp_path):
    geometry = _geometry(ORIENTATIONS["permuted"])
    array = np.arange(np.prod(SIZE), dtype=np.int32).reshape(SIZE)
    out = write_image(array, geometry, tmp_path / "sub" / "a.nii.gz", dtype=np.int32)
    image = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), array)
    _assert_same_header(image, geometry, HEADER_ATOL[".nii.gz"])
    with pytest.raises(ValueError, match="geometry size"):
        write_image(array[:-1], geometry, tmp_path / "b.nii.gz")
    with pytest.raises(ValueError, match="cannot write file type"):
        write_image(array, geometry, tmp_path / "b.png")


def test_padding_clipped(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    ct[:3, :3, :] = -3024
    ct[-1, -1, 0] = -2048
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nii.gz"))
    assert volume.info["clipped_padding_voxels"] == 3 * 3 * SIZE[2] + 1
    assert volume.info["hu_range"] == [-3024.0, float(BONE_HU)]
    assert float(volume.array.min()) == -1024.0
    stored = volume.to_stored(volume.array)
    assert np.all(stored[:3, :3, :] == -1024.0) and stored[-1, -1, 0] == -1024.0


def test_values_beyond_any_scanner_clipped(tmp_path):
    """A corrupt voxel of 1e30 would overflow float32 in a local variance: it is clipped and counted."""
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    ct = ct.astype(np.float32)
    ct[1, 2, 3] = 1e30
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nii.gz"))
    assert volume.info["clipped_high_voxels"] == 1
    assert float(volume.array.max()) == 65535.0
    assert volume.info["hu_range"][1] == pytest.approx(1e30, rel=1e-6)


def _nifti_with_pixdim(tmp_path, pixdim) -> Path:
    """A plain CT NIfTI whose header's pixdim[1:4] is rewritten (ITK would read 0 or NaN as 1 mm)."""
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    path = _write(ct, geometry, tmp_path / "ct.nii")
    data = bytearray(path.read_bytes())
    struct.pack_into("<3f", data, 80, *pixdim)
    struct.pack_into("<h", data, 254, 0)  # no sform: the qform and pixdim alone say where voxels are
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("pixdim", [(1.0, 1.0, 0.0), (1.0, float("nan"), 1.0)])
def test_refuse_nifti_pixdim_zero_or_nan(tmp_path, pixdim):
    _refused(_nifti_with_pixdim(tmp_path, pixdim), "voxel size in the header", "not finite and non-zero")


def test_refuse_voxels_under_a_twentieth_of_a_millimetre(tmp_path):
    _refused(_nifti_with_pixdim(tmp_path, (0.001, 0.001, 0.001)), "below 0.05 mm", "not a clinical CT")
    assert load_ct(_nifti_with_pixdim(tmp_path, (0.05, 0.05, 0.05))).spacing == pytest.approx((0.05,) * 3)


def _nibabel_ct(tmp_path, sform, qform=None, zooms=(1.0, 1.0, 1.0)) -> Path:
    """A CT NIfTI-1 with the given sform (code 2) and qform (code 1, or none), written by nibabel."""
    import nibabel as nib
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    image = nib.Nifti1Image(ct.astype(np.int16), affine=None)
    image.header.set_zooms(zooms)
    image.set_sform(np.asarray(sform, dtype=float), code=2)
    if qform is not None:
        image.set_qform(np.asarray(qform, dtype=float), code=1)
    else:
        image.header["qform_code"] = 0
    path = tmp_path / "ct.nii.gz"
    nib.save(image, str(path))
    return path


def test_nifti_whose_sform_and_pixdim_or_qform_disagree_is_refused(tmp_path):
    """ITK reads the voxel size from pixdim and, for a sheared sform, the qform; other tools read the
    sform: where they disagree the millimetres would silently differ from tool to tool."""
    scaled = np.diag([0.7, 0.7, 3.0, 1.0])
    _refused(_nibabel_ct(tmp_path, scaled, zooms=(1.0, 1.0, 1.0)), "sform gives voxels of (0.7, 0.7, 3) mm",
             "pixdim (1, 1, 1) mm")
    turned = np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    _refused(_nibabel_ct(tmp_path, turned, qform=np.eye(4)), "qform and sform orient the image 90.0 deg apart")
    _refused(_nibabel_ct(tmp_path, np.eye(4), qform=np.diag([1.0, 1.0, 1.0, 1.0]) + np.array(
        [[0, 0, 0, 12.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])), "place the image 12.0 mm apart")
    sheared = np.eye(4)
    sheared[1, 2] = np.tan(np.radians(15))  # a 15 deg gantry tilt kept in the sform; ITK would take the qform
    _refused(_nibabel_ct(tmp_path, sheared, qform=np.eye(4),
                         zooms=(1.0, 1.0, float(np.hypot(1, np.tan(np.radians(15)))))),
             "sform is sheared", "gantry tilt")
    # Agreeing transforms, oblique and scaled alike, are read.
    oblique = np.eye(4)
    oblique[:3, :3] = _rotation(2, 30.0) @ np.diag([0.7, 0.7, 3.0])
    oblique[:3, 3] = (10.0, -20.0, 5.0)
    volume = load_ct(_nibabel_ct(tmp_path, oblique, qform=oblique, zooms=(0.7, 0.7, 3.0)))
    assert volume.spacing == pytest.approx((0.7, 0.7, 3.0), rel=1e-5)


def test_fat_without_air_is_ct(tmp_path):
    geometry = _geometry(np.eye(3))
    ct = np.full(SIZE, 50, dtype=np.int16)
    ct[:2] = -100  # 10 % fat, no air (a cropped image)
    volume = load_ct(_write(ct, geometry, tmp_path / "cropped.nrrd"))
    assert float(volume.array.min()) == -100.0


def test_four_d_with_single_volume_is_read_as_3d(tmp_path):
    geometry = _geometry(ORIENTATIONS["oblique"])
    ct, blob = _synthetic_ct(geometry)
    path = tmp_path / "ct4.mha"
    sitk.WriteImage(sitk.JoinSeries([_sitk_image(ct, geometry)]), str(path))
    volume = load_ct(path)
    assert volume.original == geometry
    _check_blob(volume, geometry, blob)


def test_save_labels_accepts_cupy_like_and_checks(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, blob = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nrrd"))

    class DeviceArray:  # the part of the CuPy interface save_labels uses
        def __init__(self, array):
            self._array = array
            self.shape = array.shape

        def get(self):
            return self._array

    labels = (volume.array > 500).astype(np.uint8) * 3
    out = save_labels(DeviceArray(labels), volume, tmp_path / "l.nrrd")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0),
                                  blob.astype(np.uint8) * 3)
    with pytest.raises(ValueError, match="labels shape"):
        save_labels(labels[:, :, :-1], volume, tmp_path / "bad.nrrd")
    with pytest.raises(ValueError, match="integer"):
        save_labels(labels.astype(np.float32), volume, tmp_path / "bad.nrrd")
    with pytest.raises(ValueError, match="uint8"):
        save_labels(labels.astype(np.int16) * 100, volume, tmp_path / "bad.nrrd")
    assert not (tmp_path / "bad.nrrd").exists()


# --------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------

def test_real_dicom_series(abdomen_dicom):
    folder = abdomen_dicom
    volume = load_ct(folder)
    assert volume.info["format"] == "dicom"
    assert volume.original.size == (512, 512, 20)
    np.testing.assert_allclose(volume.original.spacing, (0.977, 0.977, 2.0), atol=0.01)
    np.testing.assert_allclose(volume.spacing, (0.977, 0.977, 2.0), atol=0.01)
    assert volume.info["dicom_series"]["n_slices"] == 20
    # Rescale applied: unsigned stored values become HU with air at -1024.
    assert volume.array[0, 0, 0] <= -900
    assert volume.array[-1, -1, -1] <= -900
    body = volume.array[volume.array > -500]
    assert body.size > 0.1 * volume.array.size
    assert -100 <= float(np.median(body)) <= 100
    # Slices run inferior to superior along the canonical S axis.
    assert volume.affine[2, 2] == pytest.approx(2.0)


def test_dicom_gantry_tilt_refused(tmp_path):
    geometry = _geometry(np.eye(3))
    # Slice positions step 2.5 mm along the normal and 0.6 mm along the rows.
    sheared = np.array([[1.0, 0.0, 0.24], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    tilted = Geometry(SIZE, SPACING, ORIGIN, tuple(sheared.ravel()))
    _write_dicom_series(tmp_path / "tilt", _synthetic_ct(geometry)[0], tilted)
    _refused(tmp_path / "tilt", "gantry tilt")


def test_dicom_missing_slice(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    files = _write_dicom_series(tmp_path / "series", ct, geometry)
    files[7].unlink()
    with pytest.raises(InputError) as excinfo:
        load_ct(tmp_path / "series")
    message = _assert_one_line_error(excinfo, tmp_path / "series")
    assert "missing slice(s): gap of 5.00 mm" in message
    assert "(expected 2.50 mm)" in message


def test_dicom_uneven_and_duplicate_slices(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    files = _write_dicom_series(tmp_path / "uneven", ct, geometry)
    image = sitk.ReadImage(str(files[5]))
    image.SetMetaData("0020|0032", "-30.5\\12.25\\112.5")  # 1.5 mm above slice 4, not 2.5
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(files[5]))
    writer.Execute(image)
    with pytest.raises(InputError, match="uneven slice spacing: gap of 1.50 mm") as excinfo:
        load_ct(tmp_path / "uneven")
    _assert_one_line_error(excinfo, tmp_path / "uneven")

    image.SetMetaData("0020|0032", "-30.5\\12.25\\111.0")  # same position as slice 4
    writer.Execute(image)
    with pytest.raises(InputError, match="duplicate slice position z=111.00 mm"):
        load_ct(tmp_path / "uneven")


def test_dicom_two_series_picks_largest(tmp_path, caplog):
    folder = tmp_path / "study"
    big = Geometry(size=(16, 16, 20), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0),
                   direction=tuple(np.eye(3).ravel()))
    small = Geometry(size=(16, 16, 5), spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 0.0),
                     direction=tuple(np.eye(3).ravel()))
    _write_dicom_series(folder, _synthetic_ct(big)[0], big, uid="1.2.3.20",
                        description="big CT")
    _write_dicom_series(folder, _synthetic_ct(small)[0], small, uid="1.2.3.5",
                        description="small CT", seed=3, prefix="SC")
    assert len(list(folder.iterdir())) == 25
    caplog.set_level(logging.INFO, logger="thagpu.io")
    volume = load_ct(folder)
    assert volume.original.size == (16, 16, 20)
    assert volume.info["dicom_series"] == {
        "series_uid": "1.2.3.20", "n_slices": 20, "description": "big CT",
        "modality": "CT", "other_series": 1, "unreadable_files": 0,
    }
    assert any("1.2.3.20" in r.getMessage() and r.name == "thagpu.io" for r in caplog.records)


def test_dicom_truncated_slice(tmp_path):
    geometry = _geometry(np.eye(3))
    files = _write_dicom_series(tmp_path / "series", _synthetic_ct(geometry)[0], geometry)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 300])  # header intact, pixels cut
    # GDCM leaves the damaged file out of the series: a slice is missing.
    _refused(tmp_path / "series", "missing slice(s): gap of 5.00 mm",
             "1 file(s) in the folder are not in any readable DICOM series")


def test_dicom_single_slice_refused(tmp_path):
    geometry = Geometry((16, 16, 1), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    _write_dicom_series(tmp_path / "one", _synthetic_ct(geometry)[0], geometry)
    _refused(tmp_path / "one", "has a single slice")


def test_dicom_multi_frame_file(tmp_path):
    geometry = Geometry((10, 8, 6), (0.7, 0.8, 2.0), (1.0, 2.0, 3.0), tuple(np.eye(3).ravel()))
    ct, blob = _synthetic_ct(geometry)
    image = _sitk_image(ct, geometry)
    image.SetMetaData("0008|0060", "CT")
    (tmp_path / "mf").mkdir()
    sitk.WriteImage(image, str(tmp_path / "mf" / "multi.dcm"))  # one file, 6 frames
    volume = load_ct(tmp_path / "mf")
    assert volume.info["format"] == "dicom"
    assert volume.info["n_slices"] == volume.info["dicom_series"]["n_slices"] == 6
    assert volume.source == str(tmp_path / "mf")
    assert volume.original == geometry
    np.testing.assert_array_equal(volume.to_stored(volume.array), ct)
    _check_blob(volume, geometry, blob)


def test_empty_folder_has_no_series(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="no DICOM series found") as excinfo:
        load_ct(tmp_path)
    _assert_one_line_error(excinfo, tmp_path)


# --------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------

def _small_ct(tmp_path, name: str) -> Path:
    geometry = _geometry(np.eye(3))
    return _write(_synthetic_ct(geometry)[0], geometry, tmp_path / name)


def _refused(path, *fragments) -> str:
    with pytest.raises(InputError) as excinfo:
        load_ct(path)
    message = _assert_one_line_error(excinfo, path)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_refuse_2d(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((64, 64), -1000, np.int16)), str(path))
    _refused(path, "2-D image of size 64x64", "3-D")


def test_refuse_4d(tmp_path):
    path = tmp_path / "series.mha"
    image = sitk.GetImageFromArray(np.full((3, 4, 5, 6), -1000, np.int16), isVector=False)
    sitk.WriteImage(image, str(path))
    _refused(path, "4-D image of size 6x5x4x3")


def test_refuse_mr_like(tmp_path):
    mr = np.linspace(0, 2000, np.prod(SIZE)).reshape(SIZE).astype(np.float32)
    path = _write(mr, _geometry(np.eye(3)), tmp_path / "t1.nii.gz")
    _refused(path, "values 0..2000 do not look like CT in HU "
                   "(no air near -1000 HU, no fat below -50 HU)")


def test_refuse_out_of_range_without_air(tmp_path):
    values = np.full(SIZE, 5000, dtype=np.int16)
    values[:2] = -100
    path = _write(values, _geometry(np.eye(3)), tmp_path / "odd.nrrd")
    _refused(path, "values -100..5000 do not look like CT", "outside -1100..4000 HU")


# ITK's NIfTI reader turns NaN into 0 by itself: load_ct scans float NIfTI data.
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
def test_refuse_all_nan(tmp_path, suffix):
    path = _write(np.full(SIZE, np.nan, np.float32), _geometry(np.eye(3)), tmp_path / f"nan{suffix}")
    _refused(path, "all values are NaN")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_refuse_some_non_finite(tmp_path, suffix, dtype):
    ct = _synthetic_ct(_geometry(np.eye(3)))[0].astype(dtype)
    ct[3, 4, 5] = np.inf
    ct[1, 1, 1] = np.nan
    path = _write(ct, _geometry(np.eye(3)), tmp_path / f"inf{suffix}")
    _refused(path, f"2 of {np.prod(SIZE)} values are not finite (NaN or inf)")


def test_refuse_missing_and_empty_and_unknown(tmp_path):
    _refused(tmp_path / "absent.nii.gz", "no such file")
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    _refused(empty, "file is empty")
    text = tmp_path / "ct.txt"
    text.write_text("hello")
    _refused(text, "unrecognised file type '.txt'")
    fake = tmp_path / "fake.nii"
    fake.write_text("this is not a NIfTI file\nsecond line\n")
    _refused(fake, "could not be read (truncated or corrupt file?)")


def _noisy_ct(tmp_path, name: str) -> Path:
    """A CT that compresses poorly, so that cutting a file cuts its voxels."""
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1000, size=(40, 40, 40)).astype(np.int16)
    return _write(ct, Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                               tuple(np.eye(3).ravel())), tmp_path / name)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_refuse_truncated(tmp_path, suffix):
    path = _noisy_ct(tmp_path, f"ct{suffix}")
    load_ct(path)  # the whole file is fine
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "could not be read (truncated or corrupt file?)")


def test_refuse_corrupt_gzip(tmp_path):
    path = _noisy_ct(tmp_path, "ct.nii.gz")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    _refused(path, "could not be read (truncated or corrupt file?)")


def test_accept_multi_member_gzip(tmp_path):
    import gzip

    path = _noisy_ct(tmp_path, "ct.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    half = len(raw) // 2
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    assert load_ct(path).shape == (40, 40, 40)


def _fail_if_pixels_read(monkeypatch):
    def execute(self):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(sitk.ImageFileReader, "Execute", execute)


def test_refuse_huge_nifti_header(tmp_path, monkeypatch):
    tiny = Geometry((2, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    path = _write(np.full((2, 2, 2), -1000, np.int16), tiny, tmp_path / "huge.nii")
    header = bytearray(path.read_bytes())
    assert struct.unpack_from("<i", header, 0)[0] == 348
    struct.pack_into("<3h", header, 42, 4000, 4000, 4000)  # dim[1..3]
    path.write_bytes(bytes(header))
    _fail_if_pixels_read(monkeypatch)
    start = time.perf_counter()
    _refused(path, "4000x4000x4000", "exceeds the limit of 1.5e+09 voxels")
    assert time.perf_counter() - start < 2.0


def test_refuse_huge_metaimage_header(tmp_path, monkeypatch):
    (tmp_path / "tiny.raw").write_bytes(bytes(16))
    path = tmp_path / "huge.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4000 4000 4000\n"
                    "ElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
                    "ElementDataFile = tiny.raw\n")
    _fail_if_pixels_read(monkeypatch)
    _refused(path, "6.4e+10 voxels exceeds")


def test_max_voxels_parameter(tmp_path):
    path = _small_ct(tmp_path, "ct.nrrd")
    at_limit = load_ct(path, max_voxels=np.prod(SIZE))
    assert at_limit.shape == SIZE
    with pytest.raises(InputError, match="exceeds the limit of 1000 voxels"):
        load_ct(path, max_voxels=1000)


@pytest.mark.parametrize("spacing", ["0 1 1", "1 -2 1", "nan 1 1"])
def test_refuse_bad_spacing(tmp_path, monkeypatch, spacing):
    (tmp_path / "ct.raw").write_bytes(np.full(8, -1000, np.int16).tobytes())
    path = tmp_path / "ct.mhd"
    path.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\n"
                    f"ElementSpacing = {spacing}\nElementType = MET_SHORT\n"
                    "ElementDataFile = ct.raw\n")
    _fail_if_pixels_read(monkeypatch)
    _refused(path, "voxel spacing", "is not finite and positive")


def test_refuse_vector_image(tmp_path):
    path = tmp_path / "rgb.mha"
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.int16), isVector=True)
    sitk.WriteImage(image, str(path))
    _refused(path, "3 components per pixel")


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------

def _failing_write(monkeypatch):
    """Make sitk.WriteImage leave partial files behind, then fail."""
    def write(image, filename, useCompression=False, *args, **kwargs):
        target = Path(filename)
        target.write_bytes(b"partial")
        if target.suffix == ".mhd":
            target.with_suffix(".raw").write_bytes(b"partial data")
        raise RuntimeError("Exception thrown in SimpleITK WriteImage:\nITK ERROR: "
                           "NiftiImageIO(0x1234): disk full\nmore lines")

    monkeypatch.setattr(sitk, "WriteImage", write)


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.mhd"])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, name):
    geometry = _geometry(np.eye(3))
    ct, blob = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nrrd"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _failing_write(monkeypatch)
    with pytest.raises(OSError, match="could not be written: disk full") as excinfo:
        save_labels(volume.array > 500, volume, out_dir / name)
    assert "\n" not in str(excinfo.value)
    assert list(out_dir.iterdir()) == []


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    geometry = _geometry(np.eye(3))
    ct, _ = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nrrd"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "labels.nii.gz"
    existing.write_bytes(b"previous labels")
    _failing_write(monkeypatch)
    with pytest.raises(OSError):
        save_labels(volume.array > 500, volume, existing)
    assert existing.read_bytes() == b"previous labels"
    assert [p.name for p in out_dir.iterdir()] == ["labels.nii.gz"]


def test_write_replaces_existing_file(tmp_path):
    geometry = _geometry(np.eye(3))
    ct, blob = _synthetic_ct(geometry)
    volume = load_ct(_write(ct, geometry, tmp_path / "ct.nrrd"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name in ("labels.mhd", "labels.nrrd"):
        (out_dir / name).write_bytes(b"old")
        save_labels(volume.array > 500, volume, out_dir / name)
        stored = sitk.GetArrayFromImage(sitk.ReadImage(str(out_dir / name))).transpose(2, 1, 0)
        np.testing.assert_array_equal(stored, blob.astype(np.uint8))
    assert sorted(p.name for p in out_dir.iterdir()) == ["labels.mhd", "labels.nrrd", "labels.raw"]


def test_native_stderr_captures_what_c_code_writes_and_restores_the_descriptor():
    """Run in a fresh process: the capture is taken only while the process has one thread, and earlier
    tests (a Dask client) leave threads behind."""
    import subprocess
    import sys
    script = """
import os, threading
import SimpleITK as sitk
from thagpu.io._native import native_note, native_stderr
sitk.ProcessObject.SetGlobalWarningDisplay(False)  # as the command line has it without --verbose
said = []
with native_stderr(said):
    os.write(2, b"niftilib: ** ERROR: short read\\n")
assert said == ["niftilib: ** ERROR: short read"], said
assert native_note(said) == " (the library said: niftilib: ** ERROR: short read)"
assert native_note([]) == "" and len(native_note(["x" * 1000])) < 240
with native_stderr(said):
    pass
assert len(said) == 1  # nothing written, nothing added
try:
    with native_stderr(said):
        os.write(2, b"before the failure\\n")
        raise RuntimeError("ITK ERROR")
except RuntimeError:
    pass
assert said[-1] == "before the failure"
sitk.ProcessObject.SetGlobalWarningDisplay(True)  # --verbose: captured, and written on to stderr
with native_stderr(said):
    os.write(2, b"kept for --verbose\\n")
assert said[-1] == "kept for --verbose"
sitk.ProcessObject.SetGlobalWarningDisplay(False)
from thagpu import morphology
morphology._pool(2).submit(int).result()  # the filter pool's threads, idle between filters
with native_stderr(said):
    os.write(2, b"beside the filter pool\\n")
assert said[-1] == "beside the filter pool", said
other = threading.Thread(target=threading.Event().wait, args=(1.0,), daemon=True)
other.start()
with native_stderr(said):  # another thread runs: stderr is left alone
    os.write(2, b"shown\\n")
assert len(said) == 4
os.write(2, b"descriptor 2 restored\\n")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["kept for --verbose", "shown", "descriptor 2 restored"]
