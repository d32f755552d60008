"""KNNOneClass: its score is the mean distance to the k nearest majority features, computed by hand here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from egan_med.models.knn import KNNOneClass


def _loader(images: torch.Tensor, minority: list[int]):
    items = [{"image": img, "minority": m} for img, m in zip(images, minority)]
    return torch.utils.data.DataLoader(items, batch_size=4)


@pytest.fixture(scope="module")
def knn_and_data():
    torch.manual_seed(0)
    majority = torch.rand(10, 3, 32, 32) * 0.5  # dark, noisy images
    queries = torch.cat([majority[:2], torch.rand(3, 3, 32, 32) * 0.5 + 0.5])  # two exact majority copies, three bright
    knn = KNNOneClass("efficientnet_lite0", "imagenet", k=3).fit(_loader(majority, [0] * 10))
    return knn, majority, queries


def test_score_is_mean_distance_to_k_nearest_majority_features(knn_and_data):
    knn, majority, queries = knn_and_data
    y, score = knn.score(_loader(queries, [0, 0, 1, 1, 1]))
    with torch.no_grad():
        feats_major, feats_query = knn.embed(majority).numpy(), knn.embed(queries).numpy()
    assert np.allclose(np.linalg.norm(feats_major, axis=1), 1.0, atol=1e-5)  # L2-normalised
    dist = np.linalg.norm(feats_query[:, None, :] - feats_major[None, :, :], axis=2)
    expected = np.sort(dist, axis=1)[:, :3].mean(1)
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5)
    assert y.tolist() == [0, 0, 1, 1, 1]


def test_majority_copies_score_lower_than_outliers(knn_and_data):
    knn, _, queries = knn_and_data
    _, score = knn.score(_loader(queries, [0, 0, 1, 1, 1]))
    assert score[:2].max() < score[2:].min()


def test_k_one_gives_zero_for_an_exact_majority_copy(knn_and_data):
    _, majority, queries = knn_and_data
    knn1 = KNNOneClass("efficientnet_lite0", "imagenet", k=1).fit(_loader(majority, [0] * 10))
    _, score = knn1.score(_loader(queries, [0] * 5))
    assert score[:2] == pytest.approx([0.0, 0.0], abs=1e-3) and score[2:].min() > 1e-2


def test_k_is_capped_by_the_majority_size_and_score_needs_fit():
    majority = torch.rand(2, 3, 32, 32)
    knn = KNNOneClass("efficientnet_lite0", "none", k=5)
    with pytest.raises(RuntimeError, match="fit must run"):
        knn.score(_loader(majority, [0, 0]))
    knn.fit(_loader(majority, [0, 0]))
    assert knn.bank.shape[0] == 2
    with torch.no_grad():  # k=5 over 2 majority images: the mean distance to both of them
        q = torch.rand(3, 3, 32, 32)
        both = torch.cdist(knn.embed(q), knn.bank).mean(1)
        assert torch.allclose(knn(q), both, atol=1e-5)


def test_search_reads_the_memory_in_chunks(monkeypatch):
    # 10,000 majority features: no [queries x memory] distance matrix is ever built, and the result is exact.
    import egan_med.models.distances as dist
    import egan_med.models.knn as knn_module

    widest = []
    plain = dist.squared_distances

    def spy(a, b):
        widest.append(b.shape[0])
        return plain(a, b)

    monkeypatch.setattr(dist, "squared_distances", spy)
    monkeypatch.setattr(knn_module, "squared_distances", spy, raising=False)
    g = torch.Generator().manual_seed(0)
    knn = KNNOneClass("efficientnet_lite0", "none", k=4, load=False)
    knn.embed = lambda x: x
    knn.bank = torch.nn.functional.normalize(torch.randn(10_000, 16, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=1)
    got = knn(q)
    assert max(widest) <= dist.BANK_CHUNK
    want = torch.cdist(q, knn.bank).topk(4, largest=False).values.mean(1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
