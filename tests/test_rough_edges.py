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
