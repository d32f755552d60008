"""Invariants that guard what matters (issue 26): each test here failed on a planted bug of that issue.

The report-row checks iterate over every row of report.json / report.csv (and the protocol rows) that has
stored scores, so a new detector is covered as soon as its run writes its scores where the others do
(``epoch_scores/epoch_NNN.npz`` for trained detectors, ``oneclass/<kind>.npz`` for one-class ones).
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sklearn.metrics import roc_auc_score

from egan_med.config import KIND_LABELS
from egan_med.data import load_image
from egan_med.evaluation import budget as bud
from egan_med.evaluation import metrics
from egan_med.train import main as train_main

from conftest import build_tiny_cohort

# ---------------------------------------------------------------------------------------------------------
# One tiny run with every detector (eGAN, supervised baseline, kNN, patch memory, fusion), shared by the
# report invariants below (~15 s on 2 CPU cores).


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("invariants")
    cohort = build_tiny_cohort(root / "cohort", train=(4, 16), val=(10, 10), test=(8, 8))
    out = root / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=2", "train.batch_size=8",
                       "train.max_steps_per_epoch=1", "eval.baseline=true", "eval.knn=true", "eval.patchcore=true",
                       "eval.bootstrap=20", "eval.val_minority_budget=3", "--out", str(out), "--threads", "1"]) == 0
    return out


def _stored_scores(run: Path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Detector label -> epoch -> {y_val, s_val, y_test, s_test}, from every score file the run kept.

    Trained detectors: ``<dir>/epoch_scores/epoch_NNN.npz`` in the run and in any nested run (the baseline),
    labelled by that folder's model.kind. One-class detectors: ``oneclass/<kind>.npz`` (epoch 0).
    """
    import yaml

    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for folder in sorted({p.parent.parent for p in run.rglob("epoch_scores/epoch_*.npz")}):
        kind = yaml.safe_load((folder / "config.yaml").read_text())["model"]["kind"]
        for f in sorted((folder / "epoch_scores").glob("epoch_*.npz")):
            with np.load(f) as d:
                out.setdefault(KIND_LABELS[kind], {})[int(f.stem[6:])] = {k: d[k] for k in d.files}
    for f in sorted((run / "oneclass").glob("*.npz")):
        with np.load(f) as d:
            out.setdefault(KIND_LABELS[f.stem], {})[0] = {k: d[k] for k in d.files}
    return out


def _report_rows(run: Path) -> list[tuple[str, dict]]:
    """(where, row) for every row of report.json (rows and protocol_rows) and of report.csv."""
    rep = json.loads((run / "report.json").read_text())
    rows = [("report.json rows", r) for r in rep["rows"]]
    rows += [("report.json protocol_rows", r) for r in rep.get("protocol_rows", [])]
    csv = pd.read_csv(run / "report.csv").to_dict("records")
    rows += [("report.csv", {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
             for r in csv]
    return rows


def _source_label(row: dict) -> str:
    return str(row["model"]).split(",")[0]  # "eGAN, optimistic (paper protocol)" is eGAN's scores too


def _confusion(y: np.ndarray, s: np.ndarray, thr: float) -> tuple[int, int, int, int]:
    pred = s > thr
    return (int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 0)).sum()),
            int((~pred & (y == 1)).sum()))


def test_every_report_row_matches_the_auroc_and_confusion_of_its_stored_scores(full_run):
    """Every single-model row (tp present) of a detector with stored scores: AUROC = roc_auc_score(y, s) with
    the minority (y = 1) as positive class and s the stored minority score, and tp/fp/tn/fn = s > threshold.
    Rows with an ``epoch`` are checked against that epoch; rows without one against some stored epoch."""
    stored = _stored_scores(full_run)
    assert {"eGAN", "supervised baseline", "kNN one-class", "patch memory"} <= set(stored)
    checked: dict[str, set[str]] = {}
    for where, row in _report_rows(full_run):
        label = _source_label(row)
        if label not in stored or row.get("tp") is None:  # fusion (no stored scores), per-metric maxima, trivial
            continue
        epochs = stored[label]
        if row.get("epoch") is not None and int(row["epoch"]) >= 0:
            candidates = {int(row["epoch"]): epochs[int(row["epoch"])]}
        else:
            candidates = epochs
        thr = float(row["threshold"])
        want = (row["tp"], row["fp"], row["tn"], row["fn"])
        matches = [e for e, d in candidates.items()
                   if roc_auc_score(d["y_test"], d["s_test"]) == pytest.approx(row["auroc"], abs=1e-9)
                   and _confusion(d["y_test"], d["s_test"], thr) == want]
        found = {e: (roc_auc_score(d["y_test"], d["s_test"]), _confusion(d["y_test"], d["s_test"], thr))
                 for e, d in candidates.items()}
        assert matches, f"{where}: row {row['model']!r} auroc {row['auroc']} confusion {want}; stored: {found}"
        checked.setdefault(label, set()).add(where)
    # Not vacuous: every detector with stored scores was checked in the table and in the protocol rows.
    for label in stored:
        assert "report.json protocol_rows" in checked.get(label, set()), label
        assert "report.csv" in checked.get(label, set()) or label == "patch memory", label
    assert {"report.json rows", "report.csv"} <= checked["eGAN"]


def test_report_csv_rows_equal_report_json_rows(full_run):
    rep = json.loads((full_run / "report.json").read_text())["rows"]
    csv = pd.read_csv(full_run / "report.csv")
    assert list(csv["model"]) == [r["model"] for r in rep]
    for name in metrics.METRIC_NAMES:
        want = np.array([np.nan if r[name] is None else r[name] for r in rep], float)
        np.testing.assert_allclose(csv[name].to_numpy(float), want, rtol=1e-12, equal_nan=True, err_msg=name)


def test_metrics_csv_equals_a_recomputation_from_epoch_scores(full_run):
    """Each metrics.csv (the run's and any nested run's) row by row: every registry metric and count on val and
    test equals the metric recomputed from that epoch's stored scores at the paper's rule (s > 0 is minority);
    AUROC also by scikit-learn directly, minority positive."""
    files = sorted(full_run.rglob("metrics.csv"))
    assert len(files) >= 2  # eGAN and the supervised baseline
    for path in files:
        history = pd.read_csv(path)
        assert len(history) >= 2
        for _, row in history.iterrows():
            with np.load(path.parent / "epoch_scores" / f"epoch_{int(row.epoch):03d}.npz") as d:
                for split in ("val", "test"):
                    y, s = d[f"y_{split}"], d[f"s_{split}"]
                    assert row[f"{split}_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9), (path, split)
                    tp, fp, tn, fn = _confusion(y, s, 0.0)
                    assert (row[f"{split}_correct_minority"], row[f"{split}_correct_majority"]) == (tp, tn)
                    m = metrics.binary_metrics(y, s, 0.0)
                    for name in metrics.METRIC_NAMES:
                        assert row[f"{split}_{name}"] == pytest.approx(m[name], abs=1e-9, nan_ok=True), (path, name)


def test_every_report_interval_has_width_where_its_metric_can_move(full_run):
    """Recall and specificity strictly between 0 and 1 cannot have a zero-width bootstrap interval when both
    classes are resampled (a class held fixed gives its rate an interval of zero width)."""
    seen = 0
    for where, row in _report_rows(full_run):
        for name in ("recall", "specificity"):
            lo, hi, point = row.get(f"{name}_lo"), row.get(f"{name}_hi"), row.get(name)
            if lo is None or hi is None or point is None or not 0 < point < 1:
                continue
            assert lo <= point <= hi and lo < hi, (where, row["model"], name, lo, point, hi)
            seen += 1
    assert seen >= 4


# ---------------------------------------------------------------------------------------------------------
# Bootstrap: both classes are resampled.


def test_bootstrap_resamples_both_classes():
    rng = np.random.default_rng(0)
    spread_min, spread_maj = rng.normal(1.0, 1.0, 40), rng.normal(-1.0, 1.0, 60)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    # Majority varied around the threshold, minority all above it: only the majority can move specificity.
    ci = metrics.bootstrap_ci(y, np.r_[np.full(40, 5.0), spread_maj + 0.5], 0.0, n=300, seed=1)
    assert ci["recall"] == (1.0, 1.0)
    assert ci["specificity"][1] - ci["specificity"][0] > 0.05
    # Minority varied, majority all below: only the minority can move recall.
    ci = metrics.bootstrap_ci(y, np.r_[spread_min - 0.5, np.full(60, -5.0)], 0.0, n=300, seed=1)
    assert ci["specificity"] == (1.0, 1.0)
    assert ci["recall"][1] - ci["recall"][0] > 0.05
    # Both varied: every metric whose point is strictly inside (0, 1) has an interval of positive width.
    s = np.r_[spread_min, spread_maj]
    point, ci = metrics.binary_metrics(y, s, 0.0), metrics.bootstrap_ci(y, s, 0.0, n=300, seed=1)
    for name in metrics.METRIC_NAMES:
        if 0 < point[name] < 1:
            assert ci[name][0] <= point[name] <= ci[name][1] and ci[name][0] < ci[name][1], name


# ---------------------------------------------------------------------------------------------------------
# Fusion ranks test scores against validation, never against the test set itself.


def test_fusion_ranks_each_test_image_against_validation_only():
    rng = np.random.default_rng(3)
    comps = {k: (rng.normal(size=30), rng.normal(size=25)) for k in ("a", "b", "c")}
    fused_val, fused_test = bud.fuse(comps)
    # Inductive: an image's fused score does not depend on which other test images are scored with it.
    for i in range(25):
        alone = bud.fuse({k: (v, t[i:i + 1]) for k, (v, t) in comps.items()})[1]
        assert alone[0] == pytest.approx(fused_test[i], abs=1e-12), i
    shifted = bud.fuse({k: (v, np.r_[t[:1], t[1:] + 100.0]) for k, (v, t) in comps.items()})[1]
    assert shifted[0] == pytest.approx(fused_test[0], abs=1e-12)
    # The reference is validation: a test image with a validation image's component scores gets its fused score.
    same = bud.fuse({k: (v, v.copy()) for k, (v, _) in comps.items()})
    np.testing.assert_allclose(same[1], same[0], atol=1e-12)
    np.testing.assert_allclose(same[0], fused_val, atol=1e-12)
    # Weighted fusion too.
    w = {"a": 0.5, "b": 0.0, "c": 2.0}
    wt = bud.fuse(comps, w)[1]
    alone = [bud.fuse({k: (v, t[i:i + 1]) for k, (v, t) in comps.items()}, w)[1][0] for i in range(25)]
    np.testing.assert_allclose(alone, wt, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# The export refuses a network that disagrees with PyTorch.


class _Tiny(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).flatten()


def _export_files(net: torch.nn.Module, folder: Path, tag: str) -> tuple[str, str]:
    x = torch.rand(2, 1, 4, 4)
    ts, onnx = str(folder / f"{tag}.ts.pt"), str(folder / f"{tag}.onnx")
    with torch.no_grad():
        torch.jit.trace(net, x).save(ts)
        torch.onnx.export(net, (x,), onnx, input_names=["image"], output_names=["logit"],
                          dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}}, dynamo=False)
    return ts, onnx


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_export_self_check_refuses_a_network_that_disagrees(tmp_path):
    from egan_med import export

    pytest.importorskip("onnxruntime")  # an export extra, installed by make setup
    good, other = _Tiny(0).eval(), _Tiny(1).eval()
    ts_good, onnx_good = _export_files(good, tmp_path, "good")
    ts_other, onnx_other = _export_files(other, tmp_path, "other")
    x = torch.rand(5, 1, 4, 4)
    ok = export._self_check(good, ts_good, onnx_good, x)  # control: the same network passes
    assert ok["torchscript_max_abs_diff"] <= export.TOLERANCE and ok["onnx_max_abs_diff"] <= export.TOLERANCE
    with pytest.raises(export.ExportError, match="disagrees"):
        export._self_check(good, ts_other, onnx_good, x)  # TorchScript file of another network
    with pytest.raises(export.ExportError, match="disagrees"):
        export._self_check(good, ts_good, onnx_other, x)  # ONNX file of another network


# ---------------------------------------------------------------------------------------------------------
# CheXpert: a study's label is the maximum over its images, in any order.

_CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Pneumonia"]
_LEVEL = {"ignore": {"1.0": 2, "-1.0": 1, "0.0": 0, "": 0}, "zeros": {"1.0": 2, "-1.0": 0, "0.0": 0, "": 0},
          "ones": {"1.0": 2, "-1.0": 2, "0.0": 0, "": 0}}


@pytest.mark.parametrize("policy", ["ignore", "zeros", "ones"])
def test_chexpert_study_label_is_the_maximum_over_its_images_in_any_order(tmp_path, policy):
    from egan_med.cohort import CohortOptions
    from egan_med.cohort.sources import read_source

    values = ("1.0", "0.0", "-1.0", "")
    studies = [seq for n in (1, 2, 3) for seq in itertools.product(values, repeat=n)]
    csv = tmp_path / "CheXpert-v1.0-small" / "train.csv"
    csv.parent.mkdir()
    lines = [",".join(_CHEXPERT_HEADER)]
    for i, seq in enumerate(studies):
        for j, lab in enumerate(seq):
            path = f"CheXpert-v1.0-small/train/patient{i + 1:05d}/study1/view{j + 1}_frontal.jpg"
            lines.append(",".join([path, "Female", "50", "Frontal", "AP", "", lab]))
    csv.write_text("\n".join(lines) + "\n")
    t = read_source(CohortOptions(input=str(csv), uncertain=policy))
    got = {int(p.split("/patient")[1][:5]) - 1: int(m) for p, m in zip(t.path, t.minority)}
    assert len(t.path) == len(got)  # one image per study
    for i, seq in enumerate(studies):
        level = max(_LEVEL[policy][v] for v in seq)
        if level == 1:
            assert i not in got, (seq, "an uncertain study is dropped under 'ignore'")
        else:
            assert got.get(i) == (level == 2), (policy, seq)
    # the image unit keeps each image's own label (no aggregation)
    t = read_source(CohortOptions(input=str(csv), uncertain=policy, unit="image"))
    for p, m in zip(t.path, t.minority):
        i, j = int(p.split("/patient")[1][:5]) - 1, int(p.split("/view")[1].split("_")[0]) - 1
        assert int(m) == (_LEVEL[policy][studies[i][j]] == 2), (p, studies[i])


# ---------------------------------------------------------------------------------------------------------
# DICOM: known pixel values through the display pipeline.


def _dicom(path: Path, stored: np.ndarray, bits: int, photometric: str = "MONOCHROME2", **tags) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    ds.set_pixel_data(stored, photometric, bits)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("bits", [8, 12])
def test_dicom_monochrome1_is_inverted_against_known_pixel_values(tmp_path, bits):
    top = 2**bits - 1
    stored = np.array([[0, top, top // 4], [top // 2, 1, top - 1]], dtype=np.uint8 if bits == 8 else np.uint16)
    mono1 = load_image(_dicom(tmp_path / "m1.dcm", stored, bits, "MONOCHROME1"))[0]
    mono2 = load_image(_dicom(tmp_path / "m2.dcm", stored, bits, "MONOCHROME2"))[0]
    # MONOCHROME1: the lowest stored value is white. MONOCHROME2: the lowest stored value is black.
    assert mono1[0, 0] == 1.0 and mono1[0, 1] == 0.0 and mono2[0, 0] == 0.0 and mono2[0, 1] == 1.0
    np.testing.assert_allclose(mono1, 1.0 - stored / top, atol=1e-6)
    np.testing.assert_allclose(mono2, stored / top, atol=1e-6)


def test_dicom_voi_lut_with_its_own_output_range_spans_unit_range(tmp_path):
    """A 12-bit image through a 10-bit VOI LUT (LUT Descriptor bits = 10): the LUT's 0..1023 output is the range.

    (Not an 8-bit LUT: pydicom 3.0.2's apply_voi indexes an 8-bit LUT with uint8 indices, so a LUT of more than
    256 entries wraps; that is pydicom's, outside this reader.)"""
    stored = (np.arange(32 * 48).reshape(32, 48) * 3 % 4096).astype(np.uint16)
    stored[0, 0], stored[0, 1] = 0, 4095
    table = np.round(1023 * (np.arange(4096) / 4095) ** 0.5).astype(int)  # a non-linear 12 -> 10 bit LUT
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 10])  # entries, first mapped value, bits of each output value
    lut.add_new(0x00283006, "US", table.tolist())
    img = load_image(_dicom(tmp_path / "l10.dcm", stored, 12, VOILUTSequence=[lut]))[0]
    assert img.min() == 0.0 and img.max() == 1.0
    np.testing.assert_allclose(img, table[stored] / 1023.0, atol=1e-6)
