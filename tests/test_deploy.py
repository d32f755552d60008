"""What a run deploys is what its report's realistic protocol chose: every detector a saved scorer that predict runs.

One tiny run on real PneumoniaMNIST holds every detector (eGAN, the supervised baseline, kNN, patch memory) under a
realistic label budget (as many validation positives as training ones). Each detector, and both fusions, is
deployed in turn; predict on the test split must reproduce the report row's scores and decisions, the deployed
epochs must be the budgeted validation choice, and the threshold must be fitted on the kept validation images.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import build_tiny_cohort
from egan_med import predict
from egan_med.cohort.splits import load_splits
from egan_med.config import ConfigError, config_from_dict, load_config, read_yaml
from egan_med.deploy import finalize
from egan_med.deploy.assemble import trained_scorer
from egan_med.evaluation import budget as bud
from egan_med.evaluation import thresholds
from egan_med.evaluation.detectors import budget_section, epoch_detector
from egan_med.models.scorers import FusionScorer, load_scorer

EVERY = ["train.epochs=3", "train.max_steps_per_epoch=2", "train.batch_size=16", "eval.bootstrap=0",
         "eval.baseline=true", "eval.knn=true", "eval.patchcore=true", "model.patch_memory=400", "data.image_size=32"]
LABELS = {"egan": "eGAN", "supervised": "supervised baseline", "knn": "kNN one-class", "patchcore": "patch memory",
          "fusion_mean": "fusion (mean rank)", "fusion_weighted": "fusion (val-weighted rank)"}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    from egan_med.train import main as train_main

    base = tmp_path_factory.mktemp("deploy")
    cohort = build_tiny_cohort(base / "cohort", train=(3, 40), val=(14, 14), test=(14, 14))
    run = base / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", *EVERY, "--out", str(run)]) == 0
    return run


def _cfg(run: Path, **evals) -> object:
    doc = read_yaml(str(run / "config.yaml"))
    doc["eval"].update(evals)
    return config_from_dict(doc)


def _predict_test(run: Path, tmp: Path, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """predict on the test split; 256 is both predict's default batch size and evaluation's."""
    cohort = read_yaml(str(run / "config.yaml"))["data"]["cohort"]
    out = tmp / f"pred{batch_size}.csv"
    assert predict.main(["--run", str(run), "--input", cohort, "--split", "test", "--out", str(out),
                         "--batch-size", str(batch_size), "--device", "cpu"]) == 0
    import pandas as pd

    got = pd.read_csv(out, keep_default_na=False)
    return got["minority"].to_numpy(), got["score"].to_numpy(), (got["decision"] == "minority").to_numpy()


@pytest.mark.parametrize("deploy", list(LABELS))
def test_each_detector_deploys_the_budgeted_choice_and_predict_reproduces_its_row(full_run, tmp_path, deploy):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    cfg = _cfg(run, deploy=deploy)
    splits = load_splits(cfg)
    section = budget_section(cfg, str(run), splits, "cpu", spread_draws=0)
    stored = {r["model"]: r for r in section.rows if r["protocol"] == "realistic"}
    op = finalize.deploy(str(run), cfg, splits, section, torch.device("cpu"))
    label = LABELS[deploy]
    assert op["detector"] == label and op["protocol"] == "realistic"

    # The realistic mask, recomputed here from the labels alone: 3 training positives -> 3 validation positives.
    y_val = np.asarray(splits.val["minority"]).astype(int)
    seed = bud.resolve_budget_seed(cfg.eval.budget_seed, cfg.train.seed, cfg.data.fold)
    mask = bud.budget_mask(y_val, 3, seed)
    assert op["val_minority"] == 3 and op["val_majority"] == 14

    # Deployed epochs are the ones the budgeted validation images choose (not the generous best.pt's).
    for name, epoch in op["epochs"].items():
        det = section.detectors[name]
        i, _ = bud.select_row(det, y_val, mask)
        assert epoch == det.epochs[i], name

    # The threshold is fitted on the kept validation images only, with the deployed scorer's own scores.
    z = np.load(run / "deploy" / "scores_val.npz")
    np.testing.assert_array_equal(z["y"], y_val[mask])
    assert op["threshold"] == pytest.approx(thresholds.operating_threshold(op["rule"], z["y"], z["s"], op["target"]))

    # predict == the deployed row: scores, decisions, and the row's confusion counts.
    y, s, minority = _predict_test(run, tmp_path)
    ref = np.load(run / "deploy" / "scores_test.npz")
    np.testing.assert_array_equal(y, ref["y"])
    assert float(np.abs(s - ref["s"]).max()) <= 1e-5
    np.testing.assert_array_equal(minority, ref["s"] > op["threshold"])
    assert op["row"]["tp"] == int((minority & (y == 1)).sum()) and op["row"]["fp"] == int((minority & (y == 0)).sum())

    # Another batch size regroups the float32 sums (conv and matrix-product blocking): the last digits may move
    # (measured up to 4 ulps, 1.5e-5 at patch-memory scores near 40), nothing more.
    _, s7, minority7 = _predict_test(run, tmp_path, batch_size=7)
    scale = max(1.0, float(np.abs(ref["s"]).max()))
    assert float(np.abs(s7 - ref["s"]).max()) <= 1e-6 * scale
    near = np.abs(ref["s"] - op["threshold"]) <= 1e-6 * scale
    np.testing.assert_array_equal(minority7[~near], minority[~near])

    # ... and the same scores as the report's stored realistic row (per-epoch or one-class scores, or their fusion).
    if label in section.detectors:
        det = section.detectors[label]
        stored_s = det.test[section.choices[("realistic", label)]["row"]]
    else:
        comps = {k: (d.val[section.choices[("realistic", k)]["row"]], d.test[section.choices[("realistic", k)]["row"]])
                 for k, d in section.detectors.items()}
        stored_s = bud.fuse(comps, section.choices[("realistic", label)]["weights"], mask)[1]
    assert float(np.abs(s - stored_s).max()) <= 1e-5
    assert stored[label]["threshold"] == pytest.approx(op["threshold"], abs=1e-5)


def test_fusion_references_are_the_kept_validation_images_only(full_run):
    scorer, meta = load_scorer(str(full_run / "deploy" / "scorer.pt"))
    assert isinstance(scorer, FusionScorer) and meta["detector"] == "fusion (val-weighted rank)"
    op = json.loads((full_run / "operating_point.json").read_text())
    kept = op["val_minority"] + op["val_majority"]
    assert kept == 3 + 14
    assert [len(r) for r in scorer.references()] == [kept] * 4  # never the 28 of the whole validation split
    assert abs(float(scorer.weights.sum()) - 1.0) < 1e-6


def test_each_epochs_saved_weights_reproduce_that_epochs_scores(full_run):
    for where in (full_run, full_run / "baseline"):
        det, _, _ = epoch_detector(str(where))
        cfg = config_from_dict(read_yaml(str(where / "config.yaml")))
        splits = load_splits(finalize.resolve_run_paths(cfg, None))
        loader = finalize.split_loader(cfg, splits, splits.test)
        for i, epoch in enumerate(det.epochs):
            scorer, _ = trained_scorer(str(where), epoch)
            _, s = finalize.score_batches(scorer, loader, torch.device("cpu"))
            assert float(np.abs(s - det.test[i]).max()) <= 1e-5, (where.name, epoch)


def test_report_shows_the_deployed_row_and_the_spread_over_budget_draws(full_run):
    report = json.loads((full_run / "report.json").read_text())
    op = json.loads((full_run / "operating_point.json").read_text())
    assert report["deployed"]["detector"] == op["detector"] and report["deployed"]["threshold"] == op["threshold"]
    spread = {e["model"]: e for e in report["budget_spread"]}
    assert set(spread) == set(LABELS.values())
    for e in spread.values():
        assert e["draws"] == 20
        for k in ("auroc", "recall", "specificity", "precision"):
            assert e[f"{k}_p5"] <= e[f"{k}_median"] <= e[f"{k}_p95"]
    md = (full_run / "report.md").read_text()
    assert "Spread over 20 draws" in md and "**Deployed: fusion (val-weighted rank)**" in md
    assert "read off the test ROC (not deployable)" in md


def test_knn_run_deploys_and_predict_reproduces_its_report(tmp_path):
    from egan_med.train import main as train_main

    cohort = build_tiny_cohort(tmp_path / "cohort", train=(3, 30), val=(10, 10), test=(10, 10))
    run = tmp_path / "knn"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "model.kind=knn", "eval.baseline=false",
                       "eval.knn=false", "eval.patchcore=false", "eval.bootstrap=0", "--out", str(run)]) == 0
    op = json.loads((run / "operating_point.json").read_text())
    assert op["detector"] == "kNN one-class" and op["protocol"] == "realistic" and op["val_minority"] == 3
    y, s, minority = _predict_test(run, tmp_path)
    stored = np.load(run / "oneclass" / "knn.npz")
    np.testing.assert_array_equal(y, stored["y_test"])
    assert float(np.abs(s - stored["s_test"]).max()) <= 1e-5
    row = next(r for r in json.loads((run / "report.json").read_text())["protocol_rows"]
               if r["protocol"] == "realistic" and r["model"] == "kNN one-class")
    assert row["threshold"] == op["threshold"]
    assert row["tp"] == int((minority & (y == 1)).sum()) and row["fp"] == int((minority & (y == 0)).sum())


def test_budget_seed_auto_differs_across_folds_and_seeds():
    seeds = {bud.resolve_budget_seed(-1, s, f) for s in (0, 1, 2) for f in (-1, 0, 1, 2)}
    assert len(seeds) == 12
    assert bud.resolve_budget_seed(5, 0, 0) == bud.resolve_budget_seed(5, 3, 2) == 5
    y = np.r_[np.ones(50), np.zeros(50)].astype(int)
    masks = [bud.budget_mask(y, 5, bud.resolve_budget_seed(-1, 0, f)) for f in (0, 1, 2)]
    assert not (np.array_equal(masks[0], masks[1]) and np.array_equal(masks[1], masks[2]))


def test_eval_deploy_must_name_a_detector_the_run_holds():
    with pytest.raises(ConfigError, match="eval.deploy"):
        load_config("configs/demo.yaml", ["eval.knn=false", "eval.deploy=knn"])
    with pytest.raises(ConfigError, match="eval.deploy"):
        load_config("configs/demo.yaml", ["eval.baseline=false", "eval.knn=false", "eval.patchcore=false",
                                          "eval.deploy=fusion_mean"])
    with pytest.raises(ConfigError, match="eval.budget_seed"):
        load_config("configs/demo.yaml", ["eval.budget_seed=-2"])
    assert load_config("configs/demo.yaml", ["eval.deploy=patchcore"]).eval.deploy == "patchcore"


def test_leakage_warning_covers_one_class_runs_and_state_dict_weights(tmp_path):
    from egan_med.xrv import run_leak_warning

    knn = load_config("configs/demo.yaml", ["model.kind=knn", "eval.baseline=false", "eval.knn=false",
                                            "eval.patchcore=false"])
    knn.model.discriminator, knn.model.weights = "xrv_densenet121", "densenet121-res224-chex"
    assert "leakage" in run_leak_warning(knn, {"source": "chexpert"})
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"")
    knn.model.discriminator, knn.model.weights = "efficientnet_lite0", str(weights)
    warning = run_leak_warning(knn, {"source": "medmnist"})
    assert "unknown pretraining" in warning and str(weights) in warning
    knn.model.weights = "imagenet"
    assert run_leak_warning(knn, {"source": "chexpert"}) == ""


def test_best_checkpoint_is_the_validation_choice(full_run):
    """best.pt (the checkpoint rows) is the epoch eval.select picks on validation, never the test split's choice."""
    import pandas as pd

    from egan_med.engine.checkpoint import load_checkpoint
    from egan_med.evaluation import selection

    for where in (full_run, full_run / "baseline"):
        cfg = config_from_dict(read_yaml(str(where / "config.yaml")))
        history = pd.read_csv(where / "metrics.csv")
        want = selection.select_epoch(history, cfg.eval.select, cfg.eval.nash_threshold).epoch
        best = history.loc[history["val_auroc"].idxmax(), "epoch"]  # eval.select = val_auroc, recomputed by hand
        assert cfg.eval.select == "val_auroc" and want == best
        assert int(load_checkpoint(str(where / "checkpoints" / "best.pt"))["epoch"]) == want


def test_every_score_is_float32_whatever_train_amp_says(tmp_path, monkeypatch):
    """Scores a threshold is set on (per-epoch, checkpoint rows) are scored without autocast, as predict scores.

    train.amp defaults to true (bf16 training steps on CUDA); scoring must not follow it, or a threshold set on
    bf16 scores would be applied by predict, the export and the bundle to float32 scores.
    """
    from egan_med.evaluation import scoring
    from egan_med.train import main as train_main

    asked = []
    real = scoring.autocast

    def spy(device, enabled):
        asked.append(bool(enabled))
        return real(device, enabled)

    monkeypatch.setattr(scoring, "autocast", spy)
    cohort = build_tiny_cohort(tmp_path / "cohort", train=(2, 16), val=(4, 4), test=(4, 4))
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "train.amp=true", "train.epochs=1",
                       "train.max_steps_per_epoch=1", "train.batch_size=8", "eval.baseline=false", "eval.knn=false",
                       "eval.patchcore=false", "eval.bootstrap=0", "--out", str(tmp_path / "run")]) == 0
    assert asked and not any(asked)  # every scoring pass (val, test, each epoch and the report) in float32
