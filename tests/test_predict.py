"""egan_med.predict on a tiny trained run: evaluation-identical scores, folders, CSVs, bad files, bad CLI input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from egan_med import predict
from egan_med.cohort import CohortOptions, build

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"
TINY = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=16", "eval.bootstrap=20",
        "eval.baseline=false", "eval.knn=false"]


def make_trained_run(base: Path) -> Path:
    """Train (once: later calls reuse it) a tiny eGAN run on real PneumoniaMNIST under ``base``."""
    run = base / "predict_run"
    if (run / "operating_point.json").is_file():
        return run
    from egan_med.train import main as train_main

    opts = CohortOptions(source="medmnist", input=str(NPZ), minority="1", train_minority=2, train_majority=32,
                         val_minority=12, val_majority=12, test_minority=12, test_majority=12)
    build(opts, str(base / "cohort"))
    assert train_main(["configs/demo.yaml", f"data.cohort={base / 'cohort' / 'cohort.csv'}", *TINY,
                       "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def scorer(trained_run) -> tuple:
    """(net, cfg, operating point) of the trained run, loaded once: rebuilding the networks takes seconds."""
    return predict.load_run(str(trained_run))


def _threshold(run: Path) -> float:
    return json.loads((run / "operating_point.json").read_text())["threshold"]


def test_manifest_scores_equal_the_reports_deployed_scores(trained_run, tmp_path):
    """predict on the test split reproduces the report's realistic-protocol row of the deployed detector."""
    cohort = yaml.safe_load((trained_run / "config.yaml").read_text())["data"]["cohort"]
    out = tmp_path / "test.csv"
    assert predict.main(["--run", str(trained_run), "--input", cohort, "--split", "test", "--out", str(out),
                         "--batch-size", "5"]) == 0
    got = pd.read_csv(out, keep_default_na=False)
    ref = np.load(trained_run / "deploy" / "scores_test.npz")
    assert list(got.columns) == ["path", "split", "minority", "score", "decision", "threshold", "error"]
    assert len(got) == len(ref["s"]) == 24 and (got["split"] == "test").all()
    np.testing.assert_array_equal(got["minority"], ref["y"])
    np.testing.assert_allclose(got["score"], ref["s"], atol=1e-5, rtol=0)
    op = json.loads((trained_run / "operating_point.json").read_text())
    thr = op["threshold"]
    assert np.allclose(got["threshold"], thr)
    np.testing.assert_array_equal(got["decision"], np.where(ref["s"] > thr, "minority", "majority"))
    assert (got["error"] == "").all()
    # ... and those are the report's deployed row: its threshold, and its confusion counts from these decisions
    report = json.loads((trained_run / "report.json").read_text())
    row = next(r for r in report["protocol_rows"] if r["model"] == op["detector"] and r["protocol"] == op["protocol"])
    assert op["protocol"] == "realistic" and row["threshold"] == thr
    pred = got["decision"] == "minority"
    assert row["tp"] == int((pred & (got["minority"] == 1)).sum()) and row["fp"] == int((pred & (got["minority"] == 0)).sum())


@pytest.fixture
def image_folder(tmp_path, data_root) -> Path:
    folder = tmp_path / "images"
    (folder / "sub" / "deeper").mkdir(parents=True)
    for png in sorted((data_root / "cxr_samples" / "nih").glob("*.png")):
        shutil.copy(png, folder / png.name)
    for dcm in sorted((data_root / "cxr_samples" / "dicom").glob("*.dcm")):
        shutil.copy(dcm, folder / "sub" / dcm.name)
    first_dcm = sorted((data_root / "cxr_samples" / "dicom").glob("*.dcm"))[0]
    shutil.copy(first_dcm, folder / "sub" / "deeper" / "NOSUFFIX")
    (folder / "sub" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_scores_readable_images_and_lists_the_rest(scorer, image_folder):
    net, cfg, op = scorer
    got = predict.predict(net, cfg, op["threshold"], predict.list_inputs(str(image_folder)), batch_size=4,
                          progress=False)
    assert list(got.columns) == ["path", "score", "decision", "threshold", "error"]
    names = [Path(p).name for p in got["path"]]
    assert len(got) == 7 and "notes.txt" not in names and "NOSUFFIX" in names
    bad = got[got["error"] != ""]
    assert sorted(Path(p).name for p in bad["path"]) == ["broken.jpg", "empty.png"]
    assert (bad["decision"] == "").all() and bad["score"].isna().all()
    assert "0 bytes" in bad[bad["path"].str.endswith("empty.png")]["error"].iloc[0]
    good = got[got["error"] == ""]
    assert len(good) == 5 and set(good["decision"]) <= {"minority", "majority"}
    assert np.isfinite(good["score"]).all()
    # the suffix-less copy of a DICOM scores like the original
    dcm = sorted((image_folder / "sub").glob("*.dcm"))[0]
    assert good.set_index("path").loc[str(image_folder / "sub" / "deeper" / "NOSUFFIX"), "score"] == \
        pytest.approx(good.set_index("path").loc[str(dcm), "score"], abs=1e-5)


def test_chexpert_csv_paths_from_grandparent_or_root(scorer, data_root, tmp_path):
    net, cfg, op = scorer
    jpgs = sorted((data_root / "cxr_covid_ccby" / "train").rglob("*.jpg"))[:2]
    (tmp_path / "CheXpert-small" / "train" / "p1").mkdir(parents=True)
    shutil.copy(jpgs[0], tmp_path / "CheXpert-small" / "train" / "p1" / "view1_frontal.jpg")
    csv = tmp_path / "CheXpert-small" / "train.csv"
    pd.DataFrame({"Path": ["CheXpert-small/train/p1/view1_frontal.jpg", "CheXpert-small/train/p9/gone.jpg"],
                  "Pneumonia": ["1.0", ""]}).to_csv(csv, index=False)
    got = predict.predict(net, cfg, op["threshold"], predict.list_inputs(str(csv)), progress=False)
    assert got["path"].tolist() == ["CheXpert-small/train/p1/view1_frontal.jpg", "CheXpert-small/train/p9/gone.jpg"]
    assert got["error"].iloc[0] == "" and got["decision"].iloc[0] in ("minority", "majority")
    assert got["error"].iloc[1] == "file not found" and got["decision"].iloc[1] == ""

    rel = [str(p.relative_to(data_root)) for p in jpgs]
    other = tmp_path / "elsewhere" / "list.csv"
    other.parent.mkdir()
    pd.DataFrame({"Path": rel}).to_csv(other, index=False)
    got2 = predict.predict(net, cfg, op["threshold"], predict.list_inputs(str(other), root=str(data_root)),
                           progress=False)
    assert (got2["error"] == "").all() and len(got2) == 2
    assert got2["score"].iloc[0] == pytest.approx(got["score"].iloc[0], abs=1e-5)  # same file, same score


def _bad_runs(trained_run: Path, tmp: Path) -> dict[str, Path]:
    no_ckpt, no_op = tmp / "no_ckpt", tmp / "no_op"
    no_ckpt.mkdir()
    shutil.copy(trained_run / "operating_point.json", no_ckpt)
    shutil.copy(trained_run / "config.yaml", no_ckpt)
    no_op.mkdir()
    (no_op / "checkpoints").mkdir()
    return {"no_ckpt": no_ckpt, "no_op": no_op}


@pytest.mark.parametrize("case,message", [
    ("missing_run", "run directory not found"), ("missing_input", "input not found"),
    ("no_ckpt", "deploy/scorer.pt is missing"), ("no_op", "operating_point.json"),
    ("csv_without_path", "no 'Path' column"), ("split_on_folder", "--split only applies"),
    ("empty_folder", "no images found"), ("bad_batch", "--batch-size"),
])
def test_bad_cli_input_exits_2_and_writes_nothing(case, message, trained_run, tmp_path, capsys, data_root):
    runs = _bad_runs(trained_run, tmp_path)
    (tmp_path / "empty").mkdir()
    args = {"run": str(trained_run), "input": str(data_root / "cxr_samples" / "nih"), "extra": []}
    if case == "missing_run":
        args["run"] = str(tmp_path / "nope")
    elif case == "missing_input":
        args["input"] = str(tmp_path / "nope")
    elif case in runs:
        args["run"] = str(runs[case])
    elif case == "csv_without_path":
        args["input"] = str(data_root / "cxr_samples" / "nih" / "labels.csv")
    elif case == "split_on_folder":
        args["extra"] = ["--split", "test"]
    elif case == "empty_folder":
        args["input"] = str(tmp_path / "empty")
    else:
        args["extra"] = ["--batch-size", "0"]
    out = tmp_path / "out.csv"
    rc = predict.main(["--run", args["run"], "--input", args["input"], "--out", str(out), *args["extra"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_output_is_replaced_atomically(trained_run, scorer, data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "load_run", lambda run: scorer)
    out = tmp_path / "new" / "scores.csv"  # a missing output folder is created
    assert predict.main(["--run", str(trained_run), "--input", str(data_root / "cxr_samples" / "nih"),
                         "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 2
    out.write_text("previous results\n")
    out.write_text("previous results\n")

    def crash(self, path, **kw):
        Path(path).write_text("half a ta")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    assert predict.main(["--run", str(trained_run), "--input", str(data_root / "cxr_samples" / "nih"),
                         "--out", str(out)]) == 2  # the command's error boundary: one line, status 2
    assert out.read_text() == "previous results\n"
