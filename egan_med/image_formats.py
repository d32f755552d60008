"""The image file suffixes egan_med reads: ONE list, shared by cohort building, training and predict.

Kept free of heavy imports (no torch/MONAI) so that building a cohort stays fast. ``load_image`` decodes DICOM
with pydicom and everything else with Pillow; a suffix-less file is read when it carries DICOM's "DICM" marker.
"""
from __future__ import annotations

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
# Pillow formats load_image turns into grayscale or RGB; .npy is not here: load_image cannot decode it.
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES
