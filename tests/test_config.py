import pytest
import yaml

from egan_med.config import ConfigError, config_from_dict, load_config

CONFIGS = ["configs/demo.yaml", "configs/chexpert.yaml", "configs/cifar10.yaml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.name == path.split("/")[-1][:-5]
    assert config_from_dict(cfg.to_dict()) == cfg


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
