"""Readers that turn a label source into candidate cohort units (see egan_med.cohort, which builds from them).

Each returns a SourceTable: one row per candidate unit (an image; for CheXpert by study, one image per study)
with class, patient, study and official split, plus the rows it dropped and why. Readers guarantee that no path
repeats (they check it, or the source cannot repeat one).
"""
from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from egan_med.image_formats import IMAGE_SUFFIXES
from egan_med.io import file_hash
from egan_med.cohort.options import SPLITS, CohortError, CohortOptions, check_paths_inside, stage

CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
IMAGE_EXTS = {*IMAGE_SUFFIXES, ""}  # what load_image reads; "" = suffix-less (DICOM exports)
SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class SourceTable:
    """Candidate units of one source, before splitting and sampling (string arrays: "" = unknown)."""

    source: str
    input_path: str
    input_sha256: str
    root: str
    path: np.ndarray
    minority: np.ndarray | None = None
    patient: np.ndarray | None = None
    study: np.ndarray | None = None
    official: np.ndarray | None = None  # "train"/"val"/"test" per unit where the source has official splits
    unit: str = "image"
    patient_code: np.ndarray | None = None  # int codes of `patient` (-1 = unknown) when the reader has them
    study_code: np.ndarray | None = None
    options: dict = field(default_factory=dict)  # effective values of defaulted options, for cohort.json
    plain: bool = False  # the reader checked: paths stay inside the root and need no CSV quoting
    excluded: list[tuple[np.ndarray, str]] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.path)
        self.minority = np.zeros(n, np.int8) if self.minority is None else self.minority
        self.patient, self.study = (np.full(n, "", object) if a is None else a for a in (self.patient, self.study))

    def keep(self, mask: np.ndarray, minority: np.ndarray | None = None) -> None:
        """Keep only the units in `mask` (optionally replacing the class column first)."""
        self.minority = self.minority if minority is None else minority
        for name in ("path", "minority", "patient", "study", "official"):
            setattr(self, name, None if getattr(self, name) is None else getattr(self, name)[mask])


def _require_file(path: str) -> str:
    if not os.path.isfile(path):
        raise CohortError(f"no such file: {path}")
    return path


def _sha256(path: str) -> str:
    return file_hash(_require_file(path))


def _read_csv(path, name: str = "", **kwargs) -> pd.DataFrame:
    """pandas.read_csv with every way a non-CSV fails turned into one CohortError."""
    try:
        return pd.read_csv(path, **kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, EOFError, OSError) as e:
        raise CohortError(f"{name or path} is not a readable CSV ({type(e).__name__}: {str(e).splitlines()[0][:99]})")


def csv_header(path: str) -> list[str]:
    """Column names of a CSV; raises CohortError if it is missing or not a CSV."""
    cols = list(_read_csv(_require_file(path), nrows=0).columns)
    if len(cols) < 2:
        raise CohortError(f"{path} is not a CSV with a header row (found {len(cols)} column: {cols[:1]})")
    return cols


def _require_columns(path: str, cols: list[str], needed: list[str]) -> None:
    if missing := [c for c in needed if c not in cols]:
        raise CohortError(f"{path} is missing columns: {', '.join(missing)}")


def _check_label_name(label: str, known: tuple[str, ...], what: str) -> None:
    if label not in known:
        hint = "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(label, known, n=1))
        raise CohortError(f"unknown label {label!r}{hint}; {what} labels: {', '.join(known)}")


def _no_duplicates(paths: pd.Series, src: str) -> None:
    if (dup := paths.duplicated()).any():
        raise CohortError(f"{src} lists {int(dup.sum())} image path(s) twice, e.g. {paths[dup].iloc[0]!r}")


# CheXpert paths end .../patientNNNNN/studyK/file; the folder names are kept exactly ("patient1" != "patient01").
_CHEXPERT_PATH = r"/(patient\d{1,8})/(study\d{1,8})/[^/]*$"
# Paths that need the containment check: absolute, drive or backslash, a ".." step, a leading dot, or empty.
_NOT_PLAIN = r"^$|^[/.]|[:\\]|/\.\."


def _chexpert_folders(strings: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(patient folder, study folder, plain) of each path; '' where a path lacks .../patientN/studyK/file.

    The paths are joined by newlines and searched once: the loop over rows is then the regex engine's and
    ``str.find``'s (C), not a Python call per row as in pandas' ``str.extract`` / ``str.contains`` (0.12 s against
    0.9 s of CPU on CheXpert's 223,414 paths). A match must end a line, so a line holds at most one: as many
    matches as paths means every path has the shape. Otherwise (a bad path, or a newline inside a quoted path),
    pandas' per-row route gives the same answer.
    """
    joined = "\n".join(strings)
    if len(strings) and joined.count("\n") == len(strings) - 1:
        found = re.findall(_CHEXPERT_PATH.replace("[^/]", "[^/\n]"), joined, re.M)
        if len(found) == len(strings):
            lines = "\n" + joined + "\n"  # every path between two newlines: _NOT_PLAIN as substring tests
            plain = not ("\n\n" in lines or "\n/" in lines or "\n." in lines or ":" in joined or "\\" in joined
                         or "/.." in joined)
            folders = np.array(found, dtype=object)
            return folders[:, 0], folders[:, 1], plain
    paths = pd.Series(strings, dtype=object)
    folders = paths.str.extract(_CHEXPERT_PATH).fillna("")
    return folders[0].to_numpy(object), folders[1].to_numpy(object), not paths.str.contains(_NOT_PLAIN).any()


def read_chexpert(o: CohortOptions, csv: str, cols: list[str]) -> SourceTable:
    """CheXpert train/valid CSV: label policy, views, one representative image per study (frontal first)."""
    label, unit, policy = o.label or "Pneumonia", o.unit or "study", o.uncertain or "ignore"
    _check_label_name(label, CHEXPERT_LABELS, "CheXpert")
    _require_columns(csv, cols, ["Path", "Frontal/Lateral", label])
    with open(csv, "rb") as f:
        raw = f.read()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw if csv.endswith(".csv") else None
    src = (lambda: io.BytesIO(data)) if data is not None else (lambda: csv)  # None: let pandas decompress
    df = _read_csv(src(), usecols=["Frontal/Lateral", label], dtype={"Frontal/Lateral": "category"}, name=csv)
    lab = pd.to_numeric(df[label], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isnan(lab) | np.isin(lab, (1.0, 0.0, -1.0))) | (np.isnan(lab) & df[label].notna().to_numpy())
    if bad.any():
        raise CohortError(f"column {label!r} has {int(bad.sum())} value(s) outside {{1, 0, -1, blank}}, "
                          f"e.g. {df[label][bad].iloc[0]!r}")
    strings = _read_csv(src(), usecols=["Path"], dtype=object, keep_default_na=False, name=csv)["Path"].to_numpy()
    patient_folder, study_folder, plain = _chexpert_folders(strings)  # (CSV quoting is to_csv's job)
    ok = patient_folder != ""
    if not ok.all():
        raise CohortError(f"{int((~ok).sum())} path(s) lack .../patientNNNNN/studyK/..., e.g. "
                          f"{strings[np.argmin(ok)]!r}; cannot group by patient")
    (pcode, patients), (sname, snames) = pd.factorize(patient_folder), pd.factorize(study_folder)
    scode = pd.factorize(pcode * (len(snames) + 1) + sname)[0]  # a study is (patient, study folder)
    n_st = int(scode.max(initial=-1)) + 1
    if policy != "ignore":
        lab = np.where(lab == -1, 1.0 if policy == "ones" else 0.0, lab)
    img = np.where(lab == 1, 2, np.where(lab == -1, 1, 0)).astype(np.int8)  # 2 positive, 1 uncertain, 0 neither
    by_study = unit == "study"
    if by_study:  # a study is positive if any of its images is, else uncertain if any is
        agg = np.zeros(n_st, np.int8)
        np.maximum.at(agg, scode, img)
        img = agg[scode]
    frontal, lateral = ((df["Frontal/Lateral"] == v).to_numpy() for v in ("Frontal", "Lateral"))
    view_ok = {"all": np.ones_like(frontal), "frontal": frontal, "lateral": lateral}[o.views]
    uncertain, drop_view, keep = img == 1, (img != 1) & ~view_ok, (img != 1) & view_ok
    root = o.root or os.path.dirname(os.path.dirname(os.path.abspath(csv)))
    t = SourceTable("chexpert", csv, hashlib.sha256(raw).hexdigest(), root, strings, unit=unit, plain=plain,
                    options={"label": label, "uncertain": policy, "unit": unit})
    if not by_study:  # (one image per study cannot repeat a path)
        _no_duplicates(pd.Series(strings), csv)
    studies = lambda mask: int(np.bincount(scode[mask], minlength=n_st).astype(bool).sum())  # noqa: E731
    s_unc, s_view = (studies(uncertain), n_st - studies(uncertain) - studies(keep)) if by_study else (None, None)
    t.stages += [stage("rows read", len(df), n_st), stage("uncertain dropped", uncertain.sum(), s_unc),
                 stage("views dropped", drop_view.sum(), s_view)]
    t.excluded += [(strings[uncertain], "uncertain"), (strings[drop_view], "view")]
    rows = np.flatnonzero(keep)
    if by_study:  # the study's first frontal image, else its first image
        first = np.full((2, n_st), len(df), np.int64)
        for i, mask in enumerate((keep & frontal, keep)):
            np.minimum.at(first[i], scode[mask], np.flatnonzero(mask))
        other = keep.copy()
        other[np.where(first[0] < len(df), first[0], first[1])[first[1] < len(df)]] = False
        rows = np.flatnonzero(keep & ~other)
        t.excluded.append((strings[other], "same_study"))
        t.stages.append(stage("other images of kept studies", other.sum()))
    t.path, t.minority = strings[rows], (img[rows] == 2).astype(np.int8)
    t.patient_code, t.study_code = pcode[rows], scode[rows]
    t.patient = np.asarray(patients, dtype=object)[t.patient_code]  # "patientNNNNN"
    t.study = np.asarray(snames, dtype=object)[sname[rows]]  # "studyK", as CheXpert names it within a patient
    return t


def read_nih(o: CohortOptions, csv: str, cols: list[str]) -> SourceTable:
    """NIH ChestX-ray14 Data_Entry table: minority = `Finding Labels` contains the label, majority = rest."""
    label = o.label or "Pneumonia"
    _check_label_name(label, NIH_LABELS, "NIH ChestX-ray14")
    need = ["Image Index", "Finding Labels", "Patient ID"]
    _require_columns(csv, cols, need)
    df = _read_csv(csv, usecols=need, dtype=str, keep_default_na=False)
    _no_duplicates(df["Image Index"], csv)
    found = (df["Finding Labels"].str.split("|").explode() == label).groupby(level=0).any()  # exact names
    t = SourceTable("nih", csv, _sha256(csv), o.root or os.path.dirname(os.path.abspath(csv)),
                    df["Image Index"].to_numpy(dtype=object), found.to_numpy(np.int8),
                    df["Patient ID"].to_numpy(dtype=object), options={"label": label})
    t.stages.append(stage("rows read", len(df)))
    return t


# Spellings of "no label" that spreadsheets and pandas write (compared lower-case): a generic CSV row labelled
# with one of these has no class, so it must not fall into "every other class" = majority.
MISSING_LABELS = frozenset({"", "nan", "-nan", "n/a", "na", "#n/a", "#n/a n/a", "#na", "<na>", "null", "none", "nil",
                            "missing", "?", "-", "1.#ind", "-1.#ind", "1.#qnan", "-1.#qnan"})


def _classes(t: SourceTable, o: CohortOptions, labels: np.ndarray, names: dict[str, str] | None = None,
             missing_like: bool = False) -> SourceTable:
    """Keep the --minority and --majority (default: every other) classes of string `labels`.

    Matching is exact. A label equal to a requested class only up to case is refused (it would otherwise turn
    into majority unnoticed). --majority may list several classes separated by commas.

    Args:
        t: the source table; its rows are filtered in place.
        o: the options (minority, majority).
        labels: one string label per row of `t`.
        names: CIFAR-style class name -> label map, or None.
        missing_like: also treat NaN, N/A, null, none, ... (any case) as no label, not as a class.

    Returns:
        `t`, keeping only minority and majority rows.
    """
    names = names or {}
    missing = labels == ""
    if missing_like:
        requested = {o.minority, *(m.strip() for m in (o.majority or "").split(","))}  # a named class is a class
        lower = np.char.lower(labels.astype(str))
        missing = np.isin(lower, sorted(MISSING_LABELS - {c.lower() for c in requested if c}))
    seen = set(labels[~missing].tolist())
    majority = None
    if o.majority:  # one class, or a comma-separated list when no class has that exact name
        majority = [o.majority] if names.get(o.majority, o.majority) in seen \
            else [m.strip() for m in o.majority.split(",")]
    by_lower: dict[str, set[str]] = {}
    for lab in seen:
        by_lower.setdefault(lab.lower(), set()).add(lab)
    for cls, flag in [(o.minority, "--minority")] + [(m, "--majority") for m in majority or []]:
        want = names.get(cls, cls)
        if variants := sorted(by_lower.get(want.lower(), set()) - {want}):
            n = int(np.isin(labels, variants).sum())
            raise CohortError(f"label {variants[0]!r} ({n} row(s)) differs from {flag} {cls!r} only in case; "
                              f"class names must match exactly: fix the labels or pass the exact name")
        if want not in seen:
            present = ", ".join(sorted(names or seen)[:20])
            raise CohortError(f"class {cls!r} has no images; classes present: {present}")
    if majority and o.minority in majority:
        raise CohortError(f"class {o.minority!r} is given as both --minority and --majority")
    mino = labels == names.get(o.minority, o.minority)
    kept = mino | (np.isin(labels, [names.get(m, m) for m in majority]) if majority else ~missing)
    kept &= ~missing
    t.excluded += [(t.path[missing], "no_label"), (t.path[~kept & ~missing], "other_class")]
    t.stages.append(stage("other classes / blank labels dropped", (~kept).sum()))
    if not majority:
        shown = {v: k for k, v in names.items()}  # CIFAR: say class names, not indices
        others = sorted(shown.get(lab, lab) for lab in seen - {names.get(o.minority, o.minority)})
        t.notes.append(f"majority = every other class ({len(others)}): {', '.join(others[:10])}"
                       f"{', ...' if len(others) > 10 else ''}; pass --majority to name them")
    t.keep(kept, mino.astype(np.int8))
    return t


def read_generic(o: CohortOptions, csv: str, cols: list[str]) -> SourceTable:
    """A CSV with path,label[,patient][,study][,split]; paths relative to --root (default: the CSV's folder)."""
    _require_columns(csv, cols, ["path", "label"])
    df = _read_csv(csv, dtype=str, keep_default_na=False)
    root = o.root or os.path.dirname(os.path.abspath(csv))
    col = {c: df[c].str.strip().to_numpy(dtype=object) for c in ("path", "label", "patient", "study", "split")
           if c in cols}
    prefix = root.rstrip("/") + "/"  # absolute paths under the root become relative
    col["path"] = np.array([p[len(prefix):] if p.startswith(prefix) else p for p in col["path"]], dtype=object)
    _no_duplicates(pd.Series(col["path"]), csv)
    official = np.array([SPLIT_DIRS.get(s.lower(), "?") for s in col["split"]], object) if "split" in col else None
    if official is not None and (official == "?").any():
        raise CohortError(f"column 'split' must hold train/val/test, found {col['split'][official == '?'][0]!r}")
    t = SourceTable("generic", csv, _sha256(csv), root, col["path"], None, col.get("patient"), col.get("study"),
                    official)
    t.stages.append(stage("rows read", len(df)))
    if "patient" not in col:
        t.notes.append("no patient column: every image is its own group, patient leakage cannot be checked")
    return _classes(t, o, col["label"], missing_like=True)


def _rebase(paths: list[str], base: str, root: str) -> np.ndarray:
    """Paths relative to `base` made relative to `root` (which must contain base)."""
    prefix = os.path.relpath(base, root).replace(os.sep, "/")
    check_paths_inside(np.array([prefix + "/x"]), root)
    return np.array(paths if prefix == "." else [f"{prefix}/{p}" for p in paths], dtype=object)


def read_folder(o: CohortOptions, folder: str) -> SourceTable:
    """One subfolder per class, optionally under train/ val/ test/ (official splits)."""
    if not os.path.isdir(folder):
        raise CohortError(f"no such folder: {folder}")
    subdirs = lambda d: sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))  # noqa
    layout = [(d, SPLIT_DIRS[d.lower()]) for d in subdirs(folder) if d.lower() in SPLIT_DIRS]
    if not {"train", "test"} & {s for _, s in layout}:
        layout = [("", "")]
    files, labels, splits = [], [], []
    for sub, split in layout:
        for cls in subdirs(os.path.join(folder, sub)):
            for dirpath, dirnames, names in os.walk(os.path.join(folder, sub, cls)):
                dirnames.sort()
                rel = os.path.relpath(dirpath, folder).replace(os.sep, "/")
                new = [f"{rel}/{nm}" for nm in sorted(names) if not nm.startswith(".")]
                files += new
                labels += [cls] * len(new)
                splits += [split] * len(new)
    if not files:
        raise CohortError(f"{folder} has no class subfolders with files")
    found = [m.group(1) if (m := re.search(o.patient_regex, f)) else None for f in files] if o.patient_regex else []
    if None in found:
        i = found.index(None)
        raise CohortError(f"--patient-regex does not match {found.count(None)} file(s), e.g. {files[i]!r}")
    patient = np.array(found, dtype=object) if found else None
    root = o.root or os.path.abspath(folder)
    listing = "\n".join(f"{p}\t{c}" for p, c in zip(files, labels)).encode()
    t = SourceTable("folder", folder, hashlib.sha256(listing).hexdigest(), root,
                    _rebase(files, os.path.abspath(folder), root), None, patient, None,
                    np.array(splits, dtype=object) if layout[0][1] else None)
    t.stages.append(stage("files found", len(files)))
    image = np.array([os.path.splitext(f)[1].lower() in IMAGE_EXTS for f in files])
    t.excluded.append((t.path[~image], "not_image"))
    t.keep(image)
    return _classes(t, o, np.array(labels, dtype=object)[image])


def read_npz(o: CohortOptions, npz: str) -> SourceTable:
    """MedMNIST-style .npz: <split>_images / <split>_labels; an image is `<file>.npz#<split>/<index>`."""
    sha = _sha256(npz)
    try:
        z = np.load(npz, allow_pickle=False)
        labels = {s: np.asarray(z[f"{s}_labels"]) for s in SPLITS if f"{s}_labels" in z.files}
        missing = [f"{s}_images" for s in labels if f"{s}_images" not in z.files]
    except (ValueError, OSError) as e:
        raise CohortError(f"{npz} is not a readable .npz ({e})")
    if not labels or missing:
        raise CohortError(f"{npz} is missing arrays: {', '.join(missing) or 'train_labels/val_labels/test_labels'}")
    labels = {s: lab[:, 0] if lab.ndim == 2 and lab.shape[1] == 1 else lab for s, lab in labels.items()}
    if any(lab.ndim != 1 for lab in labels.values()):
        raise CohortError(f"{npz}: labels are not one class per image; only single-label files are supported")
    name, root = os.path.basename(npz), o.root or os.path.dirname(os.path.abspath(npz))
    paths = [f"{name}#{s}/{i}" for s, lab in labels.items() for i in range(len(lab))]
    t = SourceTable("medmnist", npz, sha, root, _rebase(paths, os.path.dirname(os.path.abspath(npz)), root),
                    official=np.array([s for s, lab in labels.items() for _ in lab], dtype=object))
    t.stages.append(stage("images read", len(paths)))
    return _classes(t, o, np.concatenate([lab.astype(np.int64).astype(str) for lab in labels.values()]).astype(object))


# The only globals the official CIFAR python archives (and torchvision's re-pickles) need: numpy's array
# reconstruction and, for protocol-2 pickles written by Python 3, bytes via _codecs.encode.
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """An Unpickler that builds dicts, lists, strings, numbers and numpy arrays only: a pickle that names any
    other callable (os.system, builtins.exec, ...) is refused before it can run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused: it calls {module}.{name}, which no CIFAR archive does")
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core name that the official files use
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _load_cifar_pickle(path: str) -> dict:
    """One CIFAR python batch or meta file, unpickled without running code; CohortError if it is not one."""
    try:
        with open(path, "rb") as fh:
            d = _CifarUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise CohortError(f"{path} is not a CIFAR pickle ({' '.join(str(e).split())[:200]})")
    if not isinstance(d, dict):
        raise CohortError(f"{path} is not a CIFAR pickle (holds a {type(d).__name__}, not a dict)")
    return d


def read_cifar(o: CohortOptions, folder: str) -> SourceTable:
    """torchvision's CIFAR python pickles; an image is `<batch file>#<index>`, e.g. `data_batch_3#17`."""
    dataset = o.dataset or "cifar10"
    c100 = dataset == "cifar100"
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    files = ["train", "test", "meta"] if c100 else [*batches, "test_batch", "batches.meta"]
    key = ("coarse" if o.coarse else "fine") + "_label" if c100 else "label"
    digest, paths, labels, splits = hashlib.sha256(), [], [], []
    for f in files:
        full = os.path.join(folder, f)
        digest.update(bytes.fromhex(_sha256(full)))
        d = _load_cifar_pickle(full)
        need = f"{key}_names" if f.endswith("meta") else f"{key}s"
        if need not in d:
            raise CohortError(f"{full} is not a CIFAR {'meta' if f.endswith('meta') else 'batch'} file (no {need!r})")
        if f.endswith("meta"):
            names = {nm: str(i) for i, nm in enumerate(d[f"{key}_names"])}
            continue
        paths += [f"{f}#{i}" for i in range(len(d[f"{key}s"]))]
        labels += [str(v) for v in d[f"{key}s"]]
        splits += ["test" if f.startswith("test") else "train"] * len(d[f"{key}s"])
    root = o.root or os.path.abspath(folder)
    t = SourceTable(dataset, folder, digest.hexdigest(), root, _rebase(paths, os.path.abspath(folder), root),
                    official=np.array(splits, dtype=object), options={"dataset": dataset})
    t.stages.append(stage("images read", len(paths)))
    return _classes(t, o, np.array(labels, dtype=object), names)


APPLIES = {"chexpert": {"label", "uncertain", "unit", "views"}, "nih": {"label"}, "generic": {"minority", "majority"},
           "folder": {"minority", "majority", "patient_regex"}, "medmnist": {"minority", "majority"},
           "cifar": {"minority", "majority", "dataset", "coarse"}}


def read_source(o: CohortOptions) -> SourceTable:
    """Dispatch on o.source; `csv` picks CheXpert, NIH or generic from the header."""
    kind, src = o.source, o.input
    cols = csv_header(src) if kind in ("csv", "chexpert", "nih", "generic") else []
    if kind == "csv":
        kind = "chexpert" if "Path" in cols else "nih" if {"Image Index", "Finding Labels"} & set(cols) \
            else "generic" if {"path", "label"} & set(cols) else ""
        if not kind:
            raise CohortError(f"{src} is missing columns: Path (CheXpert), Image Index (NIH) or path,label (generic); "
                              f"found {', '.join(cols[:6])}")
    given = {k for k in set().union(*APPLIES.values()) if getattr(o, k) not in (None, False, "all")}
    if given - APPLIES[kind]:
        raise CohortError(f"--{sorted(given - APPLIES[kind])[0].replace('_', '-')} does not apply to {kind} sources")
    if "minority" in APPLIES[kind] and not o.minority:
        raise CohortError(f"--minority CLASS is required for {kind} sources")
    if kind in ("chexpert", "nih", "generic"):
        return {"chexpert": read_chexpert, "nih": read_nih, "generic": read_generic}[kind](o, src, cols)
    return {"folder": read_folder, "medmnist": read_npz, "cifar": read_cifar}[kind](o, src)
