"""data.on_bad_image=skip that leaves a split without one of its classes: one line, exit 2, no run directory
(issue 14: it was a traceback after the run directory had been created). Inputs are synthetic, in tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from egan_med.cohort import CohortOptions, build
from egan_med.train import main as train_main


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """6 minority and 12 majority 32 px PNGs, one patient each; 2+4 of them in each split."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(18):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
        rows.append({"path": f"{i:02d}.png", "label": "pneumonia" if i % 3 == 0 else "normal", "patient": f"p{i}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    sizes = {f"{s}_{c}": n for s in ("val", "test") for c, n in (("minority", 2), ("majority", 4))}
    build(CohortOptions(source="generic", input=str(tmp_path / "labels.csv"), minority="pneumonia", **sizes),
          str(tmp_path / "cohort"))
    return tmp_path / "cohort" / "cohort.csv"


@pytest.mark.parametrize("split", ["train", "val"])
def test_skip_that_leaves_no_minority_image_is_one_line(cohort: Path, tmp_path: Path, capsys, split: str) -> None:
    df = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    victims = df[(df.split == split) & (df.minority == "1")].path
    for p in victims:
        (tmp_path / p).write_bytes(b"not an image")
    out = tmp_path / "run"
    argv = ["configs/demo.yaml", f"data.cohort={cohort}", "data.on_bad_image=skip", "eval.baseline=false",
            "eval.knn=false", "train.epochs=1", "--out", str(out)]
    assert train_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("error: ") and f"{split} split" in err[-1] and "minority" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()
