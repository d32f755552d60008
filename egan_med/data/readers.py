"""Image readers: PNG/JPEG, DICOM and MedMNIST-style npz entries, all as (C, rows, cols) float32 in [0, 1].

Arrays come out in display orientation (first row at the top, as a radiologist sees it). MONAI's PILReader and
PydicomReader transpose by default, so they are configured (or subclassed) here not to.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import threading
import warnings
from typing import Any

import numpy as np
import pydicom
from monai.data import PILReader, PydicomReader
from monai.transforms import LoadImage
from PIL import Image
from pydicom.misc import is_dicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from egan_med.image_formats import DICOM_SUFFIXES  # one shared list of readable suffixes

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")


class BadImageError(ValueError):
    """An image file that is missing or cannot be decoded; the message is one line naming the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the library said
        super().__init__(f"bad image {self.path}: {self.reason}")


def _pil_to_supported_mode(img: Image.Image) -> Image.Image:
    """Reduce PIL's many modes to L, RGB, 16/32-bit integer or 32-bit float grayscale."""
    if img.mode in ("L", "RGB", "F") or img.mode.startswith("I"):  # F: float TIFFs, decoded by _pil_to_unit
        return img
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")  # P, PA, RGBA, CMYK, YCbCr, ...


class RadiographDicomReader(PydicomReader):
    """MONAI's PydicomReader, plus the display pipeline radiographs need.

    Stored pixels -> modality LUT (rescale slope/intercept) -> VOI LUT or window -> [0, 1] using the range
    that BitsStored allows -> MONOCHROME1 inverted so that bone is bright. Rows stay rows (no swap).
    """

    def __init__(self) -> None:
        super().__init__(swap_ij=False, prune_metadata=True)

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        """Return (rows, cols[, samples]) float32 in [0, 1] and a minimal metadata dict."""
        if isinstance(data, list):
            raise ValueError("expected one DICOM file, got a series")
        ds = data
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError(f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not a radiograph")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        arr = ds.pixel_array  # raises on missing/undecodable pixel data
        if photometric.startswith("MONOCHROME"):
            arr = self._grayscale_to_unit(ds, arr, invert=photometric == "MONOCHROME1")
        else:  # colour DICOMs (pydicom already converts YBR to RGB); not radiographs, but readable
            arr = arr.astype(np.float32) / float(2 ** int(ds.BitsStored) - 1)
        arr = np.clip(arr, 0.0, 1.0).astype(np.float32)
        meta = {"spatial_shape": arr.shape[:2], "original_channel_dim": -1 if arr.ndim == 3 else float("nan")}
        return np.ascontiguousarray(arr), meta

    @staticmethod
    def _grayscale_to_unit(ds: pydicom.Dataset, stored: np.ndarray, invert: bool) -> np.ndarray:
        lo, hi = _output_range(ds)
        values = apply_modality_lut(stored, ds)
        has_lut = bool(ds.get("VOILUTSequence"))
        if has_lut or ("WindowCenter" in ds and "WindowWidth" in ds):
            values = apply_voi_lut(values, ds)
            if has_lut:  # the LUT's own output range, not the stored one
                inputs = np.arange(int(np.floor(lo)), int(np.ceil(hi)) + 1)
                lut = np.asarray(apply_voi_lut(inputs, ds), dtype=np.float64)
                lo, hi = float(lut.min()), float(lut.max())
        unit = (np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12)
        return 1.0 - unit if invert else unit


def _output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """Value range after the modality LUT, from BitsStored and sign (as pydicom's apply_windowing computes it)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = -float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    lo, hi = lo * slope + intercept, hi * slope + intercept
    return min(lo, hi), max(lo, hi)


# Readers are passed at call time so that their own exception reaches us, not LoadImage's multi-reader summary.
class _WritablePILReader(PILReader):
    """PILReader whose arrays are writable. MONAI's reader returns np.asarray(PIL image), a read-only view;
    LoadImage then wraps it with torch.as_tensor, which warns (two lines on stderr, before any error of the
    run) that writing to it is undefined. Owning a copy costs one small memcpy per decoded image."""

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        data, meta = super().get_data(img)
        return (data if data.flags.writeable else data.copy()), meta


_pil_reader = _WritablePILReader(converter=_pil_to_supported_mode, reverse_indexing=False)
_dicom_reader = RadiographDicomReader()
_loaders: dict[str, LoadImage] = {}
_lock = threading.Lock()  # cache-building threads share the loaders and the npz arrays
_npz_cache: dict[tuple[str, str], tuple[tuple[int, int], np.ndarray]] = {}


def _loader(kind: str) -> LoadImage:
    """MONAI LoadImage, built on first use: its constructor also instantiates every default reader, and the
    GPU DICOM one warns on machines without nvImageCodec; that noise is silenced here, once."""
    with _lock:
        if not _loaders:
            quiet = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
                    _loaders["pil"] = LoadImage(reader=_pil_reader, image_only=True, dtype=None,
                                                ensure_channel_first=True)
                    _loaders["dicom"] = LoadImage(reader=_dicom_reader, image_only=True, dtype=np.float32,
                                                  ensure_channel_first=True)
            finally:
                quiet.setLevel(level)
    return _loaders[kind]


def _is_dicom(path: str) -> bool:
    if path.lower().endswith(DICOM_SUFFIXES):
        return True
    return is_dicom(path)  # DICOM Part 10 files carry "DICM" after a 128-byte preamble


def _npz_entry(address: str) -> np.ndarray:
    """``file.npz#split/index`` -> ``split_images[index]`` as float (C, H, W); arrays cached per process."""
    file, _, entry = address.partition("#")
    split, _, index_text = entry.partition("/")
    if not os.path.isfile(file):
        raise BadImageError(address, "file not found")
    if not split or not index_text.lstrip("-").isdigit():
        raise BadImageError(address, "npz address must look like <file>.npz#<split>/<index>")
    st = os.stat(file)
    key, stamp = (os.path.realpath(file), split), (st.st_size, st.st_mtime_ns)
    with _lock:  # one decompressed copy per process
        cached = _npz_cache.get(key)
        if cached is None or cached[0] != stamp:
            try:
                with np.load(file) as npz:
                    images = npz[f"{split}_images"]
            except KeyError:
                raise BadImageError(address, f"no array '{split}_images' in the npz") from None
            except Exception as exc:
                raise BadImageError(address, f"cannot read npz: {exc}") from None
            _npz_cache[key] = cached = (stamp, images)
    images = cached[1]
    index = int(index_text)
    if not 0 <= index < len(images):
        raise BadImageError(address, f"index {index} outside {split}_images (length {len(images)})")
    img = np.asarray(images[index])
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise BadImageError(address, f"expected uint8 (H,W) or (H,W,3) entries, got {img.dtype} {img.shape}")
    img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
    return img.astype(np.float32) / 255.0


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BIT_DEPTHS = (8, 10, 12, 14, 16)  # detector depths a >8-bit container commonly holds


def _png_significant_bits(path: str) -> int | None:
    """The PNG ``sBIT`` chunk's significant bits (Pillow does not expose it), or None.

    Args:
        path: any file; only PNGs with an sBIT chunk before the image data give a number.

    Returns:
        1..16, or None: not a PNG, no sBIT chunk, or a malformed one.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind == b"sBIT":
                    data = fh.read(length)
                    # Gray: 1 byte, gray+alpha: 2 (alpha last), RGB: 3, RGBA: 4; alpha does not count.
                    bits = data[0] if len(data) <= 2 else max(data[:3])
                    return bits if len(data) == length and 1 <= bits <= 16 else None
                if kind in (b"IDAT", b"IEND"):  # sBIT must come before the image data
                    return None
                fh.seek(length + 4, os.SEEK_CUR)  # data and CRC
    except (OSError, IndexError, struct.error):
        return None


def _unsigned_full_scale(arr: np.ndarray, path: str) -> float:
    """The value that means white in an unsigned >8-bit image (the rule is in ``load_image``'s docstring)."""
    peak = float(arr.max(initial=0))
    sbit = _png_significant_bits(path)
    if sbit is not None and peak <= 2**sbit - 1:  # raw values at their real depth
        return float(2**sbit - 1)
    if sbit is not None and peak <= 65535:  # sBIT as the PNG spec means it: samples already scaled to 16 bits
        return 65535.0
    bits = next((b for b in _BIT_DEPTHS if peak <= 2**b - 1), max(16, math.ceil(math.log2(peak + 1))))
    return float(2**bits - 1)


def _window(arr: np.ndarray) -> np.ndarray:
    """Min-max window to [0, 1] (a constant image becomes 0)."""
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def _pil_to_unit(img: Any, path: str) -> np.ndarray:
    """Pixels from Pillow (via MONAI) -> float32 in [0, 1]; see ``load_image`` for the rules."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("pixel values include NaN or infinity")
    is_float = not np.issubdtype(np.asarray(img).dtype, np.integer)
    if is_float and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 1:
        return arr.astype(np.float32)  # already in [0, 1]
    if arr.min(initial=0) < 0 or (is_float and not np.array_equal(arr, np.rint(arr))):
        return _window(arr)  # signed or real-valued data: no bit depth to go by
    # Unsigned integers (16-bit PNG/TIFF arrive as I;16 or I, int32), or floats holding whole numbers.
    return np.clip(arr / _unsigned_full_scale(arr, path), 0.0, 1.0).astype(np.float32)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Convert a (C, H, W) image to 1 or 3 channels: gray is repeated, RGB becomes luminance.

    Args:
        img: float array, C in {1, 3}.
        channels: 1 or 3.

    Returns:
        (channels, H, W) float32.
    """
    if img.shape[0] == channels:
        return img
    if img.shape[0] == 1 and channels == 3:
        return np.repeat(img, 3, axis=0)
    if img.shape[0] == 3 and channels == 1:
        return np.tensordot(_LUMA, img, axes=1)[None].astype(np.float32)
    raise ValueError(f"cannot convert {img.shape[0]} channels to {channels}")


def load_image(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """Read one image as float32 (channels, rows, columns) in [0, 1], first row at the top.

    Grey levels: 8-bit images are divided by 255 and DICOM goes through its own display pipeline. Deeper
    integer images (16-bit PNG/TIFF) are divided by their real full scale: ``2**sBIT - 1`` when a PNG has
    an ``sBIT`` chunk and no value above it (a 12-bit image stored raw in 16 bits), 65535 when the values
    exceed it (the PNG spec's already-scaled samples); without sBIT, ``2**b - 1`` for the smallest
    ``b`` in 8, 10, 12, 14, 16 that holds the image's maximum (so 0..4095 is read as 12-bit). That
    guess is per image: a 12-bit image darker than 1024 reads as 10-bit; write sBIT to pin the depth.
    Float images (32-bit TIFF) in [0, 1] are kept; whole-number floats follow the integer rule;
    other floats, and signed integers with negative values, are min-max windowed to [0, 1];
    NaN or infinity is an error.

    Args:
        path: PNG/JPEG/other Pillow format, DICOM, or ``<file>.npz#<split>/<index>`` (MedMNIST layout).
        channels: 1 or 3 to convert to; None keeps the file's own (1 for grayscale, 3 for colour).

    Returns:
        The image array.

    Raises:
        BadImageError: the file is missing, empty or cannot be decoded.
    """
    path = os.fspath(path)
    if ".npz#" in path:
        img = _npz_entry(path)
    else:
        if not os.path.isfile(path):
            raise BadImageError(path, "file not found")
        if os.path.getsize(path) == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        try:
            if _is_dicom(path):
                img = _loader("dicom")(path, reader=_dicom_reader).numpy()
            else:
                img = _pil_to_unit(_loader("pil")(path, reader=_pil_reader), path)
        except Exception as exc:  # Pillow, pydicom and MONAI each raise their own types
            raise BadImageError(path, f"cannot decode ({type(exc).__name__}: {exc})") from None
    if img.shape[0] not in (1, 3) or img.ndim != 3 or min(img.shape[1:]) < 1:
        raise BadImageError(path, f"unsupported image shape {tuple(img.shape)}")
    return to_channels(img, channels) if channels else np.ascontiguousarray(img, dtype=np.float32)
