"""The README's config reference is the config's own: every key, default and meaning, in order."""
from __future__ import annotations

from pathlib import Path

from egan_med.config import reference_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_matches_the_dataclasses():
    readme_rows = [line for line in README.read_text(encoding="utf-8").splitlines()
                   if line.startswith(("| `data.", "| `model.", "| `train.", "| `eval."))]
    # Regenerate with: python -m egan_med.config
    assert readme_rows == reference_table().splitlines()
