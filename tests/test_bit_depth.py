"""Images deeper than 8 bits and float TIFFs: scaled by their real depth, and all their levels survive the cache."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from egan_med.config import DataConfig
from egan_med.data.cache import build_store
from egan_med.data.readers import BadImageError, load_image


def _ramp(top: int) -> np.ndarray:
    """64 x 64 values spread evenly over 0..top, both ends included."""
    return np.rint(np.linspace(0, top, 64 * 64)).reshape(64, 64)


def _png16(path, values: np.ndarray, sbit: int | None = None) -> str:
    info = PngImagePlugin.PngInfo()
    if sbit is not None:
        info.add(b"sBIT", bytes([sbit]))
    Image.fromarray(values.astype(np.uint16)).save(path, pnginfo=info)
    return str(path)


def test_12_bit_png_in_16_bits_spans_unit_range_and_keeps_levels_through_the_cache(tmp_path):
    path = _png16(tmp_path / "r12.png", _ramp(4095))
    img = load_image(path)
    assert img.min() == 0.0 and img.max() == pytest.approx(1.0)  # was 4095 / 65535 = 0.0625
    for cache_dir in ("", str(tmp_path / "cache")):  # in-memory store and persistent .npy
        store = build_store([path], DataConfig(image_size=64, channels=1, cache_dir=cache_dir))
        cached = store.images[0]
        assert cached.min() == 0 and cached.max() == 255
        assert len(np.unique(cached)) >= 200  # was 17


def test_png_sbit_pins_the_depth(tmp_path):
    # A dark 12-bit image (max 1023) with sBIT=12: 1023 / 4095, not read as a bright 10-bit one.
    assert load_image(_png16(tmp_path / "dark.png", _ramp(1023), sbit=12)).max() == pytest.approx(1023 / 4095)
    # sBIT as the PNG spec means it: 12-bit samples already scaled up to 16 bits.
    scaled = _ramp(4095).astype(np.uint32)
    scaled = (scaled << 4) | (scaled >> 8)
    img = load_image(_png16(tmp_path / "scaled.png", scaled, sbit=12))
    assert img.max() == pytest.approx(1.0) and img.min() == 0.0


def test_full_16_bit_png_still_divides_by_65535(tmp_path):
    img = load_image(_png16(tmp_path / "r16.png", _ramp(65535)))
    assert img.max() == pytest.approx(1.0) and np.unique(img).size > 4000


def _tiff(path, values: np.ndarray) -> str:
    Image.fromarray(values.astype(np.float32), mode="F").save(path)
    return str(path)


def test_float_tiff_in_unit_range_is_kept(tmp_path):
    values = _ramp(4095) / 4095
    img = load_image(_tiff(tmp_path / "unit.tif", values))
    assert img.shape == (1, 64, 64)  # stays one grey channel
    np.testing.assert_allclose(img[0], values, atol=1e-6)  # was black: cast to 8-bit integers 0 and 1


def test_float_tiff_of_whole_numbers_follows_the_integer_rule(tmp_path):
    values = _ramp(4095)
    img = load_image(_tiff(tmp_path / "w.tif", values))
    np.testing.assert_allclose(img[0], values / 4095, atol=1e-6)  # was saturated: 1.0 above 1


def test_float_tiff_with_real_values_is_windowed(tmp_path):
    values = _ramp(4000) - 1000.5  # Hounsfield-like, negative and fractional
    img = load_image(_tiff(tmp_path / "hu.tif", values))
    np.testing.assert_allclose(img[0], (values - values.min()) / (values.max() - values.min()), atol=1e-6)


def test_float_tiff_with_nan_is_a_bad_image(tmp_path):
    values = _ramp(10) / 10
    values[3, 3] = np.nan
    with pytest.raises(BadImageError, match="NaN"):
        load_image(_tiff(tmp_path / "nan.tif", values))
