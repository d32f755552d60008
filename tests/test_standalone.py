"""The repository stands alone: nothing tracked reaches for a `shared/` folder beside the clone, scripts do not edit
sys.path, tests run commands through their entry functions, and every command has a console entry point."""
from __future__ import annotations

import configparser
import importlib
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["egan_med", "tests", "scripts", "configs", "Makefile", ".ci/run"]
THIS = "tests/test_standalone.py"  # holds the patterns themselves
NAME = "sha" "red"  # the team's data folder; spelled in two parts so that this file never matches its own check
# "../NAME/...", ".../NAME/...", and path joins such as REPO.parent / "NAME" / "data" or join(REPO, "..", "NAME")
SHARED = rf"""\.\./{NAME}|/{NAME}/|["']{NAME}["']\s*/|/\s*["']{NAME}["']|["']\.\.["']\s*,\s*["']{NAME}["']"""


def tracked(*paths: str) -> list[str]:
    """Tracked files under ``paths`` (git ls-files), so untracked scratch never trips a check."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *paths], cwd=REPO, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"git ls-files failed in {REPO}: {exc}")  # a check that cannot look must not pass
    return [f for f in out.decode().split("\0") if f]


def offenders(files: list[str], pattern: str) -> list[str]:
    """``file:line`` of every line of the text files in ``files`` that matches ``pattern``."""
    found = []
    rx = re.compile(pattern)
    for name in files:
        if name == THIS:
            continue
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):  # binary fixtures; a deleted-but-staged file
            continue
        found += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if rx.search(line)]
    return found


def test_nothing_tracked_refers_to_a_shared_folder_beside_the_clone():
    files = tracked(*CHECKED)
    assert "Makefile" in files and "tests/conftest.py" in files and len(files) > 50  # the listing really worked
    assert offenders(files, SHARED) == []


def test_the_check_finds_each_form_of_reference(tmp_path):
    lines = [f'DATA = REPO.parent / "{NAME}" / "data"', f'CSV = "../{NAME}/data/x.csv"', f"ok = '{NAME} memory'",
             f"--folder /work/{NAME}/data/cifar", f"p = os.path.join(REPO, '..', '{NAME}')"]
    (tmp_path / "t.py").write_text("\n".join(lines) + "\n")
    assert offenders([str(tmp_path / "t.py")], SHARED) == [f"{tmp_path / 't.py'}:{i}" for i in (1, 2, 4, 5)]


def test_no_sys_path_edits_and_no_script_loading_by_path():
    files = [f for f in tracked("egan_med", "scripts", "tests") if f.endswith(".py")]
    assert offenders(files, r"sys\.path\.(insert|append)") == []
    tests = [f for f in files if f.startswith("tests/")]
    assert offenders(tests, r"spec_from_file_location|runpy|SourceFileLoader") == []


def test_every_console_entry_point_resolves_to_a_main_taking_argv():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [ln.strip() for ln in cfg["options.entry_points"]["console_scripts"].splitlines() if ln.strip()]
    commands = dict(re.fullmatch(r"(\S+)\s*=\s*(\S+)", ln).groups() for ln in lines)
    assert {"egan-build-cohort", "egan-train", "egan-evaluate", "egan-predict", "egan-export", "egan-cache"} <= set(commands)
    for name, target in commands.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        with pytest.raises(SystemExit) as info:  # --help: argparse prints usage and exits 0
            main(["--help"])
        assert info.value.code == 0, name


def test_build_cohort_script_is_a_thin_wrapper_of_the_package_command(tmp_path, capsys):
    from egan_med import cohort_cli

    text = (REPO / "scripts" / "build_cohort.py").read_text()
    assert "from egan_med.cohort_cli import main" in text and len(text.splitlines()) < 20
    npz = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"
    assert cohort_cli.main(["--medmnist", str(npz), "--minority", "1", "--ratio", "36", "--out", str(tmp_path / "c")]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "c" / "cohort.csv").is_file()


def test_missing_fixtures_fail_loudly_not_silently_empty(tmp_path):
    from conftest import data_file, data_glob

    with pytest.raises(FileNotFoundError, match="test fixture missing"):
        data_file("no_such_folder", "train.csv")
    with pytest.raises(FileNotFoundError, match="matched 0 files, need 1"):
        data_glob(tmp_path, "*/*/*.jpg", 1)
    assert len(data_glob(data_file("cxr_covid_ccby", "train"), "*/*/*.jpg", 24)) == 24


def test_fixtures_are_small_and_each_folder_says_where_it_comes_from():
    files = tracked("tests/data")
    assert sum((REPO / f).stat().st_size for f in files) < 10 * 2**20
    folders = {f.split("/")[2] for f in files if f.count("/") >= 3}
    assert folders == {"cifar10_airplane_automobile", "cxr_covid_ccby", "cxr_samples", "nih_cxr14_labels"}
    for folder in folders:
        text = (REPO / "tests" / "data" / folder / "SOURCE.md").read_text()
        assert "## Origin" in text and "## License" in text, folder
