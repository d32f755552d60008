"""Bad cohort inputs from the issue-14 sweep: missing-like and case-variant labels, --overwrite keeping the user's
files, hostile CIFAR pickles, symlinks out of the data root. Every input is built in tmp_path."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egan_med.cohort import CohortError, CohortOptions, build, load_manifest

from egan_med import cohort_cli as build_cohort

SIZES = {f"{s}_{c}": 1 for s in ("val", "test") for c in ("minority", "majority")}


def _table(tmp_path: Path, labels: list[str]) -> Path:
    """A generic path,label CSV (the builder never opens the images)."""
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"path": [f"img{i:02d}.png" for i in range(len(labels))], "label": labels}).to_csv(csv, index=False)
    return csv


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


MISSING = ["NaN", "N/A", "nan", "null", "None", "NA", ""]


def test_missing_like_labels_are_excluded_not_majority(tmp_path: Path) -> None:
    labels = ["pneumonia"] * 4 + ["normal"] * 8 + MISSING
    csv = _table(tmp_path, labels)
    meta = build(CohortOptions(source="generic", input=str(csv), minority="pneumonia", **SIZES), str(tmp_path / "c"))
    assert meta["counts"]["pool"] == {"minority": 4, "majority": 8}
    assert meta["excluded"]["by_reason"]["no_label"] == len(MISSING)
    excluded = pd.read_csv(tmp_path / "c" / "excluded.csv", keep_default_na=False)
    assert sorted(excluded[excluded.reason == "no_label"].path) == [f"img{i:02d}.png" for i in range(12, len(labels))]
    df, _ = load_manifest(str(tmp_path / "c" / "cohort.csv"))
    assert not set(df.path) & set(excluded.path)
    assert any("majority = every other class (1): normal" in n for n in meta["notes"])


def test_a_class_named_explicitly_is_a_class_even_if_it_looks_missing(tmp_path: Path) -> None:
    csv = _table(tmp_path, ["pneumonia"] * 4 + ["none"] * 6 + ["nan"] * 2)
    meta = build(CohortOptions(source="generic", input=str(csv), minority="pneumonia", majority="none", **SIZES),
                 str(tmp_path / "c"))
    assert meta["counts"]["pool"] == {"minority": 4, "majority": 6}
    assert meta["excluded"]["by_reason"] == {"no_label": 2}


def test_label_differing_from_minority_only_in_case_is_refused(tmp_path: Path, capsys) -> None:
    csv = _table(tmp_path, ["pneumonia"] * 4 + ["Pneumonia"] * 3 + ["normal"] * 8)
    out = tmp_path / "out"
    assert build_cohort.main(["--generic", str(csv), "--minority", "pneumonia", "--out", str(out)]) == 2
    _one_line_error(capsys, "'Pneumonia' (3 row(s))", "--minority 'pneumonia' only in case")
    assert not out.exists()
    # the same for a --majority name
    csv = _table(tmp_path, ["pneumonia"] * 4 + ["Normal"] * 3 + ["normal"] * 8)
    assert build_cohort.main(["--generic", str(csv), "--minority", "pneumonia", "--majority", "normal",
                              "--out", str(out)]) == 2
    _one_line_error(capsys, "'Normal'", "--majority 'normal'")
    assert not out.exists()


def test_majority_lists_classes_and_the_rest_is_excluded(tmp_path: Path) -> None:
    csv = _table(tmp_path, ["pneumonia"] * 4 + ["normal"] * 5 + ["healthy"] * 3 + ["covid"] * 2)
    meta = build(CohortOptions(source="generic", input=str(csv), minority="pneumonia", majority="normal,healthy",
                               **SIZES), str(tmp_path / "c"))
    assert meta["counts"]["pool"] == {"minority": 4, "majority": 8}
    excluded = pd.read_csv(tmp_path / "c" / "excluded.csv")
    assert sorted(excluded[excluded.reason == "other_class"].path) == ["img12.png", "img13.png"]
    with pytest.raises(CohortError, match="both --minority and --majority"):
        build(CohortOptions(source="generic", input=str(csv), minority="normal", majority="normal,healthy"),
              str(tmp_path / "c2"))


def test_overwrite_keeps_the_users_files_and_folders(tmp_path: Path, capsys) -> None:
    csv = _table(tmp_path, ["pneumonia"] * 4 + ["normal"] * 8 + ["other"])
    out = tmp_path / "cohort"
    args = ["--generic", str(csv), "--minority", "pneumonia", "--majority", "normal", "--out", str(out)]
    sizes = [f"--{s}-{c}" for s in ("val", "test") for c in ("minority", "majority")]
    assert build_cohort.main(args + [x for s in sizes for x in (s, "1")]) == 0
    (out / "README.md").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "scan.dcm").write_bytes(b"mine")
    first = (out / "cohort.csv").read_text()
    assert build_cohort.main(args + ["--overwrite", "--seed", "3"] + [x for s in sizes for x in (s, "1")]) == 0
    assert (out / "sub" / "scan.dcm").read_bytes() == b"mine" and (out / "README.md").read_text() == "my notes"
    assert (out / "cohort.csv").read_text() != first  # the cohort itself was replaced
    load_manifest(str(out / "cohort.csv"))
    assert sorted(os.listdir(out)) == ["README.md", "cohort.csv", "cohort.json", "excluded.csv", "sub"]


class _Hostile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def _cifar(folder: Path) -> None:
    """A tiny CIFAR-10 python layout (2 images per class 0/1 per batch file)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / batch, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 0, 1, 1]}, fh,
                        protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird"]}, fh)


def test_cifar_pickles_load_without_running_code(tmp_path: Path, capsys) -> None:
    _cifar(tmp_path / "cifar")
    meta = build(CohortOptions(source="cifar", input=str(tmp_path / "cifar"), minority="airplane",
                               majority="automobile", val_minority=1, val_majority=1), str(tmp_path / "ok"))
    assert meta["counts"]["pool"] == {"minority": 12, "majority": 12}
    meta = build(CohortOptions(source="cifar", input=str(tmp_path / "cifar"), minority="airplane", val_minority=1,
                               val_majority=1), str(tmp_path / "rest"))
    assert "majority = every other class (1): automobile; pass --majority to name them" in meta["notes"]
    for hostile in ({"data": np.zeros((1, 3072), np.uint8), "labels": [_Hostile(tmp_path / "pwned")]},
                    _Hostile(tmp_path / "pwned")):
        with open(tmp_path / "cifar" / "data_batch_1", "wb") as fh:
            pickle.dump(hostile, fh)
        out = tmp_path / "c"
        assert build_cohort.main(["--cifar", str(tmp_path / "cifar"), "--minority", "airplane", "--out", str(out)]) == 2
        _one_line_error(capsys, "data_batch_1 is not a CIFAR pickle", "refused", "system")
        assert not (tmp_path / "pwned").exists() and not out.exists()


def test_symlink_out_of_the_data_root_is_refused(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    (root / "normal").mkdir(parents=True)
    (root / "pneumonia").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    from io import BytesIO

    from PIL import Image

    png = BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")  # real images: the build reads every drawn file's header
    (outside / "secret.png").write_bytes(png.getvalue())
    for i in range(4):
        (root / "normal" / f"n{i}.png").write_bytes(png.getvalue())
        (root / "pneumonia" / f"p{i}.png").write_bytes(png.getvalue())
    (root / "pneumonia" / "p9.png").symlink_to(outside / "secret.png")
    inner = root / "normal" / "link.png"
    inner.symlink_to(root / "normal" / "n0.png")  # a link that stays inside is fine
    out = tmp_path / "c"
    args = ["--folder", str(root), "--minority", "pneumonia", "--out", str(out), "--val-minority", "1",
            "--val-majority", "1", "--test-minority", "1", "--test-majority", "1"]
    assert build_cohort.main(args) == 2
    _one_line_error(capsys, "through a symlink", "pneumonia/p9.png", str(outside))
    assert not out.exists()
    (root / "pneumonia" / "p9.png").unlink()
    (root / "pneumonia" / "sub").symlink_to(outside, target_is_directory=True)  # a linked folder, via a generic CSV
    csv = tmp_path / "data" / "labels.csv"
    pd.DataFrame({"path": ["pneumonia/p0.png", "pneumonia/sub/secret.png", "normal/n0.png", "normal/n1.png"],
                  "label": ["p", "p", "n", "n"]}).to_csv(csv, index=False)
    assert build_cohort.main(["--generic", str(csv), "--minority", "p", "--out", str(out)]) == 2
    _one_line_error(capsys, "through a symlink", "pneumonia/sub/secret.png")
    assert not out.exists()
    (root / "pneumonia" / "sub").unlink()
    assert build_cohort.main(args) == 0  # inside links only: builds
