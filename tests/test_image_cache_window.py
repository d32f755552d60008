"""The image cache decodes through a bounded window of futures: memory while filling does not grow with N."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import egan_med.data.cache as cache
from egan_med.config import DataConfig


def test_decode_keeps_a_bounded_number_of_futures_in_flight(monkeypatch):
    counts = {"submitted": 0, "yielded": 0, "worst": 0}

    class Counting(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            counts["submitted"] += 1
            return super().submit(*args, **kwargs)

    def bar(results, **_):
        for r in results:
            counts["worst"] = max(counts["worst"], counts["submitted"] - counts["yielded"])
            counts["yielded"] += 1
            yield r

    monkeypatch.setattr(cache, "ThreadPoolExecutor", Counting)
    monkeypatch.setattr(cache, "tqdm", bar)
    monkeypatch.setattr(cache, "preprocess", lambda path, cfg: int(path))
    n = 5000
    images = np.zeros((n, 1, 1, 1), np.uint8)
    failures = cache._fill(images, [str(i % 200) for i in range(n)], DataConfig(num_workers=0), True, "test")
    assert failures == [] and counts["yielded"] == n
    assert images[:, 0, 0, 0].tolist() == [i % 200 for i in range(n)]  # every row, in order
    assert counts["worst"] <= 1024  # Executor.map over all rows had all 5,000 in flight
