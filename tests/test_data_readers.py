"""Readers on real radiographs: orientation, DICOM display pipeline, channels, npz addresses, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from egan_med.data import BadImageError, load_image
from egan_med.data import readers

from conftest import BUNDLED_NPZ, data_file

MONO2 = data_file("cxr_samples", "dicom", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
MONO1 = data_file("cxr_samples", "dicom", "Fake_MONOHR1.dcm")
PNG = data_file("cxr_samples", "nih", "00000001_000.png")
CXR_JPG = data_file("cxr_covid_ccby", "train", "patient00001", "study1", "view1_frontal.jpg")  # 512 wide, 409 tall
CIFAR_JPG = data_file("cifar10_airplane_automobile", "train", "airplane", "0000.jpg")
NPZ = BUNDLED_NPZ


def test_dicom_monochrome1_is_inverted_monochrome2():
    mono2, mono1 = load_image(MONO2), load_image(MONO1)
    assert mono2.shape == mono1.shape == (1, 1024, 1024) and mono2.dtype == np.float32
    assert 0.0 <= mono2.min() and mono2.max() <= 1.0 and mono2.max() > 0.9
    assert np.corrcoef(mono1.ravel(), mono2.ravel())[0, 1] < -0.99
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_dicom_keeps_pydicom_row_column_order():
    stored = pydicom.dcmread(MONO2).pixel_array.astype(np.float32) / 255.0  # 8 bits stored
    img = load_image(MONO2)[0]
    np.testing.assert_allclose(img, stored, atol=1e-6)
    assert np.abs(img - stored.T).mean() > 0.01  # the check can tell a transposed image apart


def _write_dicom(path: Path, stored: np.ndarray, bits: int, **tags) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    ds.set_pixel_data(stored, "MONOCHROME2", bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_12_bit_scaled_by_bits_stored(tmp_path):
    stored = (np.arange(40 * 60).reshape(40, 60) % 4096).astype(np.uint16)  # non-square, asymmetric
    _write_dicom(tmp_path / "a.dcm", stored, 12)
    _write_dicom(tmp_path / "b.dcm", stored, 12, RescaleSlope=2.0, RescaleIntercept=-1000.0)
    plain, rescaled = load_image(tmp_path / "a.dcm"), load_image(tmp_path / "b.dcm")
    assert plain.shape == (1, 40, 60)
    np.testing.assert_allclose(plain[0], stored / 4095.0, atol=1e-6)
    np.testing.assert_allclose(rescaled, plain, atol=1e-6)  # a linear rescale keeps the display


def test_dicom_window_applied(tmp_path):
    stored = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    _write_dicom(tmp_path / "w.dcm", stored, 12, WindowCenter=2048, WindowWidth=1024)
    img = load_image(tmp_path / "w.dcm")[0]
    assert np.all(img[stored <= 1536] == 0.0) and np.all(img[stored > 2560] == 1.0)
    middle = (stored > 1600) & (stored < 2500)
    order = np.argsort(stored[middle])
    assert np.all(np.diff(img[middle][order]) >= 0) and 0.05 < img[middle].mean() < 0.95
    # the window is in rescaled units, so the rescale must be applied before it: same window, same image
    _write_dicom(tmp_path / "r.dcm", stored, 12, RescaleSlope=2.0, RescaleIntercept=-1000.0,
                 WindowCenter=2 * 2048 - 1000, WindowWidth=2 * 1024)
    np.testing.assert_allclose(load_image(tmp_path / "r.dcm")[0], img, atol=2e-3)


def test_dicom_voi_lut_sequence_applied(tmp_path):
    stored = (np.arange(32 * 48).reshape(32, 48) % 4096).astype(np.uint16)
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first mapped value, bits
    lut.add_new(0x00283006, "US", list(range(4095, -1, -1)))  # LUT Data: an inverting LUT
    _write_dicom(tmp_path / "l.dcm", stored, 12, VOILUTSequence=[lut])
    np.testing.assert_allclose(load_image(tmp_path / "l.dcm")[0], 1.0 - stored / 4095.0, atol=1e-6)


def test_png_and_jpeg_orientation_match_pil():
    np.testing.assert_allclose(load_image(PNG)[0], np.asarray(Image.open(PNG)) / 255.0, atol=1e-6)
    pil = np.asarray(Image.open(CXR_JPG))
    assert pil.shape == (409, 512)
    img = load_image(CXR_JPG)
    assert img.shape == (1, 409, 512)
    np.testing.assert_allclose(img[0], pil / 255.0, atol=1e-6)
    rgb = load_image(CIFAR_JPG)
    np.testing.assert_allclose(np.moveaxis(rgb, 0, -1), np.asarray(Image.open(CIFAR_JPG)) / 255.0, atol=1e-6)


def test_channel_conversion():
    gray3 = load_image(CXR_JPG, channels=3)
    assert gray3.shape == (3, 409, 512) and np.array_equal(gray3[0], gray3[2])
    luma = load_image(CIFAR_JPG, channels=1)
    pil_l = np.asarray(Image.open(CIFAR_JPG).convert("L")) / 255.0
    assert luma.shape == (1, 32, 32) and np.abs(luma[0] - pil_l).max() <= 1.5 / 255


def test_npz_address_reads_entry_and_caches_archive(monkeypatch, tmp_path):
    with np.load(NPZ) as npz:
        expected = npz["val_images"][7]
    readers._npz_cache.clear()
    calls = []
    real_load = np.load
    monkeypatch.setattr(readers.np, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    img = load_image(f"{NPZ}#val/7")
    np.testing.assert_array_equal(img[0], expected / np.float32(255.0))
    for i in range(300):
        load_image(f"{NPZ}#val/{i}")
    assert len(calls) == 1
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", test_images=rgb)
    out = load_image(f"{tmp_path / 'rgb.npz'}#test/1")
    np.testing.assert_array_equal(out, np.moveaxis(rgb[1], -1, 0) / np.float32(255.0))
    with pytest.raises(BadImageError, match="outside"):
        load_image(f"{NPZ}#val/524")
    with pytest.raises(BadImageError, match="no array"):
        load_image(f"{NPZ}#nosuch/0")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    raw = CXR_JPG.read_bytes()
    files = {"truncated": tmp_path / "truncated.jpg", "empty": tmp_path / "empty.png",
             "not_image": tmp_path / "notes.png", "missing": tmp_path / "missing.jpg",
             "bad_dicom": tmp_path / "broken.dcm"}
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["empty"].write_bytes(b"")
    files["not_image"].write_text("Path,Pneumonia\na.jpg,1\n")
    files["bad_dicom"].write_bytes(MONO2.read_bytes()[:2000])
    return files


@pytest.mark.parametrize("kind", ["truncated", "empty", "not_image", "missing", "bad_dicom"])
def test_bad_files_raise_one_line_error_naming_file(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(BadImageError) as info:
        load_image(path)
    err = info.value
    assert isinstance(err, ValueError) and err.path == str(path)
    assert str(path) in str(err) and "\n" not in str(err)


def test_png_reads_as_its_pixels_in_display_orientation(tmp_path):
    # A known 8-bit and 16-bit gradient, taller than wide: the reader must give back exactly those values / max,
    # first row at the top (MONAI's readers transpose unless told not to).
    pixels = (np.arange(12 * 7).reshape(12, 7) * 3).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g8.png")
    img = load_image(tmp_path / "g8.png")
    assert img.shape == (1, 12, 7)
    np.testing.assert_allclose(img[0], pixels / 255.0, atol=1e-6)
    wide = (np.arange(5 * 9).reshape(5, 9) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "g16.png")
    img16 = load_image(tmp_path / "g16.png")
    assert img16.shape == (1, 5, 9) and img16[0, 0, 0] == 0 and img16[0, 0, 1] > 0 and img16[0, 1, 0] > img16[0, 0, 8]
    assert np.all(np.diff(img16[0].ravel()) > 0)  # row-major order kept: values rise along each row, then down
