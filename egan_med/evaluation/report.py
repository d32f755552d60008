"""A Table 6-style report: one row per model, written as report.md, report.csv and report.json."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from egan_med.evaluation import metrics as registry  # report_row has an argument named metrics
from egan_med.io import fmt_interval, write_text
from egan_med.evaluation.metrics import binary_metrics

_COUNT_KEYS = ("train_minority", "train_majority", "test_minority", "test_majority")


def _md_metrics() -> list[tuple[str, str]]:
    """(name, label) of report.md's metric columns, read from the registry at call time."""
    return [(m.name, m.label) for m in registry.METRICS if m.in_report]


def _ratio(minority: int, majority: int) -> str:
    return f"1:{round(majority / minority)}" if minority > 0 else "n/a"


def report_row(
    model: str,
    counts: Mapping[str, int],
    operating_point: str,
    threshold: float,
    metrics: Mapping[str, Any],
    ci: Mapping[str, tuple[float, float]] | None,
    selection: str,
) -> dict:
    """One flat row of the report.

    Args:
        model: row label, e.g. "eGAN".
        counts: train_minority, train_majority, test_minority, test_majority.
        operating_point: the rule that set the threshold (logit0 | sensitivity | specificity ...).
        threshold: the threshold applied to the minority score.
        metrics: binary_metrics() on the test split at that threshold.
        ci: bootstrap_ci() on the same data, or None (CI columns are then NaN).
        selection: how the epoch was chosen (a Selection's reason).

    Returns:
        dict with model, the four counts, ratio ("1:36", training majority per minority),
        operating_point, threshold, selection, spec_target, every METRIC_NAMES entry with
        ``_lo``/``_hi`` columns, and tp, fp, tn, fn.
    """
    missing = [k for k in _COUNT_KEYS if k not in counts]
    if missing:
        raise ValueError(f"counts lacks {missing}")
    row: dict[str, Any] = {"model": model, **{k: int(counts[k]) for k in _COUNT_KEYS}}
    row.update(
        ratio=_ratio(row["train_minority"], row["train_majority"]),
        operating_point=operating_point, threshold=float(threshold), selection=selection,
        spec_target=float(metrics.get("spec_target", 0.9)),
    )
    for name in registry.METRIC_NAMES:
        row[name] = float(metrics[name])
        lo, hi = ci[name] if ci is not None and name in ci else (math.nan, math.nan)
        row[f"{name}_lo"], row[f"{name}_hi"] = float(lo), float(hi)
    # None where no single confusion matrix exists (the per-metric maxima row).
    row.update({k: None if _missing(metrics.get(k)) else int(metrics[k]) for k in ("tp", "fp", "tn", "fn")})
    return row


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def paper_protocol_rows(history: pd.DataFrame, label: str, counts: Mapping[str, int]) -> list[dict]:
    """The paper's optimistic numbers, chosen on the TEST split, both ways (at its rule, logit < 0).

    The paper's table reports each metric's maximum over epochs, possibly from different epochs;
    one epoch's precision and recall are not comparable to that. So two rows:
    "<label>, optimistic (paper protocol)" is one model (the best test-F1 epoch, every metric from it);
    "<label>, optimistic per-metric maxima (paper's table)" is the paper's way, no single model.

    Args:
        history: metrics.csv, one row per epoch with ``test_<metric>`` and count columns.
        label: the model's row label, e.g. "eGAN".
        counts: the report's count columns.

    Returns:
        The two report rows.
    """
    from egan_med.evaluation.selection import select_epoch_paper_protocol

    paper = select_epoch_paper_protocol(history, "test_f1")
    at = history[history.epoch == paper.epoch].iloc[0]
    m = {k: at.get(f"test_{k}", math.nan) for k in registry.METRIC_NAMES}
    m.update(tp=at.test_correct_minority, tn=at.test_correct_majority,
             fn=at.test_n_minority - at.test_correct_minority, fp=at.test_n_majority - at.test_correct_majority)
    why = f"{paper.reason}; one model: every metric from that epoch (the paper's table takes per-metric maxima)"
    rows = [report_row(f"{label}, optimistic (paper protocol)", counts, "logit < 0 (paper)", 0.0, m, None, why)]
    maxima, best = {}, []
    for k in registry.METRIC_NAMES:
        col = history.get(f"test_{k}")
        ok = col is not None and col.notna().any()
        maxima[k] = float(col.max()) if ok else math.nan
        if ok:
            best.append(f"{k} {int(history.epoch[col.idxmax()])}")
    why = (f"optimistic, the paper's way: each metric's maximum over {len(history)} epochs on the test split, "
           f"each from its own epoch ({', '.join(best)}); no single model reaches this row")
    rows.append(report_row(f"{label}, optimistic per-metric maxima (paper's table)", counts, "logit < 0 (paper)",
                           0.0, maxima, None, why))
    return rows


def trivial_rows(y_test, counts: Mapping[str, int], spec_target: float = 0.9) -> list[dict]:
    """The "all minority" and "all majority" rows (constant scores, so AUROC 0.5).

    "All minority" is Table 6's baseline row (0.50 / 1.00 / 0.67 on 1000 + 1000).
    """
    y = np.asarray(y_test).ravel()
    rows = []
    for name, score in (("all minority", 1.0), ("all majority", -1.0)):
        m = binary_metrics(y, np.full(y.shape, score), threshold=0.0, spec_target=spec_target)
        rows.append(report_row(name, counts, "constant", 0.0, m, None, "-"))
    return rows


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _count_keys(split: str) -> tuple[str, ...]:
    """The count columns of a report on ``split`` (test_minority ... for test, val_minority ... for val)."""
    return tuple(k.replace("test_", f"{split}_") for k in _COUNT_KEYS)


# What a deployment does: recall, specificity and precision at the threshold chosen on validation, first.
PROTOCOL_COLUMNS = (("recall", "Recall"), ("specificity", "Specificity"), ("precision", "Precision"), ("f1", "F1"),
                    ("auroc", "AUROC"), ("sens_at_spec", "Sens@90%Spec read off the test ROC (not deployable)"))


def _protocol_markdown(rows: Sequence[Mapping], header: Sequence[str], deployed: Mapping | None = None,
                       spread: Sequence[Mapping] = ()) -> list[str]:
    """The label-budget section: every detector under each protocol, epoch and threshold chosen under it."""
    lines = ["## Label budget: realistic and generous selection", "", *header, ""]
    if deployed:
        lines += [f"**Deployed: {deployed['detector']}** ({deployed['protocol']} protocol, threshold "
                  f"{deployed['threshold']:.4g} set on {deployed['val_minority']} validation positives and "
                  f"{deployed['val_majority']} validation majority images): what `predict`, the export and the bundle "
                  "score with. Its row below is scored by the saved scorer itself.", ""]
    lines += ["| Protocol | val positives used | Model | epoch | operating point | "
              + " | ".join(label for _, label in PROTOCOL_COLUMNS) + " |", "|" + "---|" * (5 + len(PROTOCOL_COLUMNS))]
    for r in rows:
        epoch = "-" if r.get("epoch", -1) < 0 else str(r["epoch"])
        op = f"{r['operating_point']} (t={r['threshold']:.3g})"
        model = r["model"] + (" (deployed)" if deployed and r["model"] == deployed["detector"]
                              and r["protocol"] == deployed["protocol"] else "")
        cells = [r["protocol"], r["val_minority_used"], model, epoch, op,
                 *(fmt_interval(r[k], r.get(f"{k}_lo"), r.get(f"{k}_hi")) for k, _ in PROTOCOL_COLUMNS)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "Recall, specificity, precision and F1 are at the threshold chosen on validation: what a deployed "
              "detector does. The last column reads sensitivity off the test ROC at 90% test specificity, a "
              "threshold no user could have set; it compares rankings, not deployments.", "",
              "Selection per row: " + "; ".join(sorted({f"{r['model']}: {r['selection'].split(' on ')[0]}"
                                                       for r in rows if r["protocol"] == rows[0]["protocol"]})), ""]
    if spread:
        n = spread[0]["draws"]
        lines += [f"### Spread over {n} draws of the budgeted validation positives", "",
                  f"The realistic protocol re-run {n} times, each on another seeded handful of validation positives "
                  "(same size, every validation majority image kept): median [5th, 95th percentile] on test.", "",
                  "| Model | AUROC | Recall | Specificity | Precision |", "|---|---|---|---|---|"]
        for e in spread:
            cells = [e["model"], *(f"{e[f'{k}_median']:.3f} [{e[f'{k}_p5']:.3f}, {e[f'{k}_p95']:.3f}]"
                                   for k in ("auroc", "recall", "specificity", "precision"))]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    return lines


def _markdown(rows: Sequence[Mapping], title: str, notes: Sequence[str], split: str = "test",
              warnings: Sequence[str] = (), header: Sequence[str] = (),
              protocol_rows: Sequence[Mapping] = (), deployed: Mapping | None = None,
              spread: Sequence[Mapping] = ()) -> str:
    targets = {round(100 * float(r.get("spec_target", 0.9))) for r in rows}
    spec = f"{targets.pop()}" if len(targets) == 1 else "?"
    headers = ["Model", "#train minor", "#train major", f"#{split} minor", f"#{split} major", "ratio",
               "operating point"] + [h.format(spec=spec) for _, h in _md_metrics()]
    lines = [f"# {title}", ""] + [f"**Warning: {w}**\n" for w in warnings]
    if protocol_rows:
        lines += _protocol_markdown(protocol_rows, header, deployed, spread)
        lines += ["## Checkpoint rows (selected on every validation positive) and the paper's optimistic rows", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        op = r["operating_point"] if r["operating_point"] == "constant" \
            else f"{r['operating_point']} (t={r['threshold']:.3g})"
        cells = [r["model"], *(r[k] for k in _count_keys(split)), r["ratio"], op]
        cells += [fmt_interval(r[k], r.get(f"{k}_lo"), r.get(f"{k}_hi")) for k, _ in _md_metrics()]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", "Predicted minority when the minority score s = -logit exceeds t. In brackets: "
              "percentile bootstrap interval, resampled within each class.", ""]
    selections = [f"- {r['model']}: {r['selection']}" for r in rows if r.get("selection", "-") != "-"]
    if selections:
        lines += ["## Epoch selection", "", *selections, ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    # JSON has no NaN: write null rather than the invalid token NaN.
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(run_dir: str, rows: Sequence[Mapping], title: str, notes: Sequence[str], split: str = "test",
                 warnings: Sequence[str] = (), header: Sequence[str] = (),
                 protocol_rows: Sequence[Mapping] = (), deployed: Mapping | None = None,
                 spread: Sequence[Mapping] = ()) -> None:
    """Write report.md, report.csv and report.json into ``run_dir``, each atomically.

    Args:
        run_dir: output folder (created if missing).
        rows: report_row() / trivial_rows() dicts.
        title: heading of report.md and "title" of report.json.
        notes: caveats shown under the table and stored in report.json.
        split: the split the rows were measured on; its name labels the count columns.
        warnings: problems that change how to read every number (e.g. pretraining leakage): shown under
            the title of report.md and stored as report.json's "warnings".
        header: the label-budget lines (``budget.budget_header``), shown above everything.
        protocol_rows: ``budget.protocol_rows`` (every detector under each protocol), as a first section.
        deployed: what the run deploys (operating_point.json's content), named above the protocol table.
        spread: ``budget.budget_spread``: the realistic protocol over many draws of validation positives.
    """
    os.makedirs(run_dir, exist_ok=True)
    names = dict(zip(_COUNT_KEYS, _count_keys(split)))
    rows = [{names.get(k, k): v for k, v in r.items()} for r in rows]
    write_text(os.path.join(run_dir, "report.md"),
               _markdown(rows, title, notes, split, warnings, header, protocol_rows, deployed, spread))
    write_text(os.path.join(run_dir, "report.csv"), pd.DataFrame(rows).to_csv(index=False))
    payload = {"title": title, "split": split, "warnings": list(warnings), "rows": rows, "notes": list(notes)}
    if protocol_rows:
        payload.update(label_budget=list(header), protocol_rows=[dict(r) for r in protocol_rows])
    if deployed:
        payload["deployed"] = dict(deployed)
    if spread:
        payload["budget_spread"] = [dict(e) for e in spread]
    write_text(os.path.join(run_dir, "report.json"),
                  json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
