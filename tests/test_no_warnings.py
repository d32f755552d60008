"""Decoding and loading images prints no warnings (issue 14: every training error was preceded by MONAI's
two-line "non-writable NumPy array" warning). torch warns once per process, so each check is a fresh one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = """
import sys, pandas as pd
from egan_med.config import DataConfig
from egan_med.data import make_dataset
from egan_med.data.readers import load_image
for p in sys.argv[1:]:
    load_image(p)
df = pd.DataFrame({"path": sys.argv[1:], "minority": [0] * (len(sys.argv) - 2) + [1]})
ds = make_dataset(df, "/", DataConfig(image_size=16, num_workers=1), train=True)
print(ds[0]["image"].shape)
"""


def test_decoding_and_loading_print_no_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "rgb.jpg")
    Image.fromarray(rng.integers(0, 4095, (20, 20), dtype=np.uint16)).save(tmp_path / "deep.png")
    files = [str(tmp_path / f) for f in ("gray.png", "rgb.jpg", "deep.png")]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *files], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([3, 16, 16])" in proc.stdout or "torch.Size([1, 16, 16])" in proc.stdout
    assert "not writable" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-2000:]
