"""Radiograph and natural-image data pipeline on MONAI: readers, cached datasets, seeded augmentation."""
from egan_med.data.datasets import make_dataset, make_loader, save_augmentation_grid
from egan_med.data.readers import BadImageError, load_image

__all__ = ["BadImageError", "load_image", "make_dataset", "make_loader", "save_augmentation_grid"]
