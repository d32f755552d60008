"""MONAI bundle export: MONAI's own runner scores real radiographs (PNG, JPEG, DICOM) as egan_med.predict does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from egan_med import export, predict
from test_predict import NPZ, make_trained_run

REPO = Path(__file__).resolve().parents[1]
# MONAI bundle specification (docs.monai.io mb_specification): mandatory metadata.json keys and tensor keys
# (optional_packages_version is required_packages_version since MONAI renamed it).
MANDATORY = ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
             "description", "authors", "copyright", "network_data_format")
TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def")


def _write_dicom(path: Path, pixels: np.ndarray) -> None:
    """An 8-bit MONOCHROME2 DICOM of a real radiograph."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "CR", "MONOCHROME2", 1
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Real PneumoniaMNIST test radiographs (CC BY 4.0), both classes, as PNG, JPEG and DICOM, one in a subfolder."""
    folder = tmp_path_factory.mktemp("bundle_images")
    with np.load(NPZ) as z:
        imgs, labels = z["test_images"], z["test_labels"][:, 0]
    pick = [*np.flatnonzero(labels == 0)[:3], *np.flatnonzero(labels == 1)[:3]]
    big = [np.asarray(Image.fromarray(imgs[i]).resize((96, 80), Image.BILINEAR)) for i in pick]  # non-square
    Image.fromarray(big[0]).save(folder / "a.png")
    Image.fromarray(big[1]).save(folder / "b.jpg", quality=90)
    (folder / "sub").mkdir()
    Image.fromarray(big[3]).save(folder / "sub" / "c.png")
    Image.fromarray(big[4]).save(folder / "d.jpeg", quality=90)
    _write_dicom(folder / "e.dcm", big[2])
    _write_dicom(folder / "sub" / "f.dcm", big[5])
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "egan_bundle"
    assert export.main(["--run", str(run_dir), "--bundle", str(out)]) == 0
    return out


def test_bundle_layout_and_metadata(bundle, run_dir):
    """MONAI's verify_metadata is not run: it downloads its JSON schema and needs jsonschema (not a dependency);
    the specification's mandatory keys are checked here instead."""
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "models/model.pt", "docs/README.md"):
        assert (bundle / rel).is_file(), rel
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert all(k in meta for k in MANDATORY)
    for side in ("inputs", "outputs"):
        for spec in meta["network_data_format"][side].values():
            assert all(k in spec for k in TENSOR_KEYS)
    op = json.loads((run_dir / "operating_point.json").read_text())
    ours = meta["egan_med"]
    assert ours["operating_point"]["threshold"] == op["threshold"] and ours["operating_point"]["chosen_on"] == "val"
    # make_trained_run's cohort: 2 + 32 train, 12 + 12 val
    assert ours["label_budget"] == {"train_minority": 2, "train_majority": 32, "val_minority": 12, "val_majority": 12}
    assert ours["validated_on"]["source"] == "medmnist" and ours["validated_on"]["minority"] == 12
    assert 0 <= ours["validated_on"]["metrics"]["auroc"] <= 1 and ours["validated_on"]["metrics_how"]
    assert ours["torchscript_max_abs_diff"] <= 1e-5 and ours["leakage_warning"] is None
    readme = (bundle / "docs" / "README.md").read_text()
    assert "python -m monai.bundle run" in readme and "# Model card: " in readme


def test_monai_verify_net_in_out(bundle):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu",
                      bundle_root=str(bundle))  # raises on a shape or dtype mismatch


@pytest.mark.slow
def test_monai_runner_scores_equal_predict_on_png_jpeg_dicom(bundle, run_dir, images, tmp_path):
    out = tmp_path / "bundle_scores.csv"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
           "--dataset_dir", str(images), "--output_file", str(out), "--batch_size", "4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref_csv = tmp_path / "predict.csv"
    assert predict.main(["--run", str(run_dir), "--input", str(images), "--out", str(ref_csv), "--device", "cpu"]) == 0
    got, ref = pd.read_csv(out, keep_default_na=False), pd.read_csv(ref_csv, keep_default_na=False)
    assert sorted(Path(p).suffix for p in got["path"]) == [".dcm", ".dcm", ".jpeg", ".jpg", ".png", ".png"]
    assert (ref["error"] == "").all()
    merged = got.merge(ref, on="path", suffixes=("", "_predict"))
    assert len(merged) == len(ref) == len(got) == 6
    # the run deploys the val-weighted fusion (eGAN's D and the patch memory): the bundle serves that, not D alone
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["egan_med"]["operating_point"]["detector"] == "fusion (val-weighted rank)"
    assert np.ptp(merged["score"]) > 1e-4  # distinct radiographs, distinct scores
    print(f"bundle vs predict on {len(merged)} radiographs: max |score diff| "
          f"{float(np.abs(merged['score'] - merged['score_predict']).max()):.3g}")
    np.testing.assert_allclose(merged["score"], merged["score_predict"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(merged["decision"], merged["decision_predict"])
    np.testing.assert_allclose(merged["threshold"], merged["threshold_predict"])


def test_bundle_into_existing_folder_is_one_line_error(run_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert export.main(["--run", str(run_dir), "--bundle", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bundle folder already exists") and "\n" not in err
    assert list((tmp_path / "taken").iterdir()) == []


def test_bundle_of_unevaluated_run_leaves_nothing(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.yaml",):
        (run / f).write_text((run_dir / f).read_text())
    assert export.main(["--run", str(run), "--bundle", str(tmp_path / "b")]) == 2
    assert "operating_point.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
