"""The label budget, the patch memory, rank fusion and one-class model kinds (issue 17)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from egan_med.evaluation import budget as bud
from egan_med.config import ConfigError, load_config
from egan_med.evaluation.metrics import binary_metrics
from egan_med.train import main as train_main
from conftest import build_tiny_cohort

REPO = Path(__file__).resolve().parents[1]


def _auroc(y, s) -> float:
    return binary_metrics(np.asarray(y), np.asarray(s), 0.0)["auroc"]


def test_budget_mask_is_seeded_of_size_n_and_keeps_every_majority_image():
    y = np.array([0, 1] * 20)
    m = bud.budget_mask(y, 3, seed=7)
    assert int(y[m].sum()) == 3 and int((y[m] == 0).sum()) == 20
    assert np.array_equal(m, bud.budget_mask(y, 3, seed=7)) and not np.array_equal(m, bud.budget_mask(y, 3, seed=8))
    assert bud.budget_mask(y, 99).all()
    assert bud.resolve_budget(0, 5, 40) == 40 and bud.resolve_budget(-1, 5, 40) == 5 and bud.resolve_budget(80, 5, 40) == 40


def test_budget_train_keyword_means_as_many_as_training_positives_and_the_demo_uses_it():
    cfg = load_config(str(REPO / "configs" / "demo.yaml"), ["eval.val_minority_budget=train"])
    assert cfg.eval.val_minority_budget == -1
    assert load_config(str(REPO / "configs" / "demo.yaml")).eval.val_minority_budget == -1
    with pytest.raises(ConfigError, match="eval.val_minority_budget"):
        load_config(str(REPO / "configs" / "demo.yaml"), ["eval.val_minority_budget=-2"])


def test_every_detector_is_selected_on_the_same_budgeted_positives(monkeypatch):
    rng = np.random.default_rng(0)
    y_val, y_test = np.array([0] * 30 + [1] * 30), np.array([0] * 30 + [1] * 30)
    dets = {name: bud.Detector(rng.normal(size=(epochs, 60)), rng.normal(size=(epochs, 60)), list(range(epochs)))
            for name, epochs in (("a", 3), ("b", 1), ("c", 2))}
    seen = []
    select = bud.select_row
    monkeypatch.setattr(bud, "select_row", lambda det, y, mask: seen.append(mask.copy()) or select(det, y, mask))
    masks = {bud.REALISTIC: bud.budget_mask(y_val, 4, seed=1), bud.GENEROUS: np.ones(60, bool)}
    counts = dict(train_minority=4, train_majority=100, test_minority=30, test_majority=30)
    rows = bud.protocol_rows(dets, y_val, y_test, masks, counts, "specificity", 0.9, 0, 0)
    realistic = [m for m in seen[:3]]
    assert all(np.array_equal(realistic[0], m) for m in realistic) and int(y_val[realistic[0]].sum()) == 4
    assert {r["val_minority_used"] for r in rows if r["protocol"] == bud.REALISTIC} == {4}
    assert {r["val_minority_used"] for r in rows if r["protocol"] == bud.GENEROUS} == {30}
    assert {r["model"] for r in rows} == {"a", "b", "c", bud.FUSION_MEAN, bud.FUSION_WEIGHTED}


def test_fusing_a_perfect_and_a_random_score_beats_the_random_one():
    rng = np.random.default_rng(1)
    y = np.array([0] * 100 + [1] * 100)
    perfect = (y + rng.uniform(0, 0.5, 200), y + rng.uniform(0, 0.5, 200))
    noise = (rng.normal(size=200), rng.normal(size=200))
    _, fused = bud.fuse({"perfect": perfect, "random": noise})
    assert _auroc(y, fused) > _auroc(y, noise[1]) + 0.2
    # Weights from validation AUROC above chance: the random score is nearly ignored.
    _, weighted = bud.fuse({"perfect": perfect, "random": noise}, {"perfect": 0.5, "random": 0.0})
    assert _auroc(y, weighted) == pytest.approx(1.0)


def test_rank_normalise_is_monotone_and_in_unit_interval():
    ref = np.array([3.0, 1.0, 2.0, 2.0])
    r = bud.rank_normalise(ref, np.array([0.0, 1.5, 2.0, 9.0]))
    assert np.all(np.diff(r) > 0) and r[0] == 0.0 and r[-1] == 1.0


def _texture(rng, n: int) -> torch.Tensor:
    base = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(n, 3, 32, 32)
    return (0.6 * base + 0.05 * torch.as_tensor(rng.normal(size=(n, 3, 32, 32)), dtype=torch.float32)).clamp(0, 1)


def test_patch_memory_ranks_a_pasted_anomaly_above_normal_images():
    from egan_med.models.patchcore import PatchMemory

    rng = np.random.default_rng(0)
    pm = PatchMemory("efficientnet_lite0", "imagenet", memory=200, seed=0)
    pm.fit_patches(pm.patches(_texture(rng, 24)))
    normal = _texture(rng, 6)
    odd = normal.clone()
    odd[:, :, 4:12, 20:28] = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # a magenta square in one corner
    s_normal, s_odd = pm.score_patches(pm.patches(normal)), pm.score_patches(pm.patches(odd))
    assert s_odd.min() > s_normal.max()
    assert len(pm.bank) == 200  # 24 images x 16 patches, capped, seeded subsample


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", train=(4, 16), val=(10, 10),
                             test=(8, 8))


@pytest.mark.parametrize("kind,label", [("patchcore", "patch memory"), ("knn", "kNN one-class")])
def test_one_class_kind_runs_alone_and_its_report_states_the_budget(cohort, tmp_path, kind, label, monkeypatch):
    out = tmp_path / kind
    monkeypatch.chdir(REPO)
    rel = os.path.relpath(cohort, REPO)  # relative: evaluate from elsewhere must resolve it from the run's cwd
    assert train_main(["configs/demo.yaml", f"data.cohort={rel}", f"model.kind={kind}", "eval.knn=false",
                       "eval.patchcore=false", "eval.bootstrap=10", "eval.val_minority_budget=3", "--out", str(out),
                       "--threads", "1"]) == 0
    md = (out / "report.md").read_text()
    assert "4 training positives; 3 of 10 validation positives used for selection" in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["label_budget"][0].startswith("Label budget: 4 training positives")
    protos = {(r["protocol"], r["model"], r["val_minority_used"]) for r in rep["protocol_rows"]}
    assert protos == {("realistic", label, 3), ("generous", label, 10)}
    assert rep["rows"][0]["model"] == label and not (out / "checkpoints" / "best.pt").exists()
    if kind == "knn":  # evaluate from another working directory re-reads the cached scores
        from egan_med.evaluate import main as evaluate_main
        monkeypatch.chdir(tmp_path)
        (out / "report.md").unlink()
        assert evaluate_main([str(out)]) == 0 and "3 of 10 validation positives" in (out / "report.md").read_text()


def test_trained_run_keeps_every_epoch_and_reports_both_protocols(cohort, tmp_path):
    out = tmp_path / "eg"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=2", "train.batch_size=8",
                       "train.max_steps_per_epoch=1", "eval.baseline=false", "eval.knn=true", "eval.bootstrap=10",
                       "eval.val_minority_budget=train", "--out", str(out), "--threads", "1"]) == 0
    assert sorted(p.name for p in (out / "epoch_scores").iterdir()) == ["epoch_000.npz", "epoch_001.npz"]
    rep = json.loads((out / "report.json").read_text())
    used = {(r["protocol"], r["val_minority_used"]) for r in rep["protocol_rows"]}
    assert used == {("realistic", 4), ("generous", 10)}
    models = {r["model"] for r in rep["protocol_rows"]}
    assert {"eGAN", "kNN one-class", bud.FUSION_MEAN, bud.FUSION_WEIGHTED} <= models
    assert "(as many as training positives (eval.val_minority_budget=-1)" in (out / "report.md").read_text()


def test_budget_page_puts_both_protocols_side_by_side_and_checks_the_goal(tmp_path):
    from scripts import budget_page

    grid = tmp_path / "g.yaml"
    grid.write_text("cohorts: {c: --x}\nexperiments:\n  - {name: e, setting: 'CIFAR-10 1:500', variant: all, cohort: c, "
                    "config: configs/demo.yaml, folds: [0]}\n")
    run = tmp_path / "runs" / "e" / "fold0-seed0"
    run.mkdir(parents=True)

    def row(model, proto, auroc, used):
        return {"model": model, "protocol": proto, "val_minority_used": used, "epoch": 1, "threshold": 0.0,
                "auroc": auroc, "auroc_lo": auroc - 0.03, "auroc_hi": auroc + 0.03, "sens_at_spec": 0.5,
                "sens_at_spec_lo": 0.4, "sens_at_spec_hi": 0.6, "recall": 0.5, "specificity": 0.9}
    p_rows = [row(m, p, a - (0.01 if p == "realistic" else 0), 5 if p == "realistic" else 100)
              for p in ("realistic", "generous")
              for m, a in (("eGAN", 0.80), ("supervised baseline", 0.85), ("fusion (val-weighted rank)", 0.90))]
    (run / "report.json").write_text(json.dumps({"rows": [], "protocol_rows": p_rows}))
    assert budget_page.main(["--runs", str(tmp_path / "runs"), "--grid", str(grid), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "RESULTS_BUDGET.md").read_text()
    assert ("| CIFAR-10 1:500 | supervised baseline | 1 | 5 / 100 | 0.500 | 0.900 | 0.840 [0.81, 0.87] | "
            "0.850 [0.82, 0.88] |") in md
    assert "| CIFAR-10 1:500 | fold0-seed0 | 0.890 [0.86, 0.92] | supervised baseline (0.840 [0.81, 0.87]) | yes | +0.050 |" in md


def test_force_never_reuses_the_replaced_runs_scores(cohort, tmp_path):
    """--force replaces a run of another config: its cached one-class scores and per-epoch scores go with it."""
    out = tmp_path / "forced"
    common = ["configs/demo.yaml", f"data.cohort={cohort}", "eval.baseline=false", "eval.patchcore=false",
              "eval.bootstrap=10", "--out", str(out), "--threads", "1"]
    assert train_main([*common, "train.epochs=3", "train.batch_size=8", "train.max_steps_per_epoch=1",
                       "eval.knn=true", "model.knn_k=1"]) == 0
    first_knn = np.load(out / "oneclass" / "knn.npz")["s_test"]
    assert len(list((out / "epoch_scores").iterdir())) == 3
    assert train_main([*common, "model.kind=knn", "eval.knn=false", "model.knn_k=10", "--force"]) == 0
    assert not np.allclose(np.load(out / "oneclass" / "knn.npz")["s_test"], first_knn)  # refitted with k=10
    assert not (out / "epoch_scores").exists()  # a kNN run has no epochs; the eGAN run's must not be read
