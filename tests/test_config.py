import glob
import os

import pytest
import yaml

from egan_med import train
from egan_med.config import BACKBONE_NAMES, ConfigError, config_from_dict, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every run config shipped; configs/grids/ holds study grids (lists of runs), not run configs.
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 if os.sep + "grids" + os.sep not in p)


def test_every_shipped_config_is_listed():
    assert len(CONFIGS) >= 20 and "configs/demo.yaml" in CONFIGS and "configs/paper/paper.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    cfg = load_config(os.path.join(REPO, path))
    assert cfg.name == os.path.basename(path)[:-5]
    assert config_from_dict(cfg.to_dict()) == cfg


def test_backbone_names_match_the_registry():
    from egan_med.models.backbones import BACKBONES

    assert tuple(BACKBONES) == BACKBONE_NAMES


@pytest.mark.parametrize("override, suggestion", [
    ("model.encoder=densnet121", "densenet121"),
    ("model.discriminator=efficientnet_lite", "efficientnet_lite0"),
    ("model.weights=imagnet", "imagenet"),
    ("model.discriminator_weights=densenet121-res224-al", "densenet121-res224-all"),
    ("model.kind=supervsed", "supervised"),
    ("eval.select=val_aucroc", "val_auroc"),
    ("eval.operating_point=sensitivty", "sensitivity"),
    ("data.on_bad_image=skp", "skip"),
    ("data.kind=radiographs", "radiograph"),
])
def test_enumerated_values_suggest_the_closest(override, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'") as err:
        load_config("configs/demo.yaml", [override])
    assert str(err.value).startswith(override.split("=")[0])


def test_weights_file_path_is_not_taken_for_a_name():
    cfg = load_config("configs/demo.yaml", ["model.weights=/nowhere/weights.pth"])  # checked when loaded
    assert cfg.model.weights == "/nowhere/weights.pth"


def test_train_refuses_a_typo_before_reading_images(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["configs/demo.yaml", "model.encoder=densnet121", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'densenet121'" in err[0] and "decoding" not in err[0]
    assert not out.exists()


def test_chexpert_config_is_the_papers_setup():
    cfg = load_config("configs/chexpert.yaml")
    assert (cfg.model.encoder, cfg.model.discriminator) == ("densenet121", "densenet121")
    assert cfg.train.lr_d == cfg.train.lr_g == 1e-4 and cfg.model.latent_dim == 128


def test_override_sets_typed_value():
    cfg = load_config("configs/demo.yaml", ["train.epochs=3", "model.weights=none", "data.augment=false"])
    assert cfg.train.epochs == 3 and cfg.model.weights == "none" and cfg.data.augment is False


def test_unknown_key_suggests_closest(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {"epochz": 3}}))
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epochz'.*did you mean 'train.epochs'"):
        load_config(str(p))


def test_unknown_override_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'model.dropout'"):
        load_config(None, ["model.dropuot=0.1"])


@pytest.mark.parametrize("override, message", [
    ("train.lr_d=0", "must be > 0"),
    ("train.epochs=0", "must be >= 1"),
    ("data.image_size=30", "multiple of 4"),
    ("model.kind=gan", "must be one of"),
    ("train.epochs=three", "expected an integer"),
    ("data.augment=maybe", "expected true or false"),
    ("eval.target=1.5", "within"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config("configs/demo.yaml", [override])
    assert override.split("=")[0] in str(err.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_is_read_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))
