"""Small training defects (issue 14, item 6): minority_cap's subset, instance noise on both sides, noise_std."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egan_med.config import DataConfig
from egan_med.data import datasets
from egan_med.data.samplers import minority_subset
from egan_med.data.transforms import build_augment
from egan_med.models import egan
from egan_med.train import main as train_main
from conftest import build_tiny_cohort

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"


def test_minority_subset_is_seeded_and_random():
    a = minority_subset(100, 10, seed=3)
    assert a == minority_subset(100, 10, seed=3) and a != minority_subset(100, 10, seed=4)
    assert len(set(a)) == 10 and a == sorted(a) and a != list(range(10)) and max(a) > 20
    assert minority_subset(7, 10, seed=3) == list(range(7))  # under the cap: all of them


def test_noise_std_is_the_std():
    cfg = DataConfig(image_size=64, channels=1, rotate_deg=0, scale=0, translate=0, contrast=0, gamma=0,
                     noise_std=0.05)
    aug = build_augment(cfg, train=True)
    flat = torch.full((1, 64, 64), 0.5)
    stds = [float((aug(flat, seed) - 0.5).std()) for seed in range(40)]
    noisy = [s for s in stds if s > 0]
    assert 8 <= len(noisy) <= 32  # applied to about half
    for s in noisy:  # MONAI's default drew the std from U(0, 0.05)
        assert abs(s - 0.05) < 0.004, stds


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", train=(10, 16), val=(6, 6),
                             test=(6, 6))


def test_training_draws_capped_minority_at_random_and_noises_both_sides(cohort, tmp_path, monkeypatch):
    seen_rows: list[int] = []
    get = datasets.CohortDataset.__getitem__

    def spy_get(self, i):
        if len(self) == 10:  # the minority training set (val and test hold 12)
            seen_rows.append(int(i))
        return get(self, i)

    d_inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = egan.ScorePair.forward

    def spy_forward(self, real, negatives, real_from_trunk=False):
        d_inputs.append((real.detach().clone(), negatives.detach().clone()))
        return forward(self, real, negatives, real_from_trunk)

    monkeypatch.setattr(datasets.CohortDataset, "__getitem__", spy_get)
    monkeypatch.setattr(egan.ScorePair, "forward", spy_forward)
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=1", "train.batch_size=8",
                       "train.max_steps_per_epoch=1", "train.minority_cap=4", "train.instance_noise=0.05",
                       "train.seed=5", "eval.bootstrap=20", "eval.baseline=false", "eval.knn=false",
                       "data.augment=false", "--out", str(tmp_path / "run")]) == 0
    real, _ = d_inputs[0]
    # Without noise real pixels are cached uint8 levels; with it, they are not.
    off_grid = (real.float() * 255 - torch.round(real.float() * 255)).abs()
    assert float(off_grid.max()) > 0.1
    assert sorted(set(seen_rows)) == minority_subset(10, 4, 5) != [0, 1, 2, 3]


def test_instance_noise_refuses_the_feature_cache():
    from egan_med.config import ConfigError, load_config

    # The cache holds trunk activations of clean real images: there is nothing to add pixel noise to.
    with pytest.raises(ConfigError, match="train.instance_noise"):
        load_config("configs/demo.yaml", ["data.augment=false", "train.feature_cache=true", "train.instance_noise=0.1"])


def test_knn_neighbours_are_the_cosine_nearest_and_k1_ranks_by_cosine():
    import numpy as np

    import torch

    from egan_med.models.knn import KNNOneClass

    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    major, query = unit(rng.normal(size=(60, 8))), unit(rng.normal(size=(25, 8)))
    for k in (1, 5):
        knn = KNNOneClass("efficientnet_lite0", "none", k=k, load=False)
        knn.embed = lambda x: x  # no backbone: the features are given
        knn.bank = torch.as_tensor(major, dtype=torch.float32)
        with torch.no_grad():
            score = knn(torch.as_tensor(query, dtype=torch.float32)).numpy()
        cos_dist = 1 - query @ major.T
        nearest = np.sort(cos_dist, axis=1)[:, :k]
        np.testing.assert_allclose(score, np.sqrt(2 * nearest).mean(1), atol=1e-6)  # what the docstring says
        if k == 1:
            assert (np.argsort(score) == np.argsort(nearest[:, 0])).all()


def test_folded_cohort_without_data_fold_is_refused(tmp_path):
    from egan_med.config import ConfigError, load_config
    from egan_med.cohort.splits import load_splits

    out = tmp_path / "folded"
    cmd = [sys.executable, str(REPO / "scripts" / "build_cohort.py"), "--medmnist", str(NPZ), "--minority", "1",
           "--train-minority", "2", "--train-majority", "16", "--val-minority", "4", "--val-majority", "4",
           "--test-minority", "4", "--test-majority", "4", "--folds", "3", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    cohort = f"data.cohort={out / 'cohort.csv'}"
    with pytest.raises(ConfigError, match=r"3 minority folds; set data.fold to one of \[0, 1, 2\].*1:3,"):
        load_splits(load_config("configs/demo.yaml", [cohort]))
    assert len(load_splits(load_config("configs/demo.yaml", [cohort, "data.fold=1"])).train_minority) == 2
    assert train_main(["configs/demo.yaml", cohort, "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "r"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=3", "train.batch_size=8",
                       "train.max_steps_per_epoch=1", "eval.bootstrap=20", "eval.baseline=false", "eval.knn=false",
                       "data.augment=false", "--out", str(out)]) == 0
    return out


def test_report_has_the_papers_per_metric_maxima_beside_the_one_epoch_row(finished_run):
    import json

    import pandas as pd

    history = pd.read_csv(finished_run / "metrics.csv")
    rows = {r["model"]: r for r in json.loads((finished_run / "report.json").read_text())["rows"]}
    one = rows["eGAN, optimistic (paper protocol)"]
    assert "one model" in one["selection"]
    maxima = rows["eGAN, optimistic per-metric maxima (paper's table)"]
    for k in ("precision", "recall", "specificity", "f1", "auroc"):
        assert maxima[k] == pytest.approx(history[f"test_{k}"].max()), k
    assert maxima["tp"] is None  # no single confusion matrix
    best = history.loc[history.test_f1.idxmax()]
    assert one["recall"] == pytest.approx(best.test_recall) and one["precision"] == pytest.approx(best.test_precision)


def test_evaluate_on_val_says_so_and_labels_its_counts_val(finished_run, capsys):
    import json

    from egan_med.evaluate import main as evaluate_main

    assert evaluate_main([str(finished_run), "--split", "val"]) == 0
    assert "VALIDATION split" in capsys.readouterr().err
    (out,) = (finished_run / "evaluations").glob("val-*")
    md = (out / "report.md").read_text()
    assert "#val minor" in md and "#test minor" not in md and "operating point fitted on it" in md
    data = json.loads((out / "report.json").read_text())
    assert data["split"] == "val"
    assert all("val_minority" in r and "test_minority" not in r for r in data["rows"])
    assert data["rows"][0]["val_minority"] == 6  # the validation split's minority count
