"""What a cohort build is asked for (CohortOptions), its error type, and helpers shared by the builder
(egan_med.cohort) and the source readers (egan_med.cohort.sources), so the readers never import the builder."""
from __future__ import annotations

import dataclasses
import math
import operator
import os
import posixpath
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


class CohortError(ValueError):
    """Bad input or an unsatisfiable request; the message is one line naming the problem."""


@dataclass
class CohortOptions:
    """What to build. `source` is csv|nih|generic|folder|medmnist|cifar; `input` its file or folder."""

    source: str = "csv"
    input: str = ""
    label: str | None = None  # CheXpert/NIH observation; default Pneumonia
    uncertain: str | None = None  # CheXpert: ignore|zeros|ones (default ignore)
    unit: str | None = None  # CheXpert: study|image (default study)
    views: str = "all"  # all|frontal|lateral
    minority: str | None = None  # class name/index for folder, npz, CIFAR, generic sources
    majority: str | None = None  # None = every other class; "a,b" = several classes
    dataset: str | None = None  # CIFAR: cifar10 (default) | cifar100
    coarse: bool = False  # CIFAR-100 coarse labels
    patient_regex: str | None = None  # folder source: first group of this regex on the path = patient
    ratio: float | None = None  # training majority per minority
    train_minority: int | None = None  # per fold when folds > 0
    train_majority: int | None = None
    val_minority: int | None = None
    val_majority: int | None = None
    test_minority: int | None = None
    test_majority: int | None = None
    folds: int = 0
    val_frac: float = 0.1  # per class, when val is carved and no size is given
    test_frac: float = 0.2  # per class, when the source has no official test split
    seed: int = 0
    root: str | None = None

    def recorded(self) -> dict:
        """Options as stored in cohort.json (input and root are stored relative to the cohort instead)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("input", "root")}

    def validate(self) -> None:
        """Range checks that need no data."""
        if self.ratio is not None and not (math.isfinite(self.ratio) and self.ratio > 0):
            raise CohortError(f"--ratio must be a positive number, got {self.ratio}")
        for name in (f"{s}_{c}" for s in SPLITS for c in ("minority", "majority")):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CohortError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:  # numpy's seeding range
            raise CohortError(f"--seed must be within [0, 2**32), got {self.seed}")
        if self.folds < 0 or self.folds == 1:
            raise CohortError(f"--folds must be 0 (none) or at least 2, got {self.folds}")
        if not (0 < self.val_frac < 1 and 0 < self.test_frac < 1):
            raise CohortError(f"--val-frac/--test-frac must be between 0 and 1, got {self.val_frac}/{self.test_frac}")
        if self.ratio is not None and self.train_minority is not None and self.train_majority is not None:
            raise CohortError("give at most two of --ratio, --train-minority, --train-majority")

def stage(name: str, images: int, studies: int | None = None) -> dict:
    """One row of the stage table."""
    return {"stage": name, "images": int(images), "studies": None if studies is None else int(studies)}


def check_paths_inside(paths: np.ndarray, root: str) -> None:
    """Refuse empty, absolute or '..' paths that would leave the data root."""
    lst = paths.tolist()
    text = "\0".join(lst)  # C-speed scans rule out the common case
    if {"", "/", "\\"}.isdisjoint(map(operator.itemgetter(slice(0, 1)), lst)) \
            and not any(s in text for s in ("..", ":", "\\")):
        return
    for p in lst:
        norm = posixpath.normpath(p.replace("\\", "/")) if p else ""
        if not p or p[0] in "/\\" or p[1:2] == ":" or norm == ".." or norm.startswith("../"):
            raise CohortError(f"image path(s) escape the data root {root}, e.g. {p!r}")


def check_real_paths(paths: np.ndarray, root: str, entries: bool = False) -> None:
    """Refuse paths that leave the data root through a symlink (check_paths_inside reads only the text).

    Folders are resolved one component at a time and memoised, and nothing below a missing folder can be a
    link: a CheXpert-sized table whose images are not there yet costs one set lookup per path; where they are,
    about one lstat per file and per folder.

    Args:
        paths: paths relative to `root` (already passed check_paths_inside).
        root: the data root.
        entries: paths are `<file>#<entry>` addresses (npz, CIFAR); only the file part is a path.
    """
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    memo: dict[str, tuple[str, bool]] = {"": (real_root, True)}  # folder -> (real path, exists)

    def resolve(rel: str, want_dir: bool) -> tuple[str, bool]:
        parent, _, name = rel.rpartition("/")
        if parent not in memo:
            memo[parent] = resolve(parent, True)
        base, exists = memo[parent]
        full = os.path.join(base, name)
        if not exists or not name:
            return full, False
        real = os.path.realpath(full) if os.path.islink(full) else full
        return real, (os.path.isdir(real) if want_dir else True)

    lst = paths.tolist()
    files = [(p.partition("#")[0] if entries else p).replace("\\", "/") for p in lst]
    if all("/" in f for f in files) and not any(os.path.lexists(os.path.join(real_root, t))
                                                for t in {f.partition("/")[0] for f in files}):
        return  # no top-level folder is there (images not copied yet): nothing can be a link
    for p, file in zip(lst, files):
        folder = file.rpartition("/")[0]
        if folder in memo and not memo[folder][1] and memo[folder][0].startswith(prefix):
            continue  # in a missing folder inside the root: cannot be a link
        real, _ = resolve(file, False)
        if not (real == real_root or real.startswith(prefix)):
            raise CohortError(f"image path(s) leave the data root {root} through a symlink, e.g. {p!r} -> {real}; "
                              f"if that is intended, pass --root a folder that really holds them")
