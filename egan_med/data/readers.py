"""Image readers: PNG/JPEG, DICOM and MedMNIST-style npz entries, all as (C, rows, cols) float32 in [0, 1].

Arrays come out in display orientation (first row at the top, as a radiologist sees it). MONAI's PILReader and
PydicomReader transpose by default, so they are configured (or subclassed) here not to.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

import numpy as np
import pydicom
from monai.data import PILReader, PydicomReader
from monai.transforms import LoadImage
from PIL import Image
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
    """Reduce PIL's many modes to L, RGB or 16/32-bit integer grayscale."""
    if img.mode in ("L", "RGB") or img.mode.startswith("I"):
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
_pil_reader = PILReader(converter=_pil_to_supported_mode, reverse_indexing=False)
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
    with open(path, "rb") as fh:  # DICOM Part 10 files carry "DICM" after a 128-byte preamble
        fh.seek(128)
        return fh.read(4) == b"DICM"


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


def _pil_to_unit(img: Any) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):  # 16-bit PNGs arrive as I;16 or I (int32)
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


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
                img = _pil_to_unit(_loader("pil")(path, reader=_pil_reader))
        except Exception as exc:  # Pillow, pydicom and MONAI each raise their own types
            raise BadImageError(path, f"cannot decode ({type(exc).__name__}: {exc})") from None
    if img.shape[0] not in (1, 3) or img.ndim != 3 or min(img.shape[1:]) < 1:
        raise BadImageError(path, f"unsupported image shape {tuple(img.shape)}")
    return to_channels(img, channels) if channels else np.ascontiguousarray(img, dtype=np.float32)
