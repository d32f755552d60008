"""Components a MONAI bundle written by ``python -m egan_med.export --bundle`` names by ``_target_``.

The bundle's ``configs/inference.json`` reads images with egan_med's own reader and evaluation preprocessing
(``LoadRadiographd``, the code ``egan_med.predict`` uses), so a bundle run's scores equal ``predict``'s; it
needs egan_med installed. The network is the TorchScript export of the run's deployed scorer; ``write_scores``
writes one CSV row per image (path, score, decision, threshold), as ``predict`` does.
"""
from __future__ import annotations

import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.transforms import MapTransform

from egan_med.config import config_from_dict
from egan_med.engine.rundir import write_table_atomic


def list_images(folder: str) -> list[dict[str, str]]:
    """The images under ``folder`` exactly as ``egan_med.predict`` finds them (PNG/JPEG/DICOM, recursive).

    Args:
        folder: a directory of images.

    Returns:
        One ``{"image": path, "path": path}`` item per image, sorted by path.
    """
    from egan_med.deploy.serve import list_inputs

    return [{"image": f, "path": f} for f in list_inputs(folder)["file"]]


class LoadRadiographd(MapTransform):
    """Read and preprocess an image path into the run's (C, S, S) float32 input in [0, 1].

    Args:
        keys: the key holding the path (replaced by the tensor).
        data_config: the run's ``data`` config section (image size, channels, kind, ...).
    """

    def __init__(self, keys: str | Sequence[Hashable], data_config: Mapping[str, Any]):
        super().__init__(keys)
        self.cfg = config_from_dict({"data": dict(data_config)})

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from egan_med.deploy.serve import eval_image

        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = eval_image(str(d[key]), self.cfg)
        return d


@torch.no_grad()
def write_scores(network: torch.nn.Module, dataloader, device: str | torch.device, output_file: str,
                 threshold: float) -> str:
    """Score every batch of ``dataloader`` and write the CSV ``egan_med.predict`` writes (less its error column).

    A plain loop rather than a MONAI evaluator: those need pytorch-ignite, which egan_med does not depend on.

    Args:
        network: the bundle's network (a minority score per image; higher = minority).
        dataloader: batches of ``{"image": (N, C, S, S), "path": [N paths]}``.
        device: where to run the network.
        output_file: CSV to write (folders are created; written atomically).
        threshold: the run's operating point on the minority score (minority when score > threshold).

    Returns:
        ``output_file``.
    """
    network = network.to(device).eval()
    paths: list[str] = []
    scores: list[float] = []
    for batch in dataloader:
        paths += [str(p) for p in batch["path"]]
        scores += network(batch["image"].to(device)).float().reshape(-1).cpu().tolist()
    out = pd.DataFrame({"path": paths, "score": np.asarray(scores, dtype=np.float64)})
    out["decision"] = np.where(out["score"] > float(threshold), "minority", "majority")
    out["threshold"] = float(threshold)
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    write_table_atomic(out, output_file)
    return output_file
