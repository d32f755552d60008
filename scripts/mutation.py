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
                                       "tests/test_cohort_inputs.py", "tests/test_cohort_edges.py",
                                       "tests/test_invariants.py"]),
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


# Survivors that no test can kill: the mutant computes the same thing (name -> why). Mutant names are mutmut's
# (function + index) and move when the function changes; re-check this list after editing a mutated module.
_TAKE_ALONG = "numpy >= 2.3 take_along_axis defaults to axis=-1, which is axis 1 of these 2-D arrays"
_NAN = 'float("NAN") is float("nan")'
EQUIVALENT: dict[str, str] = {
    "egan_med.evaluation.metrics.x__auprc_batch__mutmut_8": _TAKE_ALONG,
    "egan_med.evaluation.metrics.x__auroc_batch__mutmut_8": _TAKE_ALONG,
    "egan_med.evaluation.metrics.x__auroc_batch__mutmut_20": _TAKE_ALONG,
    "egan_med.evaluation.metrics.x__auroc_batch__mutmut_21":
        "the term is multiplied by y; the first item of a tie group holding a minority item is always a minority "
        "item (stable sort of [minority, majority]), so (1 - y[start]) is 0 wherever it counts",
    "egan_med.evaluation.metrics.x__check__mutmut_29": "labels as 0.0/1.0 floats: every consumer compares values",
    "egan_med.evaluation.metrics.x_binary_metrics__mutmut_9": "predictions as 0.0/1.0 floats: every consumer "
                                                               "compares values",
    "egan_med.evaluation.metrics.x__nan_unless__mutmut_6": _NAN,
    "egan_med.evaluation.metrics.x__sens_at_spec_point__mutmut_4": _NAN,
    "egan_med.evaluation.metrics.x_bootstrap_ci__mutmut_31": _NAN,
    "egan_med.evaluation.metrics.x_bootstrap_ci__mutmut_34": _NAN,
    "egan_med.evaluation.metrics.x_bootstrap_ci__mutmut_63": "rng.integers(k) is rng.integers(0, k), same draws",
    "egan_med.evaluation.metrics.x_bootstrap_ci__mutmut_71": "rng.integers(k) is rng.integers(0, k), same draws",
    "egan_med.evaluation.metrics.x_bootstrap_ci__mutmut_42":
        "memory-bound chunk size (only differs above 10^6 items): the same number of resamples, drawn from the "
        "same distribution in other chunks; an equally valid bootstrap, not bit-identical",
    **{f"egan_med.evaluation.metrics.x__sens_at_spec_point__mutmut_{i}":
       "scikit-learn's drop_intermediate drops only points inside horizontal or vertical runs of the ROC curve; "
       "the largest tpr at fpr <= limit is always at a corner it keeps" for i in (11, 12)},
    "egan_med.evaluation.thresholds.x__between__mutmut_7": "when mid == lo both branches return lo",
    "egan_med.evaluation.selection.x_as_frame__mutmut_3": "pd.DataFrame(df).copy() equals df.copy()",
    "egan_med.evaluation.selection.x_as_frame__mutmut_27": "numpy accepts sort kinds case-insensitively",
    "egan_med.evaluation.selection.x_is_nash__mutmut_26":
        "gap < limit + 1e-12 and gap <= limit + 1e-12 differ only at exactly limit + 1e-12, which no count "
        "ratio hits",
    "egan_med.evaluation.selection.x_nash_epochs__mutmut_29": "as is_nash: the 1e-12 slack makes < and <= agree",
    "egan_med.evaluation.selection.x_select_epoch__mutmut_79": "as is_nash: the 1e-12 slack makes < and <= agree",
    "egan_med.evaluation.selection.x_nash_epochs__mutmut_18": 'Series.astype(None) is float64, as astype(float)',
    "egan_med.evaluation.selection.x_select_epoch__mutmut_57": 'Series.astype(None) is float64, as astype(float)',
    "egan_med.evaluation.selection.x_select_epoch__mutmut_54":
        "as_frame reset the index, so val.index is the default RangeIndex that pd.Series(array) gets anyway",
    "egan_med.evaluation.selection.x_select_epoch__mutmut_56":
        "as_frame reset the index, so val.index is the default RangeIndex that pd.Series(array) gets anyway",
    **{f"egan_med.data.readers.xǁRadiographDicomReaderǁ__init____mutmut_{i}":
       "swap_ij and prune_metadata are read only by MONAI's PydicomReader.get_data and its helpers, which "
       "RadiographDicomReader.get_data replaces" for i in range(1, 7)},
    **{f"egan_med.data.readers.x__output_range__mutmut_{i}":
       "the fallback when BitsStored is absent is unreachable: pydicom refuses to decode pixel data without "
       "BitsStored (checked with pydicom 3.0.2), and get_data decodes before calling _output_range"
       for i in (4, 6, 11, 12, 13, 14, 15, 16, 17)},
    **{f"egan_med.data.readers.x__output_range__mutmut_{i}":
       "the default when PixelRepresentation is absent is unreachable: pydicom refuses to decode without it"
       for i in (33, 35)},
    **{f"egan_med.data.readers.xǁRadiographDicomReaderǁ_grayscale_to_unit__mutmut_{i}":
       "dtype of an intermediate: the arithmetic that follows is float64 either way" for i in (42, 44, 56, 58)},
    "egan_med.data.readers.xǁRadiographDicomReaderǁ_grayscale_to_unit__mutmut_39":
        "one input past the stored maximum: pydicom maps inputs beyond the LUT to its last entry, so min and max "
        "are unchanged",
    "egan_med.data.readers.xǁ_WritablePILReaderǁget_data__mutmut_3": "always copying: the same values",
    "egan_med.data.readers.x__window__mutmut_4": "float64 instead of float32; load_image casts to float32",
    "egan_med.data.readers.x_to_channels__mutmut_23": "tensordot of float32 arrays is float32 already",
    "egan_med.data.readers.x__unsigned_full_scale__mutmut_21":
        "peak == 65535 with sBIT: the next rule gives 16 bits, 65535, too",
    "egan_med.data.readers.x__unsigned_full_scale__mutmut_22": "a PNG sample cannot exceed 65535",
    "egan_med.data.readers.x__unsigned_full_scale__mutmut_38":
        "the fallback is used only for peaks above 65535, whose depth is at least 17 bits anyway",
    **{f"egan_med.data.readers.x__pil_to_unit__mutmut_{i}":
       "the initial= of min/max on a non-empty image: min(1, m) >= 0 iff m >= 0 when max <= 1 is also required, "
       "max(1, m) <= 1 iff m <= 1, min(1, m) < 0 iff m < 0, and None is no initial at all"
       for i in (26, 27, 30, 31, 36, 37)},
    **{f"egan_med.data.readers.x__pil_to_unit__mutmut_{i}":
       "clipping bounds: arr >= 0 here and the full scale is at least the peak, so arr / scale is in [0, 1]"
       for i in (50, 51, 61)},
    **{f"egan_med.data.readers.x__unsigned_full_scale__mutmut_{i}":
       "initial= of the peak: it differs only for an all-zero image, which is 8-bit either way" for i in (3, 4)},
    **{f"egan_med.data.readers.xǁRadiographDicomReaderǁget_data__mutmut_{i}":
       "a missing NumberOfFrames gives None, and None or 1 is 1" for i in (9, 11)},
    **{f"egan_med.evaluation.selection.x_select_epoch__mutmut_{i}":
       "which row the reason reads the validation class sizes from: every row of a run's history has the same "
       "val_n_minority / val_n_majority (one validation split per run), so any row gives the same text"
       for i in (68, 69, 73, 74)},
}


def report(groups: list[str]) -> str:
    """Markdown: per group the score before/after and every survivor of the latest run, equivalent or open."""
    lines = ["<!-- generated by: .venv/bin/python scripts/mutation.py --report (from .mutation/*.json) -->", "",
             "| group | files | run | mutants | killed | timeout | survived | not run | equivalent | score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    detail = []
    for g in groups:
        before, after = WORK / "before" / f"{g}.json", WORK / f"{g}.json"
        once = not before.exists() or (after.exists() and before.read_text() == after.read_text())
        for label, path in (("before", before), ("once" if once else "after", after)):
            if not path.exists() or (label == "before" and once):
                continue  # a group run once has one row
            r = json.loads(path.read_text())
            st, c = r["stats"], r["status_counts"]
            surv = r["survivors"]
            eq = [n for n in surv if n in EQUIVALENT]  # the same mutants survive before and after
            checked = st.get("killed", 0) + st.get("timeout", 0) + st.get("survived", 0) + st.get("no_tests", 0)
            not_run = st.get("total", 0) - checked
            denom = checked - len(eq)
            score = f"{100 * (st.get('killed', 0) + st.get('timeout', 0)) / denom:.1f}%" if denom else "-"
            lines.append(f"| {g} | {', '.join(r['files'])} | {label}{' (timed out)' if r['timed_out'] else ''} | "
                         f"{st.get('total', 0)} | {st.get('killed', 0)} | {st.get('timeout', 0)} | "
                         f"{st.get('survived', 0) + st.get('no_tests', 0)} | {not_run} | {len(eq)} | {score} |")
            if label in ("after", "once") and surv:
                detail += ["", f"### {g}: {len(surv)} survivor(s) of the latest run", "",
                           "| mutant | change | class |", "|---|---|---|"]
                for n in surv:
                    d = r["diffs"].get(n, "")
                    ch = [ln[1:].strip() for ln in d.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
                    change = " → ".join(ch)[:220].replace("|", "\\|")
                    cls = f"equivalent: {EQUIVALENT[n]}" if n in EQUIVALENT else "open"
                    detail.append(f"| `{n.split('.')[-1]}` | `{change}` | {cls} |")
    return "\n".join(lines + detail) + "\n"


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
    p.add_argument("--report", metavar="MD", help="write the score table and survivors of earlier runs to MD")
    a = p.parse_args(argv)
    if a.list:
        print("\n".join(f"{g}: {', '.join(f)} <- {', '.join(t)}" for g, (f, t) in GROUPS.items()))
        return 0
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        p.error(f"unknown group(s) {unknown}; known: {list(GROUPS)}")
    if a.report:
        Path(a.report).write_text(report(a.groups or list(GROUPS)))
        return 0
    for g in a.groups or list(GROUPS):
        r = collect(g) if a.collect else run(g, a.max_children, a.timeout)
        c = r["status_counts"]
        print(f"{g}: {c} in {r['wall_s']} s{' (TIMED OUT)' if r['timed_out'] else ''}; "
              f"{len(r['survivors'])} survivor(s) -> .mutation/{g}.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
