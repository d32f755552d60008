"""Mutation testing (mutmut 3), one module group at a time, each with only the fast tests that cover it.

``make mutation`` (outside CI). For each group below this copies the package, tests, configs and scripts into
``.mutation/<group>/`` (git-ignored), writes a ``[tool.mutmut]`` section there that mutates only that group's
files and collects/runs only its test files (``-m "not slow"``; mutmut then runs, per mutant, only the tests
that reached the mutated function), runs ``mutmut run``, and writes ``.mutation/<group>.json`` with the
counts and the surviving mutants. docs/MUTATION.md records the scores and classifies every survivor.

    .venv/bin/python scripts/mutation.py                 # every group
    .venv/bin/python scripts/mutation.py metrics cohort  # some groups
    .venv/bin/python scripts/mutation.py --list          # the groups
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutation"
# The tests of test_invariants.py that train a tiny run (~10 s each time a mutant reaches training code):
# they guard the run's files, not these modules' logic, which the unit tests below exercise directly.
TRAINING = [f"tests/test_invariants.py::{t}" for t in (
    "test_every_report_row_matches_the_auroc_and_confusion_of_its_stored_scores",
    "test_report_csv_rows_equal_report_json_rows",
    "test_metrics_csv_equals_a_recomputation_from_epoch_scores",
    "test_every_report_interval_has_width_where_its_metric_can_move")]

# group -> (files to mutate, test files that cover them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "metrics": (["egan_med/evaluation/metrics.py"],
                ["tests/test_metrics.py", "tests/test_metrics_edges.py", "tests/test_metric_registry.py",
                 "tests/test_invariants.py"]),
    "thresholds": (["egan_med/evaluation/thresholds.py"],
                   ["tests/test_metrics.py", "tests/test_thresholds_edges.py", "tests/test_invariants.py"]),
    "selection": (["egan_med/evaluation/selection.py"],
                  ["tests/test_selection.py", "tests/test_selection_edges.py"]),
    "cohort": (["egan_med/cohort/*"], ["tests/test_cohort.py", "tests/test_cohort_errors.py",
                                       "tests/test_cohort_inputs.py", "tests/test_invariants.py"]),
    "readers": (["egan_med/data/readers.py"], ["tests/test_data_readers.py", "tests/test_readers_edges.py",
                                               "tests/test_bit_depth.py", "tests/test_image_suffixes.py",
                                               "tests/test_invariants.py"]),
}
COPY = ["egan_med", "tests", "configs", "scripts", "cohorts", "setup.cfg", "README.md", "Makefile", "docs"]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(group: str) -> Path:
    files, tests = GROUPS[group]
    work = WORK / group
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, work / name)
    args = ["-m", "not slow", "-p", "no:cacheprovider", *tests, *[f"--deselect={t}" for t in TRAINING]]
    (work / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text() + "\n[tool.mutmut]\n"
        f'source_paths = ["egan_med"]\nonly_mutate = {_toml_list(files)}\n'
        f"also_copy = {_toml_list(COPY)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(args)}\n"
        "use_git_change_detection = false\n")
    return work


# The diff of each survivor, in one process (``mutmut show`` per mutant costs a second of imports each).
_DIFFS = ("import json, sys\nfrom mutmut.mutation.diff_apply import get_diff_for_mutant\n"
          "print(json.dumps({n: get_diff_for_mutant(n) for n in sys.argv[1:]}))")


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run(group: str, max_children: int, timeout: float) -> dict:
    work = prepare(group)
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([_mutmut(), "run", "--max-children", str(max_children)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=timeout)
        timed_out, rc, tail = False, proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        timed_out, rc = True, None
        tail = ((exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace"))[-3000:]
    return collect(group, time.time() - t0, timed_out, rc, tail)


def collect(group: str, wall: float = math.nan, timed_out: bool = False, rc: int | None = None,
            tail: str = "") -> dict:
    """Read a finished (or interrupted) ``mutmut run`` of ``group`` into .mutation/<group>.json."""
    work = WORK / group
    subprocess.run([_mutmut(), "export-cicd-stats"], cwd=work, capture_output=True, text=True)
    stats_path = work / "mutants" / "mutmut-cicd-stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    res = subprocess.run([_mutmut(), "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    status: dict[str, str] = {}
    for line in res.splitlines():
        if ":" in line:
            name, state = line.rsplit(":", 1)
            status[name.strip()] = state.strip()
    survivors = sorted(n for n, s in status.items() if s in ("survived", "no tests"))
    diffs = json.loads(subprocess.run([sys.executable, "-c", _DIFFS, *survivors], cwd=work, capture_output=True,
                                      text=True).stdout or "{}") if survivors else {}
    out = {"group": group, "files": GROUPS[group][0], "tests": GROUPS[group][1], "wall_s": round(wall, 1),
           "timed_out": timed_out, "rc": rc, "stats": stats, "status_counts": _counts(status),
           "survivors": survivors, "diffs": diffs, "tail": tail}
    (WORK / f"{group}.json").write_text(json.dumps(out, indent=2))
    return out


def _counts(status: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("groups", nargs="*", help=f"some of {', '.join(GROUPS)} (default: all)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per group")
    p.add_argument("--collect", action="store_true", help="only re-read the results of earlier runs")
    a = p.parse_args(argv)
    if a.list:
        print("\n".join(f"{g}: {', '.join(f)} <- {', '.join(t)}" for g, (f, t) in GROUPS.items()))
        return 0
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {unknown}; known: {list(GROUPS)}")
    for g in a.groups or list(GROUPS):
        r = collect(g) if a.collect else run(g, a.max_children, a.timeout)
        c = r["status_counts"]
        print(f"{g}: {c} in {r['wall_s']} s{' (TIMED OUT)' if r['timed_out'] else ''}; "
              f"{len(r['survivors'])} survivor(s) -> .mutation/{g}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
