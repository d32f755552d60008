"""The cohort as the trainer sees it: the manifest cut into train majority/minority, val and test."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from egan_med.config import Config, ConfigError
from egan_med.cohort import load_manifest


@dataclass
class CohortSplits:
    """Manifest rows per role, and the folder their paths are relative to."""

    root: str
    train_majority: pd.DataFrame
    train_minority: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    meta: dict

    def sizes(self) -> dict[str, tuple[int, int]]:
        """(minority, majority) per split."""
        out = {"train": (len(self.train_minority), len(self.train_majority))}
        for s in ("val", "test"):
            df = getattr(self, s)
            out[s] = (int((df.minority == 1).sum()), int((df.minority == 0).sum()))
        return out

    def counts(self) -> dict[str, int]:
        """The count columns of a Table 6 row."""
        s = self.sizes()
        return {"train_minority": s["train"][0], "train_majority": s["train"][1],
                "test_minority": s["test"][0], "test_majority": s["test"][1]}


def load_splits(cfg: Config) -> CohortSplits:
    """Read ``cfg.data.cohort`` and select the configured fold.

    Raises:
        ConfigError: a split is empty, the fold does not exist, or the cohort has folds and none is chosen.
    """
    df, meta = load_manifest(cfg.data.cohort, cfg.data.root)
    train = df[df.split == "train"]
    minority = train[train.minority == 1]
    folds = sorted(int(f) for f in minority.fold.unique() if int(f) >= 0)
    if cfg.data.fold >= 0:
        if cfg.data.fold not in folds:
            raise ConfigError(f"data.fold={cfg.data.fold}: the cohort has folds {folds or 'none'}")
        minority = minority[minority.fold == cfg.data.fold]
    elif len(folds) > 1:
        # Every fold's minority at once would train at another ratio than the one the cohort is named for.
        ratio = round(int((train.minority == 0).sum()) / max(len(minority), 1))
        raise ConfigError(f"data.fold: cohort {cfg.data.cohort} has {len(folds)} minority folds; set data.fold to one "
                          f"of {folds} (all folds together would train at 1:{ratio}, not the cohort's ratio)")
    parts = {"train_majority": train[train.minority == 0], "train_minority": minority,
             "val": df[df.split == "val"], "test": df[df.split == "test"]}
    for name, part in parts.items():
        if len(part) == 0:
            raise ConfigError(f"cohort {cfg.data.cohort} has no {name.replace('_', ' ')} images")
    return CohortSplits(root=meta["root"], meta=meta, **{k: v.reset_index(drop=True) for k, v in parts.items()})
