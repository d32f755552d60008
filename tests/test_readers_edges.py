"""Reader paths the mutation run (docs/MUTATION.md) found untested: signed and modality-LUT DICOMs, a tiny
rescale slope, one window tag alone, multi-frame and series refusal, Pillow's other modes, and the exact
one-line reasons of bad files and npz addresses."""
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

from conftest import BUNDLED_NPZ
from test_data_readers import _write_dicom as _dicom  # one DICOM writer for the reader tests


def test_signed_12_bit_dicom_spans_its_signed_range(tmp_path):
    stored = np.array([[-2048, 2047, 0], [-1, 1000, -1000]], dtype=np.int16)
    img = load_image(_dicom(tmp_path / "s.dcm", stored, 12))[0]
    assert pydicom.dcmread(tmp_path / "s.dcm").PixelRepresentation == 1
    np.testing.assert_allclose(img, (stored + 2048) / 4095.0, atol=1e-6)
    # a linear rescale of signed data keeps the display (lo * slope + intercept, not lo / slope)
    img2 = load_image(_dicom(tmp_path / "r.dcm", stored, 12, RescaleSlope=2.0, RescaleIntercept=-1000.0))[0]
    np.testing.assert_allclose(img2, img, atol=1e-6)


def test_tiny_rescale_slope_keeps_the_display(tmp_path):
    stored = (np.arange(6 * 8).reshape(6, 8) * 85 % 4096).astype(np.uint16)
    stored[0, 0], stored[0, 1] = 0, 4095
    img = load_image(_dicom(tmp_path / "t.dcm", stored, 12, RescaleSlope=0.0001, RescaleIntercept=0.0))[0]
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-5)


def test_modality_lut_sequence_sets_the_range(tmp_path):
    stored = (np.arange(16 * 16).reshape(16, 16) * 16 % 4096).astype(np.uint16)
    stored[0, 0], stored[0, 1] = 0, 4095
    table = (np.arange(4096) * 16).astype(int)  # 12 -> 16 bits
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 16])
    lut.add_new(0x00283006, "US", table.tolist())
    lut.ModalityLUTType = "US"
    img = load_image(_dicom(tmp_path / "m.dcm", stored, 12, ModalityLUTSequence=[lut]))[0]
    np.testing.assert_allclose(img, table[stored] / 65535.0, atol=1e-6)


def test_window_needs_both_centre_and_width(tmp_path):
    stored = (np.arange(8 * 8).reshape(8, 8) * 64 % 4096).astype(np.uint16)
    img = load_image(_dicom(tmp_path / "c.dcm", stored, 12, WindowCenter=2048))[0]
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-6)


def test_multi_frame_and_series_are_refused(tmp_path):
    frames = np.zeros((2, 4, 4), dtype=np.uint16)
    path = _dicom(tmp_path / "mf.dcm", frames, 12)
    with pytest.raises(BadImageError, match=r"multi-frame DICOM \(2 frames\) is not a radiograph"):
        load_image(path)
    one = _dicom(tmp_path / "one.dcm", np.zeros((4, 4), dtype=np.uint16), 12)
    ds = pydicom.dcmread(one)
    with pytest.raises(ValueError, match=r"^expected one DICOM file, got a series$"):
        readers.RadiographDicomReader().get_data([ds, ds])
    arr, meta = readers.RadiographDicomReader().get_data(ds)  # one file, not a list, with its shape
    assert arr.shape == (4, 4) and tuple(meta["spatial_shape"]) == (4, 4)


def test_pillow_modes_become_gray_or_rgb(tmp_path):
    gray = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    Image.fromarray(np.stack([gray, np.full_like(gray, 200)], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png"), gray[None] / 255.0, atol=1e-6)
    Image.fromarray(gray > 100).save(tmp_path / "bw.png")  # mode "1"
    np.testing.assert_array_equal(load_image(tmp_path / "bw.png"), (gray > 100)[None].astype(np.float32))
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png")
    assert img.shape == (3, 2, 2) and img.dtype == np.float32
    np.testing.assert_allclose(img[:, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(img[:, 0, 1], [0.0, 0.0, 1.0])
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_allclose(load_image(tmp_path / "rgb.png")[:, 0, 0], np.array([10, 20, 30]) / 255.0, atol=1e-6)


def test_float_images_keep_their_values_and_dtype(tmp_path):
    vals = np.array([[0.0, 0.25], [1.0, 0.5]], dtype=np.float32)
    Image.fromarray(vals, "F").save(tmp_path / "f.tif")
    img = load_image(tmp_path / "f.tif")
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img[0], vals)
    ones = np.ones((2, 2), dtype=np.float32)  # a constant white float image is white, not windowed to 0
    Image.fromarray(ones, "F").save(tmp_path / "one.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "one.tif")[0], ones)
    zeros = np.zeros((2, 2), dtype=np.float32)
    Image.fromarray(zeros, "F").save(tmp_path / "zero.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "zero.tif")[0], zeros)


def test_bad_file_reasons_are_exact(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(BadImageError, match=rf"^bad image {missing}: file not found$"):
        load_image(missing)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match=r": empty file \(0 bytes\)$"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "one.png").write_bytes(b"x")  # one byte is not empty: it cannot be decoded
    with pytest.raises(BadImageError, match=r": cannot decode \(UnidentifiedImageError: "):
        load_image(tmp_path / "one.png")


def test_npz_address_reasons_are_exact(tmp_path):
    npz = str(BUNDLED_NPZ)
    gone = str(tmp_path / "none.npz") + "#train/0"
    with pytest.raises(BadImageError, match=rf"^bad image {gone}: file not found$"):
        load_image(gone)
    for bad in (f"{npz}#train", f"{npz}#/0", f"{npz}#train/x", f"{npz}#train/1-"):
        with pytest.raises(BadImageError, match=r": npz address must look like <file>\.npz#<split>/<index>$") as info:
            load_image(bad)
        assert info.value.path == bad
    with pytest.raises(BadImageError, match=r"index -1 outside val_images \(length \d+\)$") as info:
        load_image(f"{npz}#val/-1")
    assert info.value.path == f"{npz}#val/-1"
    with pytest.raises(BadImageError, match=r"no array 'nosuch_images' in the npz$") as info:
        load_image(f"{npz}#nosuch/0")
    assert info.value.path == f"{npz}#nosuch/0"
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadImageError, match=r": cannot read npz: ") as info:
        load_image(str(tmp_path / "junk.npz") + "#train/0")
    assert info.value.path.endswith("junk.npz#train/0")
    np.savez(tmp_path / "f.npz", train_images=np.zeros((2, 3, 3), np.float32), val_images=np.zeros((1, 4), np.uint8))
    for entry in ("train/0", "val/0"):
        with pytest.raises(BadImageError, match=r"expected uint8 \(H,W\) or \(H,W,3\) entries, got ") as info:
            load_image(str(tmp_path / "f.npz") + "#" + entry)
        assert info.value.path.endswith(entry)
    img = load_image(f"{npz}#train/0")
    assert img.dtype == np.float32 and img.shape[0] == 1


def _png_chunks(path: Path, *chunks: tuple[bytes, bytes], truncate: int = 0) -> str:
    """A PNG-signed file of raw chunks (the sBIT scan reads chunk headers only, not CRCs or pixels)."""
    import struct

    body = b"".join(struct.pack(">I", len(data)) + kind + data + b"\0\0\0\0" for kind, data in chunks)
    path.write_bytes((b"\x89PNG\r\n\x1a\n" + body)[: -truncate or None])
    return str(path)


def test_png_sbit_chunk_parsing(tmp_path):
    ihdr = (b"IHDR", bytes(13))
    sbit = readers._png_significant_bits
    assert sbit(_png_chunks(tmp_path / "g.png", ihdr, (b"sBIT", bytes([12])), (b"IDAT", b""))) == 12
    assert sbit(_png_chunks(tmp_path / "ga.png", ihdr, (b"sBIT", bytes([10, 16])))) == 10  # gray + alpha
    assert sbit(_png_chunks(tmp_path / "rgb.png", ihdr, (b"sBIT", bytes([5, 6, 5])))) == 6
    assert sbit(_png_chunks(tmp_path / "rgba.png", ihdr, (b"sBIT", bytes([5, 6, 5, 8])))) == 6  # alpha not counted
    assert sbit(_png_chunks(tmp_path / "b1.png", ihdr, (b"sBIT", bytes([1])))) == 1
    assert sbit(_png_chunks(tmp_path / "b16.png", ihdr, (b"sBIT", bytes([16])))) == 16
    assert sbit(_png_chunks(tmp_path / "b17.png", ihdr, (b"sBIT", bytes([17])))) is None
    assert sbit(_png_chunks(tmp_path / "b0.png", ihdr, (b"sBIT", bytes([0])))) is None
    assert sbit(_png_chunks(tmp_path / "late.png", ihdr, (b"IDAT", b"xx"), (b"sBIT", bytes([12])))) is None
    assert sbit(_png_chunks(tmp_path / "end.png", ihdr, (b"IEND", b""), (b"sBIT", bytes([12])))) is None
    assert sbit(_png_chunks(tmp_path / "cut.png", ihdr, (b"sBIT", bytes([12, 12, 12])), truncate=6)) is None
    assert sbit(_png_chunks(tmp_path / "none.png", ihdr, (b"tEXt", b"k\0v"))) is None
    big = _png_chunks(tmp_path / "big.png", (b"IHDR", bytes(13)))
    Path(big).write_bytes(Path(big).read_bytes()[:8] + b"\xff\xff\xff\xffIHDR")  # a length above 2**31
    assert sbit(big) is None


def test_unsigned_full_scale_boundaries(tmp_path):
    scale = readers._unsigned_full_scale
    ihdr = (b"IHDR", bytes(13))
    s12 = _png_chunks(tmp_path / "s12.png", ihdr, (b"sBIT", bytes([12])))
    assert scale(np.array([4095]), s12) == 4095.0  # at the sBIT depth
    assert scale(np.array([4096]), s12) == 65535.0  # above it: samples already scaled to 16 bits
    plain = str(tmp_path / "plain.tif")
    assert scale(np.array([4095]), plain) == 4095.0 and scale(np.array([4096]), plain) == 16383.0
    assert scale(np.array([255]), plain) == 255.0 and scale(np.array([0]), plain) == 255.0
    assert scale(np.array([70_000]), plain) == float(2**17 - 1)  # deeper than 16 bits: its own depth


def test_loaders_are_built_once_on_first_use_and_restore_the_log_level(monkeypatch, tmp_path):
    import logging

    monkeypatch.setattr(readers, "_loaders", {})
    quiet = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    monkeypatch.setattr(quiet, "level", logging.INFO)
    gray = (np.arange(6 * 4).reshape(6, 4) * 10).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_allclose(load_image(tmp_path / "g.png"), gray[None] / 255.0, atol=1e-6)
    stored = (np.arange(6 * 4).reshape(6, 4) * 100).astype(np.uint16)
    img = load_image(_dicom(tmp_path / "d.dcm", stored, 12))
    assert img.shape == (1, 6, 4) and img.dtype == np.float32
    np.testing.assert_allclose(img[0], stored / 4095.0, atol=1e-6)
    assert set(readers._loaders) == {"pil", "dicom"} and quiet.level == logging.INFO
    built = dict(readers._loaders)
    load_image(tmp_path / "g.png")
    assert readers._loaders == built  # built once


def test_colour_dicom_is_rgb_channel_first(tmp_path):
    rgb = np.zeros((3, 5, 3), dtype=np.uint8)
    rgb[0, 0], rgb[2, 4] = (255, 0, 10), (0, 128, 255)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    ds.set_pixel_data(rgb, "RGB", 8)
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    img = load_image(tmp_path / "rgb.dcm")
    assert img.shape == (3, 3, 5) and img.dtype == np.float32
    np.testing.assert_allclose(img, np.moveaxis(rgb, -1, 0) / 255.0, atol=1e-6)


def test_unsupported_shapes_are_refused_with_the_shape(tmp_path):
    np.savez(tmp_path / "s.npz", train_images=np.zeros((1, 3, 3, 4), np.uint8), val_images=np.zeros((1, 0, 5), np.uint8),
             test_images=np.full((1, 1, 5), 255, np.uint8))
    base = str(tmp_path / "s.npz")
    with pytest.raises(BadImageError, match=r"^bad image .*s\.npz#train/0: unsupported image shape \(4, 3, 3\)$"):
        load_image(base + "#train/0")
    with pytest.raises(BadImageError, match=r"unsupported image shape \(1, 0, 5\)$"):
        load_image(base + "#val/0")
    np.testing.assert_array_equal(load_image(base + "#test/0"), np.ones((1, 1, 5), np.float32))  # one row is fine


def test_to_channels_refuses_other_channel_counts():
    for channels in (1, 3):
        with pytest.raises(ValueError, match=rf"^cannot convert 2 channels to {channels}$"):
            readers.to_channels(np.zeros((2, 4, 5), np.float32), channels)


def _tiff(path: Path, values: np.ndarray, mode: str) -> Path:
    Image.fromarray(values, mode).save(path)
    return path


def test_float_and_signed_pixels_follow_their_rules(tmp_path):
    # real-valued floats outside [0, 1]: min-max windowed, however narrow their range
    img = load_image(_tiff(tmp_path / "a.tif", np.array([[2.0, 2.25, 2.5]], np.float32), "F"))[0]
    np.testing.assert_allclose(img, [[0.0, 0.5, 1.0]], atol=1e-6)
    img = load_image(_tiff(tmp_path / "b.tif", np.array([[0.0, 0.75, 1.5]], np.float32), "F"))[0]
    np.testing.assert_allclose(img, [[0.0, 0.5, 1.0]], atol=1e-6)
    # whole-number floats follow the integer rule: 1000 needs 10 bits, so white is 1023, not 1000
    img = load_image(_tiff(tmp_path / "c.tif", np.array([[0.0, 500.0, 1000.0]], np.float32), "F"))[0]
    np.testing.assert_allclose(img, [[0.0, 500 / 1023, 1000 / 1023]], atol=1e-6)
    # signed integers with negative values: windowed
    img = load_image(_tiff(tmp_path / "d.tif", np.array([[-100, 0, 100]], np.int32), "I"))[0]
    np.testing.assert_allclose(img, [[0.0, 0.5, 1.0]], atol=1e-6)
    # integers that happen to lie in [0, 1] are counts, not unit floats: 1 of 255
    Image.fromarray(np.array([[0, 1], [1, 0]], np.uint16)).save(tmp_path / "e.png")
    np.testing.assert_allclose(load_image(tmp_path / "e.png")[0], [[0, 1 / 255], [1 / 255, 0]], atol=1e-7)
