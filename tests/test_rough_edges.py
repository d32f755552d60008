"""Issue 25: one error boundary for every command, every config value checked at load, nothing left behind.

Each case ends in one line on stderr, exit status 2 and nothing written. Inputs are built in tmp_path or come
from the bundled PneumoniaMNIST npz; the operating-system failures are real where the machine allows (a file
in the way, /proc, /sys) and simulated where it does not (a read-only folder: the tests run as root).
"""
from __future__ import annotations

import errno
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from egan_med import cli, evaluate, export, predict
from egan_med import cohort_cli as build_cohort
from egan_med import train as train_mod
from egan_med.cohort import builder
from egan_med.config import ConfigError, load_config, reference_table
from egan_med.data import cache_admin
from egan_med.engine import rundir
from egan_med.train import main as train_main
from test_predict import NPZ, TINY, make_trained_run

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (train_mod, evaluate, predict, export, build_cohort, cache_admin)


def _one_line_error(capsys, *needles: str) -> str:
    """The only non-progress line on stderr: an ``error:`` line holding every needle, without a traceback."""
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
           if line.strip() and "%|" not in line and "img/s" not in line]
    assert len(err) == 1, err[-6:]
    assert err[0].startswith("error:") and "Traceback" not in err[0], err[0][:300]
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> str:
    from conftest import build_tiny_cohort

    return build_tiny_cohort(tmp_path_factory.mktemp("c25") / "cohort", train=(4, 16), val=(4, 4), test=(4, 4))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory.getbasetemp())  # shared with test_predict/test_bad_cli


MEDMNIST = ["--medmnist", str(NPZ), "--minority", "1", "--train-minority", "4", "--train-majority", "8",
            "--val-minority", "2", "--val-majority", "2", "--test-minority", "2", "--test-majority", "2"]


# --- 1. operating-system errors: one boundary per command ------------------------------------------------

def test_every_command_main_has_the_boundary():
    for mod in COMMANDS:
        assert getattr(mod.main, "__wrapped__", None) is not None, f"{mod.__name__}.main lacks cli.boundary"


def test_boundary_turns_an_os_error_into_one_line(tmp_path, capsys, monkeypatch):
    def refuse(folder):
        raise PermissionError(errno.EACCES, "Permission denied", folder)

    monkeypatch.setattr(cache_admin, "scan", refuse)
    assert cache_admin.main([str(tmp_path)]) == 2
    _one_line_error(capsys, "cleaning the cache failed on", str(tmp_path), "Permission denied", "choose a location")


@pytest.mark.parametrize("errno_, needle", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                            (errno.ENOENT, "check the path"), (errno.EIO, "try again")])
def test_os_error_message_says_what_to_do(errno_, needle):
    msg = cli.os_error_message(OSError(errno_, os.strerror(errno_), "/data/x"), "writing")
    assert msg.startswith("writing failed on /data/x: ") and needle in msg and "\n" not in msg


def test_build_cohort_out_under_a_file(tmp_path, capsys):
    (tmp_path / "F").write_text("mine")
    assert build_cohort.main([*MEDMNIST, "--out", str(tmp_path / "F" / "sub")]) == 2
    _one_line_error(capsys, str(tmp_path / "F"), "is a file")
    assert _tree(tmp_path) == ["F"] and (tmp_path / "F").read_text() == "mine"


def test_build_cohort_into_a_read_only_folder(tmp_path, capsys, monkeypatch):
    # Root writes anywhere, so the OS's answer is simulated at the one call that creates the folder.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(builder.tempfile, "mkdtemp", refuse)
    (tmp_path / "ro").mkdir()
    assert build_cohort.main([*MEDMNIST, "--out", str(tmp_path / "ro" / "c")]) == 2
    _one_line_error(capsys, str(tmp_path / "ro" / "c"), "Permission denied")
    assert _tree(tmp_path) == ["ro"]


def test_build_cohort_checks_permission_before_reading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builder, "read_source", lambda o: pytest.fail("read the source before checking --out"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert build_cohort.main([*MEDMNIST, "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "permission denied", str(tmp_path))
    assert _tree(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self") or not os.path.isdir("/sys/kernel"), reason="Linux /proc and /sys")
@pytest.mark.parametrize("out", ["/proc/egan_med_x", "/sys/egan_med_x"])
def test_build_cohort_into_a_pseudo_file_system(out, capsys):
    assert build_cohort.main([*MEDMNIST, "--out", out]) == 2
    _one_line_error(capsys, f"on {out}:")
    assert not os.path.exists(out)


def test_export_bundle_under_a_file(trained_run, tmp_path, capsys):
    (tmp_path / "F").write_text("mine")
    assert export.main(["--run", str(trained_run), "--bundle", str(tmp_path / "F" / "sub")]) == 2
    line = _one_line_error(capsys, str(tmp_path / "F"), "is a file")
    assert "folder" not in line.split(";")[0]
    assert _tree(tmp_path) == ["F"] and (tmp_path / "F").read_text() == "mine"


def test_export_bundle_onto_a_file_does_not_call_it_a_folder(trained_run, tmp_path, capsys):
    (tmp_path / "F").write_text("mine")
    assert export.main(["--run", str(trained_run), "--bundle", str(tmp_path / "F")]) == 2
    line = _one_line_error(capsys, str(tmp_path / "F"), "file")
    assert "folder" not in line
    assert _tree(tmp_path) == ["F"]


def test_train_force_with_checkpoints_a_file(tiny_cohort, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("my notes")
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", *TINY, "--force", "--out", str(run)]) == 2
    _one_line_error(capsys, str(run / "checkpoints"), "is a file")
    assert _tree(run) == ["checkpoints"] and (run / "checkpoints").read_text() == "my notes"


# --- 2. every config value checked at load -----------------------------------------------------------------

# One invalid value per key of the config reference (python -m egan_med.config); a new key must be added here.
INVALID = {
    "data.cohort": "''", "data.root": "[a]", "data.fold": "-2", "data.image_size": "30", "data.channels": "2",
    "data.kind": "ct", "data.augment": "maybe", "data.hflip": "maybe", "data.rotate_deg": "90", "data.scale": "1",
    "data.translate": "-0.1", "data.contrast": "1.5", "data.gamma": "-1", "data.noise_std": "-0.1",
    "data.cache_dir": "{a: 1}", "data.num_workers": "-1", "data.on_bad_image": "ignore",
    "model.kind": "gan", "model.encoder": "resnet18", "model.discriminator": "resnet18", "model.weights": "imagnet",
    "model.encoder_weights": "imagnet", "model.discriminator_weights": "imagnet", "model.trainable_blocks": "-2",
    "model.train_bn": "maybe", "model.latent_dim": "0", "model.dropout": "1", "model.spectral_norm": "maybe",
    "model.knn_k": "0", "model.patch_memory": "0", "model.patch_subsample": "greedy",
    "train.epochs": "0", "train.batch_size": "0", "train.minority_cap": "0", "train.max_steps_per_epoch": "-1",
    "train.lr_d": "0", "train.lr_g": "-1", "train.beta1": "1", "train.label_smoothing": "0.5",
    "train.instance_noise": "-1", "train.r1_gamma": "-1", "train.recon_weight": "-1",
    "train.semi_supervised": "maybe", "train.class_weight": "maybe", "train.seed": "-1", "train.device": "tpu",
    "train.amp": "maybe", "train.compile": "maybe", "train.channels_last": "maybe", "train.feature_cache": "maybe",
    "train.checkpoint_every": "0",
    "eval.select": "loss", "eval.nash_threshold": "-1", "eval.operating_point": "youden", "eval.target": "1",
    "eval.bootstrap": "-1", "eval.baseline": "maybe", "eval.knn": "maybe", "eval.patchcore": "maybe",
    "eval.fusion": "maybe", "eval.val_minority_budget": "-2", "eval.budget_seed": "-2", "eval.deploy": "best",
}


def test_the_invalid_table_covers_every_key():
    keys = [row.split("`")[1] for row in reference_table().splitlines()]
    assert sorted(keys) == sorted(INVALID)


@pytest.mark.parametrize("key", sorted(INVALID))
def test_every_key_refuses_an_invalid_value_at_load(key):
    with pytest.raises(ConfigError) as info:
        load_config("configs/demo.yaml", [f"{key}={INVALID[key]}"])
    assert key in str(info.value) and "\n" not in str(info.value)


def test_budget_seed_minus_one_is_auto_and_lower_is_refused(tiny_cohort, tmp_path, capsys):
    assert load_config("configs/demo.yaml", ["eval.budget_seed=-1"]).eval.budget_seed == -1
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", "eval.budget_seed=-2", "--dry-run"]) == 2
    _one_line_error(capsys, "eval.budget_seed=-2")


def _lite0_state() -> dict:
    from egan_med.models.backbones import BACKBONES

    return BACKBONES["efficientnet_lite0"].build()[1].state_dict()


@pytest.mark.parametrize("content", ["bare_tensor", "wrong_shape"])
def test_weights_that_do_not_fit_are_one_line(content, tiny_cohort, tmp_path, capsys):
    path = tmp_path / "w.pt"
    if content == "bare_tensor":
        torch.save(torch.zeros(3, 3), path)
    else:
        state = _lite0_state()
        key = next(k for k, v in state.items() if v.ndim == 4)
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 2)
        torch.save(state, path)
    out = tmp_path / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", *TINY, f"model.weights={path}",
                       "--out", str(out)]) == 2
    _one_line_error(capsys, str(path), "do not fit backbone efficientnet_lite0")
    assert not out.exists()


def test_budget_larger_than_what_exists_is_said():
    from egan_med.config import budget_note

    note = budget_note(100000, 33, 389)
    assert "=100000 is larger than the 389 validation positives" in note and "\n" not in note
    assert "500 training positives" in budget_note(-1, 500, 389)
    assert budget_note(30, 33, 389) == budget_note(0, 33, 389) == budget_note(-1, 33, 389) == ""


def test_fusion_with_one_detector_says_why():
    from egan_med.config import fusion_note

    note = fusion_note(True, 1)
    assert "eval.fusion" in note and "two or more" in note and "\n" not in note
    assert fusion_note(True, 2) == "" and fusion_note(False, 1) == ""


# --- 3. nothing left after a refused start -------------------------------------------------------------------

def test_one_class_run_with_missing_xrv_weights_leaves_nothing(tiny_cohort, tmp_path, capsys, monkeypatch):
    xrv = pytest.importorskip("torchxrayvision", reason="the optional extra: pip install 'egan_med[xrv]'")
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", "model.kind=knn",
                       "model.discriminator=xrv_densenet121", "model.weights=densenet121-res224-nih",
                       "--out", str(out)]) == 2
    _one_line_error(capsys, "densenet121-res224-nih not found")
    assert not out.exists()


def test_a_refusal_after_the_run_directory_is_made_leaves_nothing(tiny_cohort, tmp_path, capsys, monkeypatch):
    from egan_med.data import BadImageError
    from egan_med.evaluation import detectors

    def unreadable(*args, **kwargs):
        raise BadImageError("x.png", "truncated")

    monkeypatch.setattr(detectors, "oneclass_scores", unreadable)  # fails after fit_oneclass_run made the folder
    out = tmp_path / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", "model.kind=knn", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: bad image x.png: truncated"
    assert not out.exists()


def test_only_an_untouched_new_run_directory_is_discarded(tmp_path):
    cfg = load_config("configs/demo.yaml")
    new, old = tmp_path / "new", tmp_path / "old"
    old.mkdir()
    (old / "thesis.txt").write_text("mine")
    for run in (new, old):
        rundir.create_run_dir(str(run), cfg, wipe=False)
    assert rundir.discard_unused_run_dirs() == [str(new)]
    assert not new.exists() and (old / "thesis.txt").read_text() == "mine"


# --- 4. smaller ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("main, argv, needle", [
    (build_cohort.main, ["--medmnist", str(NPZ), "--train-minority", "2.5"], "--train-minority"),
    (evaluate.main, ["run", "--sensitivity", "0.9", "--specificity", "0.9"], "not allowed with"),
    (train_main, ["configs/demo.yaml", "--threads", "x"], "--threads"),
])
def test_argparse_errors_are_one_line_with_a_pointer_to_help(main, argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    line = _one_line_error(capsys, needle, "--help)")
    assert "usage:" not in line


def test_restricted_loading_prints_only_the_refusal(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    with open(tmp_path / "checkpoints" / "best.pt", "wb") as fh:
        pickle.dump({"config": {}, "models": {}}, fh, protocol=5)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert evaluate.main([str(tmp_path)]) == 2
    assert [str(w.message)[:80] for w in seen] == []
    _one_line_error(capsys, "best.pt: damaged (UnpicklingError: Unsupported operand 149)")


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_run_directory_that_is_a_file(command, tmp_path, capsys):
    (tmp_path / "README.md").write_text("# notes")
    run = str(tmp_path / "README.md")
    argv = {"evaluate": [run], "predict": ["--run", run, "--input", run, "--out", str(tmp_path / "s.csv")],
            "export": ["--run", run]}[command]
    assert {"evaluate": evaluate, "predict": predict, "export": export}[command].main(argv) == 2
    _one_line_error(capsys, "is a file, not a run directory")
    assert _tree(tmp_path) == ["README.md"]


# --- build_cohort: listed files that are missing or not images ----------------------------------------------

def _generic_table(tmp_path: Path, data_root: Path, n: int = 18) -> list[str]:
    """Rows path,label,patient over real radiographs copied into tmp_path/imgs (every third one pneumonia)."""
    import shutil

    src = sorted((data_root / "cxr_covid_ccby" / "train").rglob("*.jpg"))[:n]
    (tmp_path / "imgs").mkdir()
    rows = ["path,label,patient"]
    for i, f in enumerate(src):
        shutil.copy(f, tmp_path / "imgs" / f"{i:02d}.jpg")
        rows.append(f"imgs/{i:02d}.jpg,{'pneumonia' if i % 3 == 0 else 'normal'},p{i}")
    return rows


GENERIC = ["--minority", "pneumonia", "--val-frac", "0.3", "--test-frac", "0.3"]


def test_build_cohort_excludes_missing_and_undecodable_files_with_their_reason(tmp_path, data_root, capsys):
    import pandas as pd

    rows = _generic_table(tmp_path, data_root)
    (tmp_path / "imgs" / "notes.png").write_text("not an image")
    rows += ["~/x.jpg,normal,p90", "imgs/notes.png,pneumonia,p91"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cohort"
    assert build_cohort.main(["--generic", str(tmp_path / "labels.csv"), *GENERIC, "--root", str(tmp_path),
                              "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "missing_file 1" in printed and "unreadable 1" in printed, printed
    excluded = pd.read_csv(out / "excluded.csv").set_index("path")["reason"].to_dict()
    assert excluded["~/x.jpg"] == "missing_file" and excluded["imgs/notes.png"] == "unreadable"
    manifest = pd.read_csv(out / "cohort.csv")
    assert len(manifest) == 18 and not {"~/x.jpg", "imgs/notes.png"} & set(manifest["path"])


def test_build_cohort_refuses_text_files_as_the_whole_minority_class(tmp_path, data_root, capsys):
    import shutil

    for cls in ("normal", "pneumonia"):
        (tmp_path / "data" / cls).mkdir(parents=True)
    for i, f in enumerate(sorted((data_root / "cxr_covid_ccby" / "train").rglob("*.jpg"))[:12]):
        shutil.copy(f, tmp_path / "data" / "normal" / f"{i:02d}.jpg")
    for i in range(6):
        (tmp_path / "data" / "pneumonia" / f"{i}.png").write_text(f"text file {i}")
    out = tmp_path / "cohort"
    assert build_cohort.main(["--folder", str(tmp_path / "data"), "--minority", "pneumonia", "--out", str(out)]) == 2
    _one_line_error(capsys, "no minority image is readable", "of 6, 0 are missing and 6 are not images")
    assert not out.exists()


def test_a_label_table_without_its_images_still_builds(tmp_path, data_root, capsys):
    rows = _generic_table(tmp_path, data_root)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    import shutil

    shutil.rmtree(tmp_path / "imgs")  # the images are not copied yet
    out = tmp_path / "cohort"
    assert build_cohort.main(["--generic", str(tmp_path / "labels.csv"), *GENERIC, "--root", str(tmp_path),
                              "--out", str(out)]) == 0
    assert "were not checked" in capsys.readouterr().out
    assert (out / "cohort.csv").read_text().count("\n") == 19
