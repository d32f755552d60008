"""Cohorts: which images are minority/majority, which split each belongs to, and why the rest were left out.

A cohort is a folder with ``cohort.csv`` (one row per image: path, minority, split, fold, patient, study),
``cohort.json`` (options, seed, input SHA-256, root, counts, stage table, exclusion summary) and, when not too
big, ``excluded.csv`` (path, reason). Splits are patient-disjoint and checked before anything is written;
the folder appears atomically. Source readers live in egan_med.cohort.sources.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from egan_med.cohort.options import (SPLITS, CohortError, CohortOptions, check_paths_inside,  # noqa: F401 - re-exported
                                     check_real_paths, stage)
from egan_med.cohort.sources import read_source
from egan_med.image_formats import DICOM_SUFFIXES

MANIFEST_COLUMNS = ["path", "minority", "split", "fold", "patient", "study"]
FORMAT = "egan_med.cohort/1"
EXCLUDED_CSV_MAX_ROWS = 250_000  # above this only the per-reason counts are kept
REASONS = {
    "uncertain": "label -1 (uncertain) under --uncertain ignore", "view": "view not selected by --views",
    "same_study": "another image of the same study represents it (--unit study)",
    "other_class": "class is neither --minority nor --majority",
    "no_label": "blank or missing-like label (NaN, N/A, null, none, ...)",
    "not_image": "file is not an image", "not_sampled": "in the pool but not drawn by the requested sizes/ratio/folds",
    "missing_file": "image file not found under the data root",
    "unreadable": "file header is not a readable image (Pillow or DICOM)",
}
ENTRY_SOURCES = ("medmnist", "cifar10", "cifar100")  # images are entries of one file, not files of their own


# File signatures of the formats load_image reads (the first bytes of the file); anything else goes to Pillow.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _file_problem(path: str) -> str:
    """"" when ``path``'s header says it is an image egan_med reads, else "missing_file" or "unreadable".

    No pixel is decoded. The common formats are recognised by their signature (about 16 us a file, against
    ~130 us for Pillow's open, which matters at 172k rows); DICOM by its "DICM" marker, or pydicom's header read for a .dcm file
    without one; any other file by Pillow's header parse.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except (FileNotFoundError, NotADirectoryError):
        return "missing_file"
    except OSError:
        return "unreadable"
    try:
        if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[128:132] == b"DICM":
            return ""
        if not head:
            return "unreadable"
        if path.lower().endswith(DICOM_SUFFIXES):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return "" if "Rows" in ds and "Columns" in ds else "unreadable"
        from PIL import Image

        with Image.open(path) as im:  # reads the header only
            return "" if im.size[0] > 0 and im.size[1] > 0 else "unreadable"
    except Exception:  # Pillow and pydicom each raise their own types for a file that is not theirs
        return "unreadable"


def _refuse_if_a_class_is_lost(t, bad: np.ndarray, missing: np.ndarray, unreadable: np.ndarray) -> None:
    mino = t.minority.astype(bool)
    for cls, members in (("minority", mino), ("majority", ~mino)):
        if members.any() and not (members & ~bad).any():
            raise CohortError(f"no {cls} image is readable: of {int(members.sum())}, {int((members & missing).sum())} "
                              f"are missing and {int((members & unreadable).sum())} are not images, "
                              f"e.g. {t.path[members][0]!r}")


_NOT_CHECKED = ("none of the {n:,} listed image files is under the root {root}; they were not checked (the cohort "
                "is built from the label table alone)")


def images_are_there(t) -> bool:
    """Whether the table's image files may be on disk, so that the drawn ones are checked.

    A label table whose images are not there at all is left as it is, with a note: cohorts may be built before
    the images are copied, and training reads them anyway. Here: no top-level entry of its paths exists under
    the root (one listing of the root, whatever the number of rows); ``check_drawn_files`` also treats a draw
    of which not one file exists that way (CheXpert's folder holding only train.csv).
    """
    if t.source in ENTRY_SOURCES or not len(t.path):
        return False
    try:
        entries = set(os.listdir(t.root))
    except OSError:
        entries = set()
    tops = {p.replace("\\", "/").partition("/")[0] for p in t.path.tolist()}
    if entries & tops:
        return True
    t.notes.append(_NOT_CHECKED.format(n=len(t.path), root=t.root))
    return False


def check_drawn_files(t, drawn: np.ndarray, verdict: dict[str, str]) -> bool:
    """Check every drawn image not checked yet; exclude missing files (``missing_file``) and files that are not
    images (``unreadable``), with their reason. When not one checked file exists, nothing is excluded (a label
    table without its images, see ``images_are_there``): files must exist for all rows once they do for some.

    Only drawn units are read (a cohort draws a few thousand of a 172k-row table): one open and a read of the
    first 132 bytes each, no pixel decoded (measured ~30 us a file on a shared 2-core box, page cache warm).

    Args:
        t: the SourceTable (filtered in place, with a note, when anything is excluded).
        drawn: the units the sampling put into a split.
        verdict: path -> problem ("" = fine) of the files checked so far, updated.

    Returns:
        True when units were excluded (the sampling must be drawn again), else False.
    """
    todo = [p for p in t.path[drawn].tolist() if p not in verdict]
    if todo:
        # Threads over large chunks (one task per file costs more than reading its header): the time is disk waits.
        chunks = [todo[k:k + 4096] for k in range(0, len(todo), 4096)]
        with ThreadPoolExecutor(max_workers=min(4, len(chunks))) as pool:
            for chunk, found in zip(chunks, pool.map(lambda c: [_file_problem(os.path.join(t.root, p)) for p in c],
                                                     chunks)):
                verdict.update(zip(chunk, found))
    if verdict and all(v == "missing_file" for v in verdict.values()):  # the folder is there, the images not
        t.notes.append(_NOT_CHECKED.format(n=len(t.path), root=t.root))
        return False
    problem = np.array([verdict.get(p, "") for p in t.path.tolist()], dtype=object)
    bad = problem != ""
    if not bad.any():
        return False
    missing, unreadable = problem == "missing_file", problem == "unreadable"
    _refuse_if_a_class_is_lost(t, bad, missing, unreadable)
    t.notes.append(f"{int(missing.sum()):,} drawn image file(s) are missing and {int(unreadable.sum()):,} are not "
                   f"readable images; excluded (missing_file, unreadable) and the cohort drawn again, "
                   f"e.g. {t.path[bad][0]!r}")
    for mask, reason in ((missing, "missing_file"), (unreadable, "unreadable")):
        if mask.any():
            t.excluded.append((t.path[mask], reason))
    for name in ("patient_code", "study_code"):
        if getattr(t, name) is not None:
            setattr(t, name, getattr(t, name)[~bad])
    t.keep(~bad)
    return True


def _group_codes(patient: np.ndarray, study: np.ndarray) -> np.ndarray:
    """Split groups: the patient; else the study; else the image alone."""
    key = np.where(patient != "", "p:" + patient, np.where(study != "", "s:" + study, ""))
    codes = pd.factorize(key)[0]
    blank = key == ""
    codes[blank] = codes.max(initial=-1) + 1 + np.arange(int(blank.sum()))
    return codes


def _carve(groups: np.ndarray, mino: np.ndarray, eligible: np.ndarray, need: tuple[int, int],
           rng: np.random.Generator, name: str) -> np.ndarray:
    """Whole patients, in random order, until `need` (minority, majority) units are covered."""
    ng = int(groups.max(initial=-1)) + 1
    cmin = np.bincount(groups[eligible & mino], minlength=ng)
    cmaj = np.bincount(groups[eligible & ~mino], minlength=ng)
    order = rng.permutation(np.flatnonzero(cmin + cmaj))
    taken = np.zeros(ng, bool)
    rem_min, rem_maj = need
    for g, a, b in zip(order.tolist(), cmin[order].tolist(), cmaj[order].tolist()):
        if rem_min <= 0 and rem_maj <= 0:
            break
        if (rem_min > 0 and a) or (rem_maj > 0 and b):  # skip patients that only bring a class already covered
            taken[g] = True
            rem_min, rem_maj = rem_min - a, rem_maj - b
    for rem, want, have, cls in ((rem_min, need[0], cmin, "minority"), (rem_maj, need[1], cmaj, "majority")):
        if rem > 0:
            raise CohortError(f"{name} split needs {want} {cls} images but only {have.sum()} are available")
    return eligible & taken[groups]


def _sample(pool: np.ndarray, mino: np.ndarray, want: tuple[int | None, int | None],
            rng: np.random.Generator, name: str) -> np.ndarray:
    """Exactly `want` units of each class from `pool` (None = all of that class)."""
    sel = pool.copy()
    for cls_mask, n, cls in ((mino, want[0], "minority"), (~mino, want[1], "majority")):
        if n is None:
            continue
        idx = np.flatnonzero(pool & cls_mask)
        if n > len(idx):
            raise CohortError(f"{name} split needs {n} {cls} images but only {len(idx)} are available")
        sel[rng.permutation(idx)[n:]] = False
    return sel


def _train_sizes(avail_min: int, avail_maj: int, o: CohortOptions) -> tuple[int, int]:
    """(minority per fold, majority) for the training split from sizes, ratio and folds."""
    k = max(o.folds, 1)
    n, m, r = o.train_minority, o.train_majority, o.ratio
    if r is not None:
        if n is not None:
            m = round(r * n)
        elif m is not None:
            n = math.floor(m / r + 1e-9)
        else:  # as many as fit: whichever class binds is used in full
            n_fit = math.floor(avail_maj / r + 1e-9)
            if n_fit < 1:
                raise CohortError(f"--ratio {r:g} needs at least {math.ceil(r)} majority training images per minority "
                                  f"image; only {avail_maj} are available")
            n, m = (n_fit, avail_maj) if n_fit <= avail_min // k else (avail_min // k, round(r * (avail_min // k)))
    n = avail_min // k if n is None else n
    m = avail_maj if m is None else m
    if n * k > avail_min or n < 1:
        per = f" ({k} folds x {n})" if k > 1 else ""
        raise CohortError(f"train split needs {max(n * k, 1)} minority images{per} but only {avail_min} are available")
    if m > avail_maj or m < 1:
        raise CohortError(f"train split needs {max(m, 1)} majority images but only {avail_maj} are available")
    return n, m


def assign(t, o: CohortOptions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split code (index into SPLITS, -1 = not sampled) and fold (-1 = none) for every unit of table `t`.

    Hand-written rather than scikit-learn's GroupShuffleSplit: the paper's cohorts need exact per-class counts
    (e.g. 33 minority / 1,214 majority) with whole patients kept together, which no library splitter gives."""
    n = len(t.path)
    split = np.full(n, -1, np.int8)
    fold = np.full(n, -1, np.int16)
    mino = t.minority.astype(bool)
    for cls, mask in (("minority", mino), ("majority", ~mino)):
        if not mask.any():
            raise CohortError(f"empty class: no {cls} images left after the label policy and filters ({n} left)")
    groups = t.patient_code if t.patient_code is not None else _group_codes(t.patient, t.study)
    official = t.official
    train_pool = official == "train" if official is not None else np.ones(n, bool)
    free = np.ones(n, bool)
    for code, name in ((2, "test"), (1, "val")):
        want = (getattr(o, f"{name}_minority"), getattr(o, f"{name}_majority"))
        if official is not None and (official == name).any():
            pool = official == name
        else:  # carve from the (official) training images, whole patients at a time
            eligible = free & train_pool
            frac = o.test_frac if name == "test" else o.val_frac
            counts = (int((eligible & mino).sum()), int((eligible & ~mino).sum()))
            need = tuple(w if w is not None else max(1, round(frac * c)) for w, c in zip(want, counts))
            pool = _carve(groups, mino, eligible, need, rng, name)
        split[_sample(pool, mino, want, rng, name)] = code
        free &= ~pool
    pool = free & train_pool
    n_fold, n_maj = _train_sizes(int((pool & mino).sum()), int((pool & ~mino).sum()), o)
    k = max(o.folds, 1)
    mins = rng.permutation(np.flatnonzero(pool & mino))[: n_fold * k]
    split[mins] = 0
    if o.folds:
        fold[mins] = np.arange(len(mins)) // n_fold
    split[rng.permutation(np.flatnonzero(pool & ~mino))[:n_maj]] = 0
    for code, name in enumerate(SPLITS):
        for cls, mask in (("minority", mino), ("majority", ~mino)):
            if not (split[mask] == code).any():
                raise CohortError(f"{name} split has no {cls} images ({int(mask.sum())} in the pool)")
    return split, fold


def check_no_leak(split: np.ndarray, patient: np.ndarray, study: np.ndarray,
                  codes: dict[str, np.ndarray | None] | None = None) -> None:
    """Raise CohortError if a patient, or a study of a patient, appears in more than one split.

    Args:
        split: split code (index into SPLITS) per image.
        patient, study: ids per image ("" = unknown; study ids are scoped by patient).
        codes: optional precomputed int codes of patient/study (-1 = unknown; the same grouping, faster).
    """
    for what, key in (("patient", patient), ("study", study)):
        code = (codes or {}).get(what)
        known = key != "" if code is None else code >= 0
        if code is None:
            code = pd.factorize((key if what == "patient" else patient + "/" + key)[known])[0]
        else:
            code = code[known]
        seen = np.zeros((int(code.max(initial=-1)) + 1, len(SPLITS)), bool)
        seen[code, split[known]] = True
        leaking = np.flatnonzero(seen.sum(axis=1) > 1)
        if leaking.size:
            example = key[known][np.flatnonzero(code == leaking[0])[0]]
            raise CohortError(f"refusing to write a leaking cohort: {leaking.size} {what}(s) in more than one split, "
                              f"e.g. {example!r}")


def _csv_text(df: pd.DataFrame) -> str:
    """CSV text as the manifest readers expect it: no index, "\n" line ends, minimal quoting."""
    return df.to_csv(index=False, lineterminator="\n")


def _excluded_text(excluded: list[tuple[np.ndarray, str]]) -> str:
    """excluded.csv: every path left out and its reason (a categorical: one string per reason)."""
    names = list(dict.fromkeys(r for _, r in excluded))  # a reason may come in several groups
    paths = np.concatenate([p for p, _ in excluded]) if excluded else np.array([], dtype=object)
    codes = np.repeat([names.index(r) for _, r in excluded], [len(p) for p, _ in excluded]).astype(np.int64)
    reasons = pd.Categorical.from_codes(codes, names)
    return _csv_text(pd.DataFrame({"path": paths, "reason": reasons}))


BUILDER_FILES = ("cohort.csv", "cohort.json", "excluded.csv")  # everything build() writes into a cohort folder


def write_atomic(out: str, files: dict[str, str], overwrite: bool) -> None:
    """Write `files` into `out`, all or nothing.

    A new folder is written beside `out` and renamed into place. Replacing an existing one (`overwrite`) touches
    only the builder's own files (BUILDER_FILES): the old ones are moved aside, the new ones renamed in, and on
    any error the old ones are put back; a builder file this build does not write (excluded.csv when too long)
    goes with the old ones. Anything else in `out` (a README, notes, subfolders) is never moved or deleted.

    Args:
        out: the cohort folder.
        files: file name -> text.
        overwrite: replace the builder files of an existing `out`.
    """
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    exists = os.path.lexists(out)
    if exists and not overwrite:
        raise CohortError(f"{out} exists; pass --overwrite to replace it")
    if exists and not os.path.isdir(out):
        raise CohortError(f"{out} exists and is not a folder")
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=out if exists else parent)
    except OSError as exc:  # name the folder asked for, not the temporary one beside it
        raise type(exc)(exc.errno, exc.strerror, out) from None
    try:
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        if not exists:
            os.chmod(tmp, 0o755)
            os.rename(tmp, out)
            return
        old = os.path.join(tmp, "old")
        os.mkdir(old)
        moved, placed = [], []
        try:
            for name in BUILDER_FILES:
                if os.path.isfile(os.path.join(out, name)):
                    os.replace(os.path.join(out, name), os.path.join(old, name))
                    moved.append(name)
            for name in files:
                os.replace(os.path.join(tmp, name), os.path.join(out, name))
                placed.append(name)
        except BaseException:
            for name in placed:
                if name not in moved:
                    os.remove(os.path.join(out, name))
            for name in moved:  # put the previous cohort back
                os.replace(os.path.join(old, name), os.path.join(out, name))
            raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)  # holds only what this call wrote, and the previous builder files


def _rel(path: str, start: str) -> str:
    return os.path.relpath(os.path.abspath(path), start).replace(os.sep, "/")


def _summary(t, o: CohortOptions, split: np.ndarray, fold: np.ndarray, out: str) -> tuple[dict, list]:
    """cohort.json's dict and the (paths, reason) groups of every unit left out."""
    mino, by_study = t.minority.astype(bool), t.unit == "study"
    pool = {"minority": int(mino.sum()), "majority": int((~mino).sum())}
    splits = {s: {"minority": int((split[mino] == i).sum()), "majority": int((split[~mino] == i).sum())}
              for i, s in enumerate(SPLITS)}
    stages = t.stages + [stage(f"pool {c}", k, k if by_study else None) for c, k in pool.items()]
    stages += [stage(f"{s} {c}", k, k if by_study else None) for s in SPLITS for c, k in splits[s].items()]
    stages.append(stage("not sampled", (split < 0).sum()))
    excluded = [(p, r) for p, r in t.excluded + [(t.path[split < 0], "not_sampled")] if len(p)]
    by_reason: dict[str, int] = {}
    for p, r in excluded:
        by_reason[r] = by_reason.get(r, 0) + len(p)
    total = sum(by_reason.values())
    counts = {"pool": pool, "splits": splits}
    if o.folds:
        counts["folds"] = np.bincount(fold[fold >= 0], minlength=o.folds).tolist()
    return {"format": FORMAT, "source": t.source, "input": _rel(t.input_path, out), "input_sha256": t.input_sha256,
            "root": _rel(t.root, out), "seed": o.seed, "unit": t.unit, "options": {**o.recorded(), **t.options},
            "counts": counts, "stages": stages,
            "excluded": {"total": total, "by_reason": by_reason, "reasons": {r: REASONS[r] for r in by_reason},
                         "csv": "excluded.csv" if total <= EXCLUDED_CSV_MAX_ROWS else None},
            "notes": t.notes}, excluded


def _check_writable(out: str) -> None:
    """Refuse, before any work, an output folder under a file or in a folder this user cannot write."""
    parent = os.path.dirname(out)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CohortError(f"cannot create cohort folder {out}: {parent} is a file; move it away or choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CohortError(f"cannot write to {parent} (for cohort folder {out}): permission denied; choose another --out")


def build(o: CohortOptions, out: str, overwrite: bool = False) -> dict:
    """Read the source, split and sample it, check for leakage and write the cohort folder atomically.

    Args:
        o: what to build.
        out: the cohort folder to create.
        overwrite: replace `out` if it exists.

    Returns:
        The cohort.json dict as written.
    """
    o.validate()
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise CohortError(f"{out} exists; pass --overwrite to replace it")
    _check_writable(out)  # before reading a large label table
    t = read_source(o)
    if not t.plain:
        check_paths_inside(t.path, t.root)
    check_real_paths(t.path, t.root, entries=t.source in ENTRY_SOURCES)
    images_there, verdict = images_are_there(t), {}
    split, fold = assign(t, o, np.random.default_rng(o.seed))
    while images_there and check_drawn_files(t, split >= 0, verdict):
        split, fold = assign(t, o, np.random.default_rng(o.seed))  # the same draw rules, without those files
    rows = np.concatenate([np.flatnonzero(split == i) for i in range(len(SPLITS))])
    codes = {k: None if c is None else c[rows] for k, c in (("patient", t.patient_code), ("study", t.study_code))}
    check_no_leak(split[rows], t.patient[rows], t.study[rows], codes)  # readers guarantee unique paths
    meta, excluded = _summary(t, o, split, fold, out)
    manifest = pd.DataFrame({"path": t.path[rows], "minority": t.minority[rows].astype(np.int64),
                             "split": pd.Categorical.from_codes(split[rows], SPLITS), "fold": fold[rows],
                             "patient": t.patient[rows], "study": t.study[rows]}, columns=MANIFEST_COLUMNS)
    files = {"cohort.csv": _csv_text(manifest), "cohort.json": json.dumps(meta, indent=2) + "\n"}
    if meta["excluded"]["csv"]:
        files["excluded.csv"] = _excluded_text(excluded)
    write_atomic(out, files, overwrite)
    return meta


def load_manifest(csv_path: str, root_override: str = "") -> tuple[pd.DataFrame, dict]:
    """Read a cohort written by build().

    Args:
        csv_path: the cohort.csv; cohort.json must sit beside it.
        root_override: folder the paths are relative to, instead of cohort.json's `root`.

    Returns:
        (manifest with int minority/fold and str other columns, cohort.json dict with `root` made absolute).
    """
    folder = os.path.dirname(os.path.abspath(csv_path))
    json_path = os.path.join(folder, "cohort.json")
    for p in (csv_path, json_path):
        if not os.path.isfile(p):
            raise CohortError(f"missing cohort file: {p}")
    try:
        with open(json_path, encoding="utf-8") as f:
            meta = json.load(f)
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CohortError(f"malformed cohort in {folder}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    if not isinstance(meta, dict) or not isinstance(meta.get("root"), str) or "counts" not in meta:
        raise CohortError(f"malformed {json_path}: needs 'root' and 'counts'")
    if list(df.columns) != MANIFEST_COLUMNS:
        raise CohortError(f"malformed {csv_path}: columns {list(df.columns)} != {MANIFEST_COLUMNS}")
    bad = ~df["minority"].isin(["0", "1"]) | ~df["split"].isin(SPLITS) | ~df["fold"].str.fullmatch(r"-1|\d+")
    if bad.any():
        raise CohortError(f"malformed {csv_path}: bad minority/split/fold on line {int(np.argmax(bad.to_numpy())) + 2}")
    df[["minority", "fold"]] = df[["minority", "fold"]].astype(int)
    if ((df["fold"] >= 0) & ((df["minority"] == 0) | (df["split"] != "train"))).any():
        raise CohortError(f"malformed {csv_path}: a fold is set on a row that is not a minority training image")
    got = {s: {c: int(((df.split == s) & (df.minority == m)).sum()) for c, m in (("minority", 1), ("majority", 0))}
           for s in SPLITS}
    if meta["counts"].get("splits") != got:
        raise CohortError(f"malformed cohort: counts in cohort.csv {got} differ from cohort.json")
    check_no_leak(df["split"].map(SPLITS.index).to_numpy(), *(df[c].to_numpy(object) for c in ("patient", "study")))
    meta["root"] = os.path.abspath(root_override or os.path.join(folder, meta["root"]))
    return df, meta
