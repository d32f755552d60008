"""CheXpert reading paths the partial mutation run of cohort/ (docs/MUTATION.md) found untested: the default
uncertainty policy and a gzipped CSV."""
from __future__ import annotations

import gzip
from pathlib import Path

from egan_med.cohort import CohortOptions
from egan_med.cohort.sources import read_source

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Pneumonia"
ROWS = [("patient00001/study1/view1_frontal.jpg", "1.0"), ("patient00002/study1/view1_frontal.jpg", "-1.0"),
        ("patient00003/study1/view1_frontal.jpg", "0.0"), ("patient00004/study1/view1_frontal.jpg", "")]


def _csv(path: Path, gz: bool = False) -> Path:
    text = "\n".join([HEADER] + [f"CheXpert-v1.0-small/train/{p},Female,50,Frontal,AP,,{lab}" for p, lab in ROWS]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def _table(t) -> dict[str, int]:
    return {p.split("/train/")[1].split("/")[0]: int(m) for p, m in zip(t.path, t.minority)}


def test_default_uncertainty_policy_is_ignore(tmp_path):
    csv = _csv(tmp_path / "CheXpert-v1.0-small" / "train.csv")
    default = read_source(CohortOptions(input=str(csv)))
    assert _table(default) == _table(read_source(CohortOptions(input=str(csv), uncertain="ignore")))
    assert _table(default) == {"patient00001": 1, "patient00003": 0, "patient00004": 0}  # uncertain dropped


def test_gzipped_csv_reads_as_the_plain_one(tmp_path):
    plain = read_source(CohortOptions(input=str(_csv(tmp_path / "a" / "CheXpert-v1.0-small" / "train.csv"))))
    gz = read_source(CohortOptions(input=str(_csv(tmp_path / "b" / "CheXpert-v1.0-small" / "train.csv.gz", gz=True))))
    assert _table(gz) == _table(plain) and list(gz.path) == list(plain.path)
