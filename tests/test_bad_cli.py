"""Issue 14, item 7, command-line side: each bad input or fault gets one line, a clear exit status and no data loss.

train --force keeps the user's files; a config name cannot leave runs/; predict never overwrites an input; two
trainings cannot share a run directory; YAML alias bombs and duplicate keys are refused with a short message;
options and overrides mix in any order; non-finite thresholds, bad checkpoints, Ctrl-C and unreadable inputs end
in one line; a finished run evaluates from any working directory. All inputs are built in tmp_path or come from
the bundled PneumoniaMNIST npz.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from egan_med import evaluate, export, predict
from egan_med.engine import rundir
from egan_med import train as train_mod
from egan_med.config import ConfigError, load_config
from egan_med.train import main as train_main
from test_predict import TINY, make_trained_run

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *needles: str, max_len: int = 600) -> str:
    # tqdm progress bars (predict scoring) are not messages; everything else must be the one error line.
    err = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert len(err) == 1, err[-5:]
    assert err[0].startswith("error:"), err[0][:200]
    assert len(err[0]) <= max_len, len(err[0])
    for n in needles:
        assert n in err[0], (n, err[0][:300])
    return err[0]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    return make_trained_run(tmp_path_factory.getbasetemp())  # shared with test_predict/test_export


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def _pngs(folder: Path, n: int = 2, suffix: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"img{i}{suffix}"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
        out.append(p)
    return out


# --- train --force and the run directory ------------------------------------------------------------------

def test_force_removes_only_what_egan_med_wrote(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "sub").mkdir()
    (run / "tb" / "hparams").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "other"}))
    for f in ("metrics.csv", "report.md", "losses.png", "checkpoints/last.pt", "checkpoints/last.pt.prev",
              "tb/events.out.tfevents.1.host", "tb/hparams/events.out.tfevents.2.host"):
        (run / f).write_text("old run")
    (run / "thesis.txt").write_text("four years of work")
    (run / "sub" / "scan.dcm").write_bytes(b"\0" * 200)
    (run / "checkpoints" / "my_notes.txt").write_text("mine")
    cfg = load_config("configs/demo.yaml")
    assert rundir.check_run_dir(str(run), cfg, resume=None, force=True) is True
    rundir.create_run_dir(str(run), cfg, wipe=True)
    rundir.release_run_dirs()
    assert (run / "thesis.txt").read_text() == "four years of work"
    assert (run / "sub" / "scan.dcm").read_bytes() == b"\0" * 200
    assert (run / "checkpoints" / "my_notes.txt").read_text() == "mine"
    for f in ("metrics.csv", "report.md", "losses.png", "checkpoints/last.pt", "checkpoints/last.pt.prev", "tb"):
        assert not (run / f).exists(), f
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.to_dict()


@pytest.mark.parametrize("other", ["config", "folder"])
def test_run_dir_error_says_what_force_does(tmp_path, capsys, other):
    run = tmp_path / "run"
    run.mkdir()
    (run / ("config.yaml" if other == "config" else "thesis.txt")).write_text(yaml.safe_dump({"name": "x"}))
    assert train_main(["configs/demo.yaml", "--out", str(run)]) == 2
    _one_line_error(capsys, "--force deletes only the files egan_med wrote")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/tmp/x"])
def test_config_name_cannot_leave_runs(name, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\nname: '{name}'\n")
    assert train_main([str(cfg), "--dry-run"]) == 2
    _one_line_error(capsys, "name=", "plain folder name")


@pytest.mark.parametrize("content", [b"\x00\x01\xff\xfe binary \x80", b"train: {epochs: [\n", b"- a list\n"])
def test_bad_config_yaml_in_run_dir(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(content)
    for extra in ([], ["--resume"]):
        assert train_main(["configs/demo.yaml", "--out", str(run), *extra]) == 2
        _one_line_error(capsys)
    assert sorted(os.listdir(run)) == ["config.yaml"]


def test_evaluate_refuses_a_binary_config_yaml_before_writing(run_copy, capsys):
    (run_copy / "config.yaml").write_bytes(b"\xff\xfe\x00binary")
    before = (run_copy / "report.md").stat().st_mtime_ns
    assert evaluate.main([str(run_copy)]) == 2
    _one_line_error(capsys, "config.yaml", "UTF-8")
    assert (run_copy / "report.md").stat().st_mtime_ns == before


def test_out_under_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert train_main(["configs/demo.yaml", "--out", str(f / "run")]) == 2
    _one_line_error(capsys, "is a file")
    assert f.read_text() == "x"


# --- the run-directory lock ---------------------------------------------------------------------------------

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_second_training_into_a_locked_run_dir_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run / rundir.LOCK_NAME)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.time()
        assert train_main(["configs/demo.yaml", *TINY, "--out", str(run)]) == 2
        _one_line_error(capsys, "in use by another training", f"pid {holder.pid}")
        assert time.time() - t0 < 60  # refused up front, not after training
        assert sorted(os.listdir(run)) == [rundir.LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_exclusive_between_processes_and_released(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("configs/demo.yaml")
    rundir.create_run_dir(str(run), cfg, wipe=False)  # this process now holds the lock
    try:
        probe = [sys.executable, "-c", "import sys; from egan_med.engine import rundir\n"
                 "try:\n    rundir.lock_run_dir(sys.argv[1])\nexcept rundir.RunDirError as e:\n"
                 "    print(e); sys.exit(2)", str(run)]
        got = subprocess.run(probe, capture_output=True, text=True, cwd=REPO)
        assert got.returncode == 2 and f"pid {os.getpid()}" in got.stdout, got
    finally:
        rundir.release_run_dirs()
    assert subprocess.run(probe, capture_output=True, text=True, cwd=REPO).returncode == 0


# --- config files ------------------------------------------------------------------------------------------

def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, capsys):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdef"):
        prev = "abcdef"[i]
        bomb.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    bomb.append("train:\n  epochs: *f")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb) + "\n")
    assert len(path.read_bytes()) < 600
    t0 = time.time()
    assert train_main([str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "aliases", max_len=300)
    assert time.time() - t0 < 10
    assert not (tmp_path / "run").exists()


def test_huge_value_is_shown_truncated(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("train:\n  epochs: [" + ", ".join(["1"] * 50000) + "]\n")
    assert train_main([str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "train.epochs", max_len=300)


def test_huge_key_and_override_are_shown_truncated(tmp_path, capsys):
    assert train_main(["configs/demo.yaml", "train." + "x" * 200000 + "=1", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "unknown config key", max_len=300)
    assert train_main(["configs/demo.yaml", "y" * 200000, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "key.sub=value", max_len=300)


def test_duplicate_yaml_keys_are_an_error(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("base: " + str(REPO / "configs" / "demo.yaml") + "\ntrain:\n  epochs: 3\neval:\n  knn: false\n"
                    "train:\n  batch_size: 4\n")
    assert train_main([str(path), "--dry-run"]) == 2
    _one_line_error(capsys, "duplicate key 'train'", "line 6", "first at line 2")
    with pytest.raises(ConfigError, match="duplicate key 'epochs'"):
        path.write_text("train:\n  epochs: 3\n  epochs: 4\n")
        load_config(str(path))


def test_closest_key_suggestion_still_works(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        load_config("configs/demo.yaml", ["train.epoch=3"])


def test_non_utf8_config(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert train_main([str(path), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "not UTF-8")


@pytest.mark.parametrize("override,needle", [("train.seed=-1", "train.seed"), ("train.seed=5000000000", "train.seed")])
def test_seed_out_of_range(override, needle, tmp_path, capsys):
    assert train_main(["configs/demo.yaml", *TINY, override, "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, needle)


def test_build_cohort_negative_seed(tmp_path, capsys):
    from egan_med import cohort_cli as bc

    npz = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"
    assert bc.main(["--medmnist", str(npz), "--minority", "1", "--seed", "-1", "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "--seed")
    assert not (tmp_path / "c").exists()


def test_cuda_requested_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_main(["configs/demo.yaml", *TINY, "train.device=cuda", "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "train.device=cuda", "no CUDA")
    assert not (tmp_path / "run").exists()


def test_options_after_overrides(tmp_path, capsys):
    # The override after the options must be read (and here rejected for its value), not refused by argparse.
    assert train_main(["configs/demo.yaml", "--out", str(tmp_path / "run"), "train.epochs=0", "--dry-run"]) == 2
    _one_line_error(capsys, "train.epochs=0")
    assert train_main(["configs/demo.yaml", "--dry-run", "train.epochs=2", "data.image_size=32"]) == 0


# --- Ctrl-C ----------------------------------------------------------------------------------------------

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_status_130(tmp_path, capsys, monkeypatch, trained_run):
    monkeypatch.setattr(train_mod, "train", _interrupt)
    assert train_main(["configs/demo.yaml", "--out", str(tmp_path / "run")]) == 130
    _one_line_error(capsys, "interrupted", "resume")
    monkeypatch.setattr(evaluate, "finalize_run", _interrupt)
    assert evaluate.main([str(trained_run)]) == 130
    _one_line_error(capsys, "interrupted")
    monkeypatch.setattr(predict, "predict", _interrupt)
    _pngs(tmp_path / "imgs")
    assert predict.main(["--run", str(trained_run), "--input", str(tmp_path / "imgs"),
                         "--out", str(tmp_path / "s.csv")]) == 130
    _one_line_error(capsys, "interrupted")
    assert not (tmp_path / "s.csv").exists()
    monkeypatch.setattr(export, "export_run", _interrupt)
    assert export.main(["--run", str(trained_run)]) == 130
    _one_line_error(capsys, "interrupted")


# --- evaluate / predict / export with bad checkpoints -------------------------------------------------------

def _damage_checkpoint(run: Path, how: str) -> None:
    path = run / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    if how == "no_D":
        del state["models"]["D"]
    else:  # the weights of one backbone under a config naming another
        state["config"]["model"]["discriminator"] = "efficientnet_b2"
    torch.save(state, path)
    for extra in ("best.pt.prev",):
        (run / "checkpoints" / extra).unlink(missing_ok=True)


def _damage_scorer(run: Path, how: str) -> None:
    """The deployed scorer (what predict and export read), damaged the same two ways."""
    path = run / "deploy" / "scorer.pt"
    blob = torch.load(path, weights_only=True)
    if how == "no_D":
        blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if "components.0." not in k}
    else:
        blob["spec"]["components"][0]["model"]["discriminator"] = "efficientnet_b2"
    torch.save(blob, path)


@pytest.mark.parametrize("how", ["no_D", "backbone"])
def test_bad_checkpoint_is_one_line_everywhere(run_copy, tmp_path, capsys, how):
    _damage_checkpoint(run_copy, how)
    needle = "no 'D' network" if how == "no_D" else "do not fit"
    report = (run_copy / "report.md").read_text()
    assert evaluate.main([str(run_copy)]) == 2
    _one_line_error(capsys, needle)
    assert (run_copy / "report.md").read_text() == report
    _damage_scorer(run_copy, how)
    _pngs(tmp_path / "imgs")
    assert predict.main(["--run", str(run_copy), "--input", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.csv")]) == 2
    _one_line_error(capsys, "do not fit")
    assert not (tmp_path / "s.csv").exists()
    assert export.main(["--run", str(run_copy), "--out", str(tmp_path / "exp")]) == 2
    _one_line_error(capsys, "do not fit")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_evaluate_refuses_non_finite_threshold(run_copy, capsys, value):
    assert evaluate.main([str(run_copy), f"--threshold={value}"]) == 2
    _one_line_error(capsys, "--threshold")
    assert not (run_copy / "evaluations").exists()


def test_export_out_under_a_file(trained_run, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert export.main(["--run", str(trained_run), "--out", str(f / "exp"), "--no-check"]) == 2
    _one_line_error(capsys, "cannot create")


# --- predict inputs and outputs -----------------------------------------------------------------------------

def test_predict_refuses_out_equal_to_an_input(trained_run, tmp_path, capsys):
    imgs = _pngs(tmp_path / "imgs")
    csv = tmp_path / "list" / "files.csv"
    csv.parent.mkdir()
    csv.write_text("Path\n" + "\n".join(str(p) for p in imgs) + "\n")
    cohort = Path(yaml.safe_load((trained_run / "config.yaml").read_text())["data"]["cohort"])
    cases = [(str(csv), str(csv)), (str(imgs[0]), str(imgs[0])), (str(tmp_path / "imgs"), str(imgs[1])),
             (str(cohort), str(cohort)), (str(cohort), str(cohort.parent / "cohort.json"))]
    for source, out in cases:
        before = Path(out).read_bytes()
        assert predict.main(["--run", str(trained_run), "--input", source, "--out", out]) == 2, (source, out)
        _one_line_error(capsys, "is one of the inputs")
        assert Path(out).read_bytes() == before


def test_predict_reads_tif_and_a_single_image(trained_run, tmp_path, capsys):
    _pngs(tmp_path / "imgs", 1, ".png")
    _pngs(tmp_path / "imgs" / "t", 1, ".tif")
    out = tmp_path / "s.csv"
    assert predict.main(["--run", str(trained_run), "--input", str(tmp_path / "imgs"), "--out", str(out)]) == 0
    got = __import__("pandas").read_csv(out)
    assert sorted(Path(p).suffix for p in got["path"]) == [".png", ".tif"] and got["error"].isna().all()
    single = tmp_path / "imgs" / "t" / "img0.tif"
    assert predict.main(["--run", str(trained_run), "--input", str(single), "--out", str(out)]) == 0
    got = __import__("pandas").read_csv(out)
    assert list(got["path"]) == [str(single)] and got["decision"].isin(["minority", "majority"]).all()


def test_one_list_of_image_suffixes():
    from egan_med.cohort.sources import IMAGE_EXTS
    from egan_med.image_formats import IMAGE_SUFFIXES

    assert IMAGE_EXTS == {*IMAGE_SUFFIXES, ""} and ".npy" not in IMAGE_EXTS
    from egan_med.deploy.serve import _is_image

    assert _is_image("a/b.TIF") and _is_image("x.tiff") and not _is_image("x.npy")


@pytest.mark.parametrize("where", ["under_file", "no_permission"])
def test_predict_checks_out_before_scoring(trained_run, tmp_path, capsys, monkeypatch, where):
    _pngs(tmp_path / "imgs")
    monkeypatch.setattr(predict, "predict", lambda *a, **k: pytest.fail("scored before checking --out"))
    if where == "under_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "s.csv"
    else:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(tmp_path / "ro") else real(p, m))
        (tmp_path / "ro").mkdir()
        out = tmp_path / "ro" / "s.csv"
    assert predict.main(["--run", str(trained_run), "--input", str(tmp_path / "imgs"), "--out", str(out)]) == 2
    _one_line_error(capsys, "cannot write --out")


def test_predict_fails_when_no_image_is_readable(trained_run, tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        (tmp_path / "imgs" / f"bad{i}.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "s.csv"
    assert predict.main(["--run", str(trained_run), "--input", str(tmp_path / "imgs"), "--out", str(out)]) == 2
    _one_line_error(capsys, "none of the 2 image(s) could be read", "bad0.png")
    assert not out.exists()


# --- a finished run from another working directory ----------------------------------------------------------

def test_run_evaluates_and_predicts_from_another_working_directory(tmp_path, monkeypatch, capsys):
    from egan_med.cohort import CohortOptions, build

    npz = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"
    work, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    opts = CohortOptions(source="medmnist", input=str(npz), minority="1", train_minority=2, train_majority=16,
                         val_minority=6, val_majority=6, test_minority=6, test_majority=6)
    build(opts, str(work / "cohort"))
    monkeypatch.chdir(work)
    assert train_main([str(REPO / "configs" / "demo.yaml"), "data.cohort=cohort/cohort.csv", *TINY,
                       "train.max_steps_per_epoch=1", "--out", "run"]) == 0
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert evaluate.main([str(work / "run")]) == 0, capsys.readouterr().err[-500:]
    op = json.loads((work / "run" / "operating_point.json").read_text())
    assert np.isfinite(op["threshold"])
    out = elsewhere / "s.csv"
    assert predict.main(["--run", str(work / "run"), "--input", str(work / "cohort" / "cohort.csv"),
                         "--split", "test", "--out", str(out)]) == 0
    assert len(__import__("pandas").read_csv(out)) == 12


def test_train_mode_batchnorm_with_one_minority_image_leaves_nothing_behind(tmp_path, capsys):
    from conftest import build_tiny_cohort

    cohort = build_tiny_cohort(tmp_path / "one", train=(1, 16), val=(4, 4), test=(4, 4))
    out = tmp_path / "run"
    assert train_main(["configs/demo.yaml", f"data.cohort={cohort}", *TINY, "model.train_bn=true",
                       "--out", str(out)]) == 2
    _one_line_error(capsys, "at least 2 minority")
    assert not out.exists()
