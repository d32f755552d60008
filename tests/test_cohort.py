"""Cohort builder on real data: label policy, grouped splits, sampling, folds, sources, manifest round trip."""
from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egan_med.cohort import CohortError, CohortOptions, build, check_no_leak, load_manifest

REPO = Path(__file__).resolve().parents[1]
from conftest import DATA, data_file

COVID = data_file("cxr_covid_ccby", "train.csv")
NIH = data_file("nih_cxr14_labels", "Data_Entry_2017_v2020.csv.gz")
CIFAR = data_file("cifar10_airplane_automobile")
CHEXPERT_HEADER = pd.read_csv(COVID, nrows=0).columns.tolist()


def _assert_patient_disjoint(df: pd.DataFrame) -> None:
    known = df[df.patient != ""]
    assert (known.groupby("patient").split.nunique() == 1).all()


def _counts(df: pd.DataFrame) -> dict:
    return {s: (int(((df.split == s) & (df.minority == 1)).sum()), int(((df.split == s) & (df.minority == 0)).sum()))
            for s in ("train", "val", "test")}


def test_chexpert_header_real_images(tmp_path: Path) -> None:
    meta = build(CohortOptions(input=str(COVID), label="No Finding"), str(tmp_path / "c"))
    df, loaded = load_manifest(str(tmp_path / "c" / "cohort.csv"))
    # 24 images in 23 studies; "No Finding" is 1.0 on 5 images (5 single-image studies), blank elsewhere.
    assert meta["counts"]["pool"] == {"minority": 5, "majority": 18}
    assert len(df) == 23 and df.study.ne("").all() and df.patient.str.match(r"patient\d{5}$").all()
    assert df.groupby(["patient", "study"]).size().max() == 1  # one image per study
    assert {s["stage"]: s["images"] for s in meta["stages"]}["other images of kept studies"] == 1  # patient00036
    _assert_patient_disjoint(df)
    assert loaded["root"] == str(DATA) and meta["root"] == os.path.relpath(DATA, tmp_path / "c")
    assert all((DATA / p).is_file() for p in df.path)  # paths resolve against the stored root
    assert list(df.dtypes[["minority", "fold"]]) == [np.int64, np.int64]


def test_chexpert_sizes_where_pneumonia_is_majority_class(tmp_path: Path) -> None:
    opts = CohortOptions(input=str(COVID), train_minority=10, train_majority=2, val_minority=2, val_majority=1,
                         test_minority=3, test_majority=2, seed=3)
    meta = build(opts, str(tmp_path / "c"))
    df, _ = load_manifest(str(tmp_path / "c" / "cohort.csv"))
    assert _counts(df) == {"train": (10, 2), "val": (2, 1), "test": (3, 2)}
    # 18 pneumonia images in 17 studies; majority: 5 "No Finding" studies and the unlabelled ARDS one
    assert meta["counts"]["pool"] == {"minority": 17, "majority": 6}
    _assert_patient_disjoint(df)
    excluded = pd.read_csv(tmp_path / "c" / "excluded.csv")
    assert set(excluded.reason) == {"same_study", "not_sampled"} and len(excluded) == meta["excluded"]["total"]
    assert (excluded.reason == "same_study").sum() == 1
    assert len(excluded) + len(df) == 24  # every image is either in the cohort or explained


def _synthetic_chexpert(path: Path, quote: bool = False) -> None:
    """Ten studies with known labels ('' = not mentioned)."""
    rows = [("patient00001/study1/view1_frontal.jpg", "Frontal", "1.0"),
            ("patient00001/study1/view2_lateral.jpg", "Lateral", "1.0"),
            ("patient00001/study2/view1_frontal.jpg", "Frontal", "-1.0"),
            ("patient00002/study1/view1_frontal.jpg", "Frontal", ""),
            ("patient00002/study1/view2_lateral.jpg", "Lateral", ""),
            ("patient00002/study2/view1_frontal.jpg", "Frontal", "0.0"),
            ("patient00003/study1/view1_lateral.jpg", "Lateral", "-1.0"),
            ("patient00004/study1/view1_lateral.jpg", "Lateral", "1.0"),
            ("patient00004/study1/view2_frontal.jpg", "Frontal", "1.0"),
            ("patient00005/study1/view1_frontal.jpg", "Frontal", ""),
            ("patient00006/study1/view1_frontal.jpg", "Frontal", ""),
            ("patient00007/study1/view1_frontal.jpg", "Frontal", "1.0"),
            ("patient00008/study1/view1_frontal.jpg", "Frontal", ""),  # a study whose images disagree
            ("patient00008/study1/view2_lateral.jpg", "Lateral", "1.0")]
    lines = [",".join(CHEXPERT_HEADER)]
    for p, view, lab in rows:
        vals = {"Path": f"CheXpert-v1.0-small/train/{p}", "Frontal/Lateral": view, "Pneumonia": lab}
        cells = [vals.get(c, "") for c in CHEXPERT_HEADER]
        if quote:  # forces the pandas path instead of the plain-text fast path
            cells[0] = f'"{cells[0]}"'
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("unit,uncertain,views,pool,stages", [
    ("study", "ignore", "all", (4, 4), {"uncertain dropped": (2, 2), "other images of kept studies": (4, None)}),
    ("study", "zeros", "all", (4, 6), {"uncertain dropped": (0, 0), "rows read": (14, 10)}),
    ("study", "ones", "all", (6, 4), {"uncertain dropped": (0, 0)}),
    ("image", "ignore", "all", (6, 6), {"uncertain dropped": (2, None)}),
    ("study", "ignore", "lateral", (3, 1), {"views dropped": (8, 4)}),
    ("image", "ones", "frontal", (4, 5), {"views dropped": (5, None)}),
])
def test_label_policy_exact(tmp_path: Path, unit, uncertain, views, pool, stages) -> None:
    from egan_med.cohort.sources import read_source
    csv = tmp_path / "CheXpert-v1.0-small" / "train.csv"
    csv.parent.mkdir()
    _synthetic_chexpert(csv)
    t = read_source(CohortOptions(input=str(csv), unit=unit, uncertain=uncertain, views=views))
    assert (int(t.minority.sum()), int((t.minority == 0).sum())) == pool
    got = {s["stage"]: (s["images"], s["studies"]) for s in t.stages}
    assert {k: got[k] for k in stages} == stages
    label = dict(zip((p.split("train/")[1] for p in t.path), t.minority.tolist()))
    if unit == "study" and views == "all":  # the representative is the first frontal image; labels are per study
        assert "patient00004/study1/view2_frontal.jpg" in label and "patient00004/study1/view1_lateral.jpg" not in label
        assert label["patient00008/study1/view1_frontal.jpg"] == 1
    if unit == "image" and views == "all":
        assert label["patient00008/study1/view1_frontal.jpg"] == 0 and label["patient00008/study1/view2_lateral.jpg"]


def test_quoted_csv_matches_fast_path(tmp_path: Path) -> None:
    for name, quote in (("plain", False), ("quoted", True)):
        csv = tmp_path / name / "CheXpert-v1.0-small" / "train.csv"
        csv.parent.mkdir(parents=True)
        _synthetic_chexpert(csv, quote)
        build(CohortOptions(input=str(csv), **{f"{s}_{c}": 1 for s in ("train", "val", "test")
                                                for c in ("minority", "majority")}), str(tmp_path / name / "cohort"))
    plain, quoted = ((tmp_path / n / "cohort" / "cohort.csv").read_bytes() for n in ("plain", "quoted"))
    assert plain == quoted and plain.count(b"\n") == 7


def test_nih_ratio_patient_disjoint(tmp_path: Path) -> None:
    meta = build(CohortOptions(source="nih", input=str(NIH), ratio=36, test_minority=200, test_majority=200),
                 str(tmp_path / "n"))
    df, _ = load_manifest(str(tmp_path / "n" / "cohort.csv"))
    assert meta["counts"]["pool"] == {"minority": 1431, "majority": 110689}
    c = _counts(df)
    assert c["test"] == (200, 200) and c["train"][1] == 36 * c["train"][0]
    _assert_patient_disjoint(df)
    assert c["val"][0] >= 1 and sum(v[0] for v in c.values()) <= 1431


def test_folder_official_test_split_and_folds(tmp_path: Path) -> None:
    # the fixture: 40 airplane + 140 automobile train JPEGs, 48 + 48 official test JPEGs
    opts = CohortOptions(source="folder", input=str(CIFAR), minority="airplane", majority="automobile", folds=5,
                         train_minority=2, ratio=10, test_minority=30, test_majority=30)
    meta = build(opts, str(tmp_path / "f"))
    df, _ = load_manifest(str(tmp_path / "f" / "cohort.csv"))
    minority_train = df[(df.split == "train") & (df.minority == 1)]
    assert len(minority_train) == 10 and minority_train.path.is_unique
    assert minority_train.fold.value_counts().sort_index().tolist() == [2] * 5 == meta["counts"]["folds"]
    assert (df[(df.split != "train") | (df.minority == 0)].fold == -1).all()
    assert _counts(df)["train"] == (10, 20) and _counts(df)["test"] == (30, 30)  # ratio x one fold's minority
    assert df[df.split == "test"].path.str.startswith("test/").all()  # official test split kept
    assert df[df.split != "test"].path.str.startswith("train/").all()
    assert (df.minority == df.path.str.contains("/airplane/").astype(int)).all()


def _cifar_pickles(folder: Path, cifar100: bool = False) -> None:
    """torchvision's CIFAR pickle layout holding a few real airplane/automobile images per batch file (for
    CIFAR-100: fine labels 0/1, and coarse labels that put the first airplane and automobile of each file in "few")."""
    from PIL import Image
    folder.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = [("train", "train"), ("test", "test")] if cifar100 else \
        [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]
    for b, (split, batch) in enumerate(batches):
        files = [(c, CIFAR / split / names[c] / f"{b * 4 + j:04d}.jpg") for c in (0, 1) for j in range(2 + c)]
        data = np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1).ravel() for _, f in files])
        labels = {"fine_labels": [c for c, _ in files], "coarse_labels": [0, 1, 0, 1, 1]} if cifar100 \
            else {"labels": [c for c, _ in files]}
        with open(folder / batch, "wb") as fh:
            pickle.dump({"data": data, **labels}, fh)
    meta = {"fine_label_names": names, "coarse_label_names": ["few", "many"]} if cifar100 else {"label_names": names}
    with open(folder / ("meta" if cifar100 else "batches.meta"), "wb") as fh:
        pickle.dump(meta, fh)


def test_cifar_pickles_by_class_name(tmp_path: Path) -> None:
    _cifar_pickles(tmp_path / "cifar-10-batches-py")
    meta = build(CohortOptions(source="cifar", input=str(tmp_path / "cifar-10-batches-py"), minority="airplane",
                               majority="1", val_minority=1, val_majority=1), str(tmp_path / "c"))
    df, _ = load_manifest(str(tmp_path / "c" / "cohort.csv"))
    assert meta["counts"]["pool"] == {"minority": 12, "majority": 18}
    assert df[df.split == "test"].path.str.startswith("test_batch#").all() and _counts(df)["test"] == (2, 3)
    assert _counts(df)["train"] == (9, 14)
    _cifar_pickles(tmp_path / "cifar-100-python", cifar100=True)
    opts = dict(source="cifar", input=str(tmp_path / "cifar-100-python"), dataset="cifar100", minority="few",
                val_minority=1, val_majority=1)
    minority = {}
    for c in (False, True):
        build(CohortOptions(coarse=c, **opts) if c else CohortOptions(**{**opts, "minority": "airplane"}),
              str(tmp_path / f"c100_{c}"))
        df, _ = load_manifest(str(tmp_path / f"c100_{c}" / "cohort.csv"))
        minority[c] = set(df.path[df.minority == 1])
    assert minority[False] == {f"{f}#{i}" for f in ("train", "test") for i in (0, 1)}
    assert minority[True] == {f"{f}#{i}" for f in ("train", "test") for i in (0, 2)}


def test_generic_csv_with_dicom_patients_and_official_split(tmp_path: Path) -> None:
    covid = pd.read_csv(COVID)
    rows = pd.DataFrame({"path": [str(DATA / p) for p in covid.Path],  # absolute paths under the root
                         "label": np.where(covid.Pneumonia == 1, "pneumonia", "other"),
                         "patient": covid.Path.str.extract(r"(patient\d+)")[0]})
    dicoms = sorted((DATA / "cxr_samples" / "dicom").glob("*.dcm"))
    rows = pd.concat([rows, pd.DataFrame({"path": [str(p) for p in dicoms], "label": "other", "patient": "siim"})])
    rows.to_csv(tmp_path / "table.csv", index=False)
    meta = build(CohortOptions(source="generic", input=str(tmp_path / "table.csv"), minority="other",
                               root=str(DATA)), str(tmp_path / "g"))
    df, loaded = load_manifest(str(tmp_path / "g" / "cohort.csv"))
    assert meta["counts"]["pool"] == {"minority": 8, "majority": 18}  # 5 No Finding + ARDS + 2 DICOMs vs pneumonia
    assert not df.path.str.startswith("/").any() and all((Path(loaded["root"]) / p).is_file() for p in df.path)
    _assert_patient_disjoint(df)
    assert df[df.patient == "siim"].split.nunique() == 1
    # an official split column that puts one patient on both sides is refused, and nothing is written
    rows = rows.reset_index(drop=True).assign(split=np.where(rows.patient == "siim", "test", "train"))
    rows.loc[(rows.patient.duplicated(keep=False) & (rows.label == "pneumonia")).idxmax(), "split"] = "test"
    rows.to_csv(tmp_path / "leaky.csv", index=False)
    with pytest.raises(CohortError, match="leaking"):
        build(CohortOptions(source="generic", input=str(tmp_path / "leaky.csv"), minority="other", root=str(DATA)),
              str(tmp_path / "g2"))
    assert not (tmp_path / "g2").exists()


def test_paths_that_need_csv_quoting_round_trip(tmp_path: Path) -> None:
    pngs = sorted((DATA / "cxr_samples" / "nih").glob("*.png"))
    names = ['a,1.png', 'b "2".png', "c3.png", "d,4.png", "e5.png", "f6.png", "g,7.png"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(pngs[i % 2].read_bytes())
    labels = ["x", "x", "x", "y", "y", "y", "z"]
    pd.DataFrame({"path": names, "label": labels}).to_csv(tmp_path / "table.csv", index=False)
    build(CohortOptions(source="generic", input=str(tmp_path / "table.csv"), minority="x", majority="y",
                        **{f"{s}_{c}": 1 for s in ("val", "test") for c in ("minority", "majority")}),
          str(tmp_path / "c"))
    df, meta = load_manifest(str(tmp_path / "c" / "cohort.csv"))
    assert sorted(df.path) == sorted(names[:6]) and all((Path(meta["root"]) / p).is_file() for p in df.path)
    assert dict(zip(df.path, df.minority)) == {n: int(lab == "x") for n, lab in zip(names[:6], labels)}
    assert pd.read_csv(tmp_path / "c" / "excluded.csv").values.tolist() == [["g,7.png", "other_class"]]


def test_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    opts = dict(input=str(COVID), label="No Finding")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build(CohortOptions(seed=seed, **opts), str(tmp_path / name / "cohort"))
    read = lambda n, f: (tmp_path / n / "cohort" / f).read_bytes()  # noqa: E731
    for f in ("cohort.csv", "cohort.json", "excluded.csv"):
        assert read("a", f) == read("b", f)
    assert read("a", "cohort.csv") != read("c", "cohort.csv")


def test_committed_demo_cohort_rebuilds_byte_identical(tmp_path: Path) -> None:
    readme = (REPO / "cohorts" / "pneumoniamnist_1to36" / "README.md").read_text()
    cmd = next(line.strip() for line in readme.splitlines() if line.strip().startswith("python scripts/build_cohort"))
    (tmp_path / "egan_med").symlink_to(REPO / "egan_med")  # same relative layout, so root/input match too
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    args = shlex.split(cmd)[1:]
    subprocess.run([sys.executable, *args], cwd=tmp_path, check=True, capture_output=True)
    out = tmp_path / "cohorts" / "pneumoniamnist_1to36"
    for f in ("cohort.csv", "cohort.json", "excluded.csv"):
        assert (out / f).read_bytes() == (REPO / "cohorts" / "pneumoniamnist_1to36" / f).read_bytes(), f
    df, meta = load_manifest(str(REPO / "cohorts" / "pneumoniamnist_1to36" / "cohort.csv"))
    assert _counts(df) == {"train": (33, 1214), "val": (389, 135), "test": (390, 234)}
    assert meta["root"] == str(REPO / "egan_med" / "bundled")


def test_load_manifest_rejects_broken_cohorts(tmp_path: Path) -> None:
    build(CohortOptions(input=str(COVID), label="No Finding"), str(tmp_path / "c"))
    csv = tmp_path / "c" / "cohort.csv"
    df, meta = load_manifest(str(csv), root_override=str(tmp_path))
    assert meta["root"] == str(tmp_path)
    text = csv.read_text()
    csv.write_text(text.replace(",train,", ",training,", 1))
    with pytest.raises(CohortError, match="malformed"):
        load_manifest(str(csv))
    csv.write_text(text.replace("path,minority", "file,minority"))
    with pytest.raises(CohortError, match="columns"):
        load_manifest(str(csv))
    csv.write_text("\n".join(text.splitlines()[:-1]) + "\n")  # a row gone: counts no longer match the json
    with pytest.raises(CohortError, match="differ"):
        load_manifest(str(csv))
    (tmp_path / "c" / "cohort.json").unlink()
    with pytest.raises(CohortError, match="missing cohort file"):
        load_manifest(str(csv))


def test_leak_check_and_atomic_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blank = np.array(["", ""], dtype=object)
    with pytest.raises(CohortError, match="patient"):
        check_no_leak(np.array([0, 1, 2]), np.array(["a", "b", "a"], dtype=object), np.array(["", "", ""], object))
    with pytest.raises(CohortError, match="study"):  # same study id and no patient: one group
        check_no_leak(np.array([0, 2]), blank, np.array(["s1", "s1"], dtype=object))
    check_no_leak(np.array([0, 2]), np.array(["a", "b"], dtype=object), np.array(["s1", "s1"], dtype=object))
    out = tmp_path / "c"
    build(CohortOptions(input=str(COVID), label="No Finding"), str(out))
    before = (out / "cohort.csv").read_bytes()
    with pytest.raises(CohortError, match="exists"):
        build(CohortOptions(input=str(COVID), label="No Finding", seed=1), str(out))
    import egan_med.cohort.builder as cohort
    real_replace, listing = os.replace, sorted(os.listdir(out))

    def failing_replace(src: str, dst: str) -> None:  # the new cohort.json cannot take the old one's place
        moving_old = os.path.basename(os.path.dirname(src)) == "old"  # putting the previous file back works
        if os.path.basename(dst) == "cohort.json" and os.path.dirname(dst) == str(out) and not moving_old:
            raise OSError("simulated failure")
        real_replace(src, dst)
    monkeypatch.setattr(cohort.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):  # after the new cohort.csv went in: it is rolled back
        build(CohortOptions(input=str(COVID), label="No Finding", seed=1), str(out), overwrite=True)
    assert (out / "cohort.csv").read_bytes() == before and sorted(os.listdir(tmp_path)) == ["c"]
    assert sorted(os.listdir(out)) == listing
    monkeypatch.setattr(cohort.os, "replace", real_replace)
    build(CohortOptions(input=str(COVID), label="No Finding", seed=1), str(out), overwrite=True)
    assert (out / "cohort.csv").read_bytes() != before


@pytest.mark.skipif(not os.environ.get("EGAN_CHEXPERT_CSV"), reason="set EGAN_CHEXPERT_CSV to the real train.csv(.gz)")
def test_real_chexpert_counts(tmp_path: Path) -> None:
    meta = build(CohortOptions(input=os.environ["EGAN_CHEXPERT_CSV"]), str(tmp_path / "c"))
    assert meta["counts"]["pool"] == {"minority": 4576, "majority": 167407}
