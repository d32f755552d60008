"""Plant each issue-26 bug, run the invariant test(s) that guard it, record the result, revert (git checkout).

Run from the repository root: .venv/bin/python scripts/plant_bugs.py [name-substring ...]. A plant whose
text no longer matches the source stops with an AssertionError: update it with the code it guards.
"""
import subprocess, sys
PLANTS = [
 ("report row from logit (checkpoint row)", "egan_med/deploy/finalize.py",
  "rows = [_row(label, counts, rule, target, thr, y_rep, -logit_rep,", "rows = [_row(label, counts, rule, target, thr, y_rep, logit_rep,",
  "test_every_report_row_matches"),
 ("report row from logit (budget._row)", "egan_med/evaluation/budget.py",
  "m = metrics.binary_metrics(y_test, s_test, thr)", "m = metrics.binary_metrics(y_test, -s_test, thr)",
  "test_every_report_row_matches"),
 ("metrics.csv AUROC wrong sign", "egan_med/train.py",
  'row = {f"{prefix}_{k}": m[k] for k in metrics.METRIC_NAMES + metrics.COUNT_NAMES}',
  'm["auroc"] = metrics.binary_metrics(y, logits)["auroc"]; row = {f"{prefix}_{k}": m[k] for k in metrics.METRIC_NAMES + metrics.COUNT_NAMES}',
  "test_metrics_csv_equals"),
 ("bootstrap resamples the minority only", "egan_med/evaluation/metrics.py",
  "i_maj = rng.integers(0, s_maj.size, size=(b, s_maj.size))", "i_maj = np.tile(np.arange(s_maj.size), (b, 1))",
  "test_bootstrap_resamples_both_classes or test_every_report_interval"),
 ("fusion ranks test against test", "egan_med/evaluation/budget.py",
  "rank_normalise(ref[k], t) for k, (_, t) in components.items()", "rank_normalise(t, t) for k, (_, t) in components.items()",
  "test_fusion_ranks"),
 ("export self-check never raises", "egan_med/export.py",
  "    if bad:\n        raise ExportError", "    if False:\n        raise ExportError", "test_export_self_check"),
 ("chexpert study takes its last image's label", "egan_med/cohort/sources.py",
  "np.maximum.at(agg, scode, img)", "agg[scode] = img", "test_chexpert_study_label"),
 ("VOI LUT own range ignored", "egan_med/data/readers.py",
  "            if has_lut:  # the LUT's own output range", "            if False:  # the LUT's own output range", "test_dicom_voi_lut_with"),
 ("MONOCHROME inverted the wrong way", "egan_med/data/readers.py",
  'invert=photometric == "MONOCHROME1"', 'invert=photometric == "MONOCHROME2"', "test_dicom_monochrome1_is_inverted_against"),
 # The deploy invariants (tests/test_deploy.py): what is deployed is the budgeted validation choice.
 ("deployed epochs from the generous protocol", "egan_med/deploy/assemble.py",
  "proto = section.deploy_protocol", 'proto = "generous"', "budgeted_choice and (egan or fusion_weighted)",
  "tests/test_deploy.py"),
 ("operating point fitted on the reported split", "egan_med/deploy/finalize.py",
  "thresholds.operating_threshold(rule, y_val, s_val, cfg.eval.target)",
  "thresholds.operating_threshold(rule, y_test, s_test, cfg.eval.target)", "budgeted_choice and (egan or knn)",
  "tests/test_deploy.py"),
 ("fusion references from the whole validation split", "egan_med/evaluation/budget.py",
  "ref = {k: (v if mask is None else v[mask])", "ref = {k: (v if True else v[mask])", "budgeted_choice and fusion_mean",
  "tests/test_deploy.py"),
 ("best.pt chosen on the test split", "egan_med/train.py",
  "chosen = selection.select_epoch(history, cfg.eval.select, cfg.eval.nash_threshold)",
  'chosen = selection.select_epoch_paper_protocol(history, "test_f1")', "best_checkpoint", "tests/test_deploy.py"),
]
only = sys.argv[1:]
for name, path, old, new, k, *where in PLANTS:
    if only and not any(o in name for o in only):
        continue
    src = open(path).read()
    assert src.count(old) == 1, (name, src.count(old))
    open(path, "w").write(src.replace(old, new))
    try:
        r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *(where or ["tests/test_invariants.py"]), "-k", k],
                           capture_output=True, text=True)
        last = [l for l in r.stdout.splitlines() if l.strip()][-1]
        failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
        print(f"{'CAUGHT ' if r.returncode == 1 else 'MISSED '} {name}: {last}")
        for f in failed: print("    ", f[:160])
    finally:
        subprocess.run(["git", "checkout", "--", path], check=True)
