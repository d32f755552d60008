#!/usr/bin/env python
"""Time building the default CheXpert cohort against torchxrayvision's CheX_Dataset parsing the same CSV.

The CSV is, in order of preference: --csv; torchxrayvision's bundled chexpert_train.csv.gz if that package
imports; the one inside a torchxrayvision wheel given with --wheel (extracted to /tmp, never into the repo);
else a synthetic CheXpert-format table with the real table's shape (223,414 rows, 64,540 patients,
187,641 studies, same label and view counts) generated once in /tmp. Runs alternate between the two sides;
the ratio of medians is printed (below 1 = the cohort build is faster).

Usage:
    python scripts/bench_cohort.py [--csv train.csv | --wheel torchxrayvision-1.5.7-py3-none-any.whl] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile

import numpy as np
import pandas as pd

from egan_med.cohort import CohortOptions, build  # noqa: E402
from egan_med.cohort.sources import CHEXPERT_LABELS  # noqa: E402

WHEEL_CSV = "torchxrayvision/data/chexpert_train.csv.gz"
TMP = os.path.join(tempfile.gettempdir(), "egan_med_bench")


def synthetic_chexpert(path: str, seed: int = 0) -> str:
    """Write a CheXpert-format train.csv.gz shaped like the real one (labels consistent within a study).

    Args:
        path: where to write it (skipped if it exists).
        seed: random seed.

    Returns:
        path.
    """
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    n_pat, n_study, n_img, n_lateral = 64_540, 187_641, 223_414, 32_387
    study_pat = np.sort(np.r_[np.arange(n_pat), rng.integers(0, n_pat, n_study - n_pat)])
    study_no = np.arange(n_study) - np.searchsorted(study_pat, study_pat) + 1
    img_study = np.sort(np.r_[np.arange(n_study), rng.integers(0, n_study, n_img - n_study)])
    view_no = np.arange(n_img) - np.searchsorted(img_study, img_study) + 1
    lateral = np.zeros(n_img, bool)
    lateral[rng.choice(np.flatnonzero(view_no > 1), n_lateral, replace=False)] = True
    # Per-study Pneumonia counts of the real table: 1.0 / -1.0 / 0.0 / blank.
    st_lab = rng.permutation(np.repeat([1.0, -1.0, 0.0, np.nan], [4_576, 15_658, 1_833, 165_574]))
    df = pd.DataFrame({
        "Path": [f"CheXpert-v1.0-small/train/patient{p + 1:05d}/study{s}/view{v}_{'lateral' if lat else 'frontal'}.jpg"
                 for p, s, v, lat in zip(study_pat[img_study], study_no[img_study], view_no, lateral)],
        "Sex": rng.choice(["Female", "Male"], n_img), "Age": rng.integers(18, 90, n_img),
        "Frontal/Lateral": np.where(lateral, "Lateral", "Frontal"),
        "AP/PA": np.where(lateral, "", rng.choice(["AP", "PA"], n_img))})
    for name in CHEXPERT_LABELS:
        vals = rng.choice([1.0, 0.0, -1.0, np.nan], n_img, p=[0.15, 0.05, 0.05, 0.75])
        df[name] = st_lab[img_study] if name == "Pneumonia" else vals
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.to_csv(path + ".part", index=False, compression="gzip")
    os.replace(path + ".part", path)
    return path


def txv_parse_replica(csvpath: str) -> int:
    """torchxrayvision 1.5.7 CheX_Dataset.__init__'s CSV work with its defaults (views=['PA'], unique patients)."""
    pathologies = sorted(set(CHEXPERT_LABELS) - {"No Finding"})
    csv = pd.read_csv(csvpath)
    csv["view"] = csv["Frontal/Lateral"]
    csv.loc[(csv["view"] == "Frontal"), "view"] = csv["AP/PA"]
    csv["view"] = csv["view"].replace({"Lateral": "L"}).fillna("UNKNOWN")
    csv = csv[csv["view"].isin(["PA"])]
    csv["PatientID"] = csv["Path"].str.extract(pat=r"(patient\d+)")
    csv = csv.groupby("PatientID").first().reset_index()
    healthy = csv["No Finding"] == 1
    labels = []
    for p in pathologies:
        if p != "Support Devices":
            csv.loc[healthy, p] = 0
        labels.append(csv[p].values)
    labels = np.asarray(labels).T.astype(np.float32)
    labels[labels == -1] = np.nan
    pid = csv.Path.str.split("train/", expand=True)[1].str.split("/study", expand=True)[0].str.replace("patient", "")
    csv["patientid"] = pid
    csv["age_years"] = csv["Age"] * 1.0
    csv.loc[csv["Age"] == 0, "Age"] = None
    csv["sex_male"] = csv["Sex"] == "Male"
    csv["sex_female"] = csv["Sex"] == "Female"
    return len(labels)


def pick_csv(a: argparse.Namespace) -> tuple[str, str]:
    """(csv path, description) following the module docstring's order."""
    if a.csv:
        return a.csv, "given CSV"
    try:
        import torchxrayvision as xrv
        return os.path.join(os.path.dirname(xrv.__file__), "data", "chexpert_train.csv.gz"), "torchxrayvision's CSV"
    except Exception:  # noqa: BLE001 - any import failure means: not available
        pass
    if a.wheel:
        out = os.path.join(TMP, "real", "chexpert_train.csv.gz")
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with zipfile.ZipFile(a.wheel) as z, z.open(WHEEL_CSV) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return out, f"real CheXpert CSV from {os.path.basename(a.wheel)}"
    return synthetic_chexpert(os.path.join(TMP, "synthetic", "train.csv.gz")), "synthetic CheXpert-format CSV"


def main() -> None:
    """Run both sides alternately and print medians and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv")
    p.add_argument("--wheel")
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    csv, what = pick_csv(a)
    try:
        import torchxrayvision as xrv
        txv_name = f"torchxrayvision {xrv.__version__} CheX_Dataset"
        txv = lambda: len(xrv.datasets.CheX_Dataset(imgpath="/nonexistent", csvpath=csv))  # noqa: E731
    except Exception as e:  # noqa: BLE001
        txv_name = f"replica of CheX_Dataset's CSV parse (torchxrayvision not importable: {type(e).__name__}: {e})"
        txv = lambda: txv_parse_replica(csv)  # noqa: E731
    out = os.path.join(tempfile.mkdtemp(prefix="bench_cohort_"), "cohort")
    ours = lambda: build(CohortOptions(source="csv", input=csv), out, overwrite=True)["counts"]["pool"]  # noqa: E731
    wall, cpu = {"ours": [], "txv": []}, {"ours": [], "txv": []}  # CPU time is steadier on a shared machine
    for _ in range(a.repeat):
        for side, fn in (("ours", ours), ("txv", txv)):
            t, c = time.perf_counter(), time.process_time()
            result = fn()
            wall[side].append(time.perf_counter() - t)
            cpu[side].append(time.process_time() - c)
            pool = result if side == "ours" else pool
    shutil.rmtree(os.path.dirname(out))
    print(f"csv: {csv} ({what}); {a.repeat} alternating runs each")
    print(f"A = cohort build (default CheXpert, writing cohort.csv/json/excluded.csv): pool minority "
          f"{pool['minority']:,}, majority {pool['majority']:,}")
    print(f"B = {txv_name}")
    for name, t in (("wall", wall), ("cpu", cpu)):
        med = {k: statistics.median(v) for k, v in t.items()}
        print(f"{name:4s} median A {med['ours']:.3f} s, B {med['txv']:.3f} s, A/B {med['ours'] / med['txv']:.2f};  "
              f"min A {min(t['ours']):.3f} s, B {min(t['txv']):.3f} s, A/B {min(t['ours']) / min(t['txv']):.2f}")


if __name__ == "__main__":
    main()
