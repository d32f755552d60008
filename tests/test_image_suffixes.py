"""One list of image suffixes: what predict lists and the cohort builder keeps is what the reader decodes."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from egan_med.cohort.options import CohortOptions
from egan_med.cohort.sources import read_folder
from egan_med.data.readers import load_image
from egan_med.image_formats import IMAGE_SUFFIXES
from egan_med.predict import list_inputs


def _files(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith(".npy"):
            np.save(folder / name, np.zeros((8, 8), np.uint8))
        elif name.endswith(".txt"):
            (folder / name).write_text("notes")
        else:
            Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / name)


def test_every_listed_suffix_decodes(tmp_path):
    for suffix in IMAGE_SUFFIXES:
        if suffix in (".dcm", ".dicom", ".dic"):
            continue  # DICOM files are written by the bit-depth tests
        path = tmp_path / f"x{suffix}"
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path, format={".jpg": "JPEG", ".tif": "TIFF"}.get(suffix))
        assert load_image(str(path)).max() > 0.5


def test_predict_lists_tif_and_skips_npy(tmp_path):
    _files(tmp_path / "in", ["a.png", "b.tif", "c.bmp", "d.npy", "e.txt"])
    listed = sorted(os.path.basename(p) for p in list_inputs(str(tmp_path / "in"))["path"])
    assert listed == ["a.png", "b.tif", "c.bmp"]


def test_cohort_folder_source_excludes_npy(tmp_path):
    for cls, n in (("sick", 3), ("well", 6)):
        _files(tmp_path / "data" / cls, [f"{cls}{i}.png" for i in range(n)] + [f"{cls}.npy"])
    t = read_folder(CohortOptions(source="folder", minority="sick"), str(tmp_path / "data"))
    excluded = {os.path.basename(p) for paths, reason in t.excluded if reason == "not_image" for p in paths}
    assert excluded == {"sick.npy", "well.npy"}
