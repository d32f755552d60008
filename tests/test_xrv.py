"""torchxrayvision's DenseNet121 as a backbone: same features as torchxrayvision, paper freezing, clear weight
errors, the CheXpert leakage warning. Nothing is downloaded: weights are random and saved to tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from egan_med.config import ConfigError, load_config
from egan_med.models import Backbone, Discriminator, WeightsError, count_parameters
from egan_med.models.backbones import xrv_weights_file

xrv = pytest.importorskip("torchxrayvision", reason="the optional extra: pip install 'egan_med[xrv]'")

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"


def real_radiographs(n: int, size: int) -> np.ndarray:
    """n real PneumoniaMNIST chest X-rays (CC BY 4.0), both classes, resized to size px: uint8 (n, size, size)."""
    with np.load(NPZ) as z:
        imgs, labels = z["test_images"], z["test_labels"][:, 0]
    pick = list(np.flatnonzero(labels == 0)[: n // 2]) + list(np.flatnonzero(labels == 1)[: n - n // 2])
    return np.stack([np.asarray(Image.fromarray(imgs[i]).resize((size, size), Image.BILINEAR)) for i in pick])


@pytest.fixture(scope="module")
def xrv_state(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A torchxrayvision DenseNet with random (seeded) weights and its state dict saved as a file."""
    torch.manual_seed(0)
    model = xrv.models.DenseNet(weights=None).eval()
    # Non-trivial BatchNorm statistics, so that a mis-mapped layer cannot go unnoticed.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("xrv") / "xrv_random.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("channels", [1, 3])
def test_features_equal_torchxrayvision_on_real_radiographs(xrv_state, channels):
    model, path = xrv_state
    net = Backbone("xrv_densenet121", str(path)).eval()
    imgs = real_radiographs(4, 224)  # torchxrayvision's resolution
    ours_in = torch.from_numpy(imgs.astype(np.float32) / 255.0)[:, None].repeat(1, channels, 1, 1)
    ref_in = torch.from_numpy(np.stack([xrv.datasets.normalize(i, 255) for i in imgs]))[:, None]
    with torch.no_grad():
        ours = net(ours_in)
        ref_map = torch.relu(model.features(ref_in))
        ref_vec = model.features2(ref_in)
    assert ours.shape == ref_map.shape == (4, 1024, 7, 7)
    assert float(ref_vec.std(0).mean()) > 1e-3  # distinct images give distinct features
    np.testing.assert_allclose(ours.numpy(), ref_map.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours.mean((2, 3)).numpy(), ref_vec.numpy(), atol=1e-5, rtol=0)


def test_paper_freezing_trains_last_conv_and_norm5(xrv_state):
    _, path = xrv_state
    net = Backbone("xrv_densenet121", str(path))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    # conv2 of denselayer16 (128 -> 32, 3x3) and norm5 (1024 scale + shift), as for torchvision's DenseNet121
    assert count_parameters(net)[1] == 128 * 32 * 9 + 2 * 1024 == 38912
    assert trainable == {"top.0.conv2.weight", "top.1.0.weight", "top.1.0.bias"}
    assert count_parameters(net)[1] == count_parameters(Backbone("densenet121", "none", trainable_units=2))[1]


def test_named_weights_missing_from_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "models_data"))
    monkeypatch.setattr(xrv.utils, "download", lambda *a: pytest.fail("must never download"))
    with pytest.raises(WeightsError) as err:
        Backbone("xrv_densenet121", "densenet121-res224-nih")
    msg = str(err.value)
    assert "\n" not in msg and "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt" in msg
    assert str(tmp_path / "models_data") in msg and "https://github.com/mlmed/torchxrayvision/releases" in msg
    assert not (tmp_path / "models_data").exists()  # nothing created, nothing half-written


def test_named_weights_come_from_torchxrayvision_cache(xrv_state, tmp_path, monkeypatch):
    model, _ = xrv_state
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path))
    path, url = xrv_weights_file("densenet121-res224-rsna")
    assert Path(path).parent == tmp_path and url.endswith(Path(path).name)
    torch.save(model, path)  # torchxrayvision's release files are pickled whole models
    net = Backbone("xrv_densenet121", "densenet121-res224-rsna").eval()
    assert "densenet121-res224-rsna" in net.weights_source
    x = torch.from_numpy(real_radiographs(2, 64).astype(np.float32) / 255)[:, None]
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), torch.relu(model.features(x * 2048 - 1024)).numpy(), atol=1e-5)


def test_pickled_release_file_as_path_says_where_it_goes(xrv_state, tmp_path):
    model, _ = xrv_state
    torch.save(model, tmp_path / "release.pt")
    with pytest.raises(WeightsError, match="densenet121-res224-"):
        Backbone("xrv_densenet121", str(tmp_path / "release.pt"))


@pytest.mark.parametrize("overrides,key", [
    (["model.discriminator=xrv_densenet121"], "model.weights"),  # imagenet is not one of its weight sets
    (["model.weights=densenet121-res224-all"], "model.weights"),  # xrv weights on efficientnet_lite0
    (["model.discriminator=xrv_densenet121", "model.discriminator_weights=densenet121-res224-all",
      "model.weights=imagenet", "model.encoder=xrv_densenet121"], "model.weights"),  # E still gets imagenet
])
def test_config_rejects_mismatched_xrv_weights(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        load_config(None, overrides)


def test_config_accepts_xrv_choices():
    cfg = load_config(None, ["model.encoder=xrv_densenet121", "model.discriminator=xrv_densenet121",
                             "model.weights=densenet121-res224-pc"])
    assert cfg.model.weights == "densenet121-res224-pc"


def test_shipped_xrv_config_does_not_leak_on_chexpert():
    from egan_med.xrv import run_leak_warning

    cfg = load_config(str(REPO / "configs" / "chexpert_xrv.yaml"))
    assert cfg.model.discriminator == cfg.model.encoder == "xrv_densenet121" and cfg.data.image_size == 224
    assert run_leak_warning(cfg, {"source": "chexpert"}) == ""
    cfg.model.weights = "densenet121-res224-all"
    assert run_leak_warning(cfg, {"source": "chexpert"}).startswith("leakage:")


def test_leak_only_for_weights_that_saw_the_cohort_dataset():
    from egan_med.xrv import pretraining_leak

    msg = pretraining_leak("chexpert", ["densenet121-res224-chex", "imagenet"])
    assert "densenet121-res224-chex" in msg and "densenet121-res224-nih" in msg.split("did not see them")[1]
    assert pretraining_leak("chexpert", ["densenet121-res224-nih", "densenet121-res224-mimic_ch", "imagenet"]) == ""
    assert "densenet121-res224-rsna" in pretraining_leak("nih", ["densenet121-res224-rsna"])  # RSNA images are NIH's
    assert pretraining_leak("nih", ["densenet121-res224-chex", "densenet121-res224-pc"]) == ""
    assert pretraining_leak("medmnist", ["densenet121-res224-all"]) == ""


@pytest.mark.slow
def test_training_on_chexpert_cohort_with_chexpert_weights_warns_and_report_carries_it(
        xrv_state, tmp_path, monkeypatch, capsys):
    """A tiny eGAN run (E, D, supervised baseline, kNN all on xrv_densenet121, at 64 px rather than 224 for CPU
    time) completes, carries the leakage warning, and exports as a MONAI bundle."""
    from egan_med import export
    from egan_med.cohort import CohortOptions, build
    from egan_med.train import main as train_main

    model, _ = xrv_state
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "xrv_cache"))
    (tmp_path / "xrv_cache").mkdir()
    torch.save(model, xrv_weights_file("densenet121-res224-all")[0])
    opts = CohortOptions(source="medmnist", input=str(NPZ), minority="1", train_minority=2, train_majority=16,
                         val_minority=4, val_majority=4, test_minority=4, test_majority=4)
    build(opts, str(tmp_path / "cohort"))
    meta_path = tmp_path / "cohort" / "cohort.json"
    meta = json.loads(meta_path.read_text())
    meta["source"] = "chexpert"  # stands in for a CheXpert cohort: the check reads only cohort.json's source
    meta_path.write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={tmp_path / 'cohort' / 'cohort.csv'}", "data.image_size=64",
                       "model.encoder=xrv_densenet121", "model.discriminator=xrv_densenet121",
                       "model.weights=densenet121-res224-all", "train.epochs=1", "train.max_steps_per_epoch=2",
                       "train.batch_size=8", "eval.bootstrap=0", "eval.baseline=true", "eval.knn=true",
                       "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning: leakage" in err and "densenet121-res224-all" in err
    assert "39,937 trainable" in err  # D: paper freezing of the backbone (38,912) + its 1024 -> 1 head
    report = json.loads((run / "report.json").read_text())
    assert len(report["warnings"]) == 1 and "CheXpert" in report["warnings"][0]
    assert (run / "report.md").read_text().splitlines()[2].startswith("**Warning: leakage")
    card = (run / "MODEL_CARD.md").read_text()
    assert "**Warning: leakage" in card and "trained on NIH ChestX-ray14, PadChest, CheXpert" in card
    assert np.isfinite(np.load(run / "scores_test.npz")["logit"]).all()
    models = [r["model"] for r in report["rows"]]
    assert "supervised baseline" in models and "kNN one-class" in models
    meta = export.export_bundle(str(run), str(tmp_path / "bundle"))
    assert "CheXpert" in meta["egan_med"]["leakage_warning"]
    assert meta["required_packages_version"]["torchxrayvision"] == xrv.__version__
    assert meta["egan_med"]["torchscript_max_abs_diff"] <= 1e-5


def test_xrv_backbone_without_torchxrayvision_says_how_to_install(monkeypatch):
    import egan_med.xrv

    monkeypatch.setattr(egan_med.xrv, "installed", lambda: False)
    with pytest.raises(ConfigError, match=r"^model.discriminator='xrv_densenet121': needs torchxrayvision: pip install 'egan_med\[xrv\]'$"):
        load_config(None, ["model.kind=supervised", "model.discriminator=xrv_densenet121",
                           "model.weights=densenet121-res224-nih"])
