"""Transform chains, seeded augmentation, datasets, loaders and the persistent cache, on real images."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from egan_med.config import DataConfig
from egan_med.data import BadImageError, make_dataset, make_loader, save_augmentation_grid
from egan_med.data.cache import build_store
from egan_med.data.transforms import augment_item, build_augment, item_seed, preprocess

from conftest import BUNDLED_NPZ, data_file, data_glob

CXR = data_glob(data_file("cxr_covid_ccby", "train"), "*/*/*.jpg", 6)  # raises at import if the fixtures are gone
NPZ_ROOT = BUNDLED_NPZ.parent  # the npz the package ships: tests address it relative to this root
NPZ_REL = BUNDLED_NPZ.name


def npz_manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"{NPZ_REL}#train/{i}" for i in range(n)], "minority": [i % 3 == 0 for i in range(n)],
                         "split": "train", "fold": 0, "patient": range(n), "study": range(n)})


def jpg_manifest(folder: Path, count: int) -> pd.DataFrame:
    """Copies of real radiographs in ``folder`` (so tests may touch them), as a manifest relative to it."""
    names = []
    for i, src in enumerate(CXR[:count]):
        shutil.copy(src, folder / f"img{i}.jpg")
        names.append(f"img{i}.jpg")
    return pd.DataFrame({"path": names, "minority": [i % 2 for i in range(count)], "split": "train",
                         "fold": 0, "patient": range(count), "study": range(count)})


def asymmetric_image(size: int = 32) -> torch.Tensor:
    img = torch.full((1, size, size), 0.2)
    img[:, 4:-4, 3:size // 2 - 2] = 0.8  # bright block in the left half, like the heart shadow's side
    return img


def left_minus_right(img: torch.Tensor) -> float:
    half = img.shape[-1] // 2
    return float(img[..., :half].mean() - img[..., half:].mean())


def test_radiograph_chain_never_mirrors_unless_hflip():
    img = asymmetric_image()
    chain = build_augment(DataConfig(image_size=32), train=True)
    assert all(left_minus_right(augment_item(chain, img, s)) > 0.1 for s in range(60))
    flip_chain = build_augment(DataConfig(image_size=32, hflip=True), train=True)
    assert sum(left_minus_right(augment_item(flip_chain, img, s)) < -0.1 for s in range(60)) > 10


def test_natural_chain_crops_and_flips_and_stays_in_unit_range():
    img = asymmetric_image()
    chain = build_augment(DataConfig(image_size=32, kind="natural", channels=3), train=True)
    outs = [augment_item(chain, img, s) for s in range(40)]
    assert all(o.shape == (1, 32, 32) and 0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    assert sum(left_minus_right(o) < 0 for o in outs) > 5
    assert len({o.sum().item() for o in outs}) > 10  # crops move the content


def test_eval_chain_is_deterministic_and_equals_cached_pixels():
    cfg = DataConfig(image_size=32)
    ds = make_dataset(npz_manifest(6), str(NPZ_ROOT), cfg, train=False)
    direct = preprocess(str(NPZ_ROOT / f"{NPZ_REL}#train/4"), cfg)
    expected = torch.from_numpy(direct.astype(np.float32) / 255).repeat(3, 1, 1)
    assert torch.equal(ds[4]["image"], expected)
    # Independently of preprocess: item 4 is the npz's train image 4, resized 28 -> 32 (not its neighbour).
    with np.load(BUNDLED_NPZ) as z:
        raw = z["train_images"][:6].astype(np.float32) / 255
    resized = torch.nn.functional.interpolate(torch.from_numpy(raw)[:, None], size=32, mode="bilinear")[:, 0]
    corr = [float(np.corrcoef(ds[4]["image"][0].ravel(), r.ravel())[0, 1]) for r in resized.numpy()]
    assert corr[4] > 0.97 and corr[4] == max(corr)
    ds.set_epoch(3)  # the eval chain has nothing random: another epoch gives the same pixels
    assert torch.equal(ds[4]["image"], expected)


def test_augmentation_reproducible_per_seed_epoch_index():
    cfg = DataConfig(image_size=32)
    a = make_dataset(npz_manifest(8), str(NPZ_ROOT), cfg, train=True, seed=1)
    b = make_dataset(npz_manifest(8), str(NPZ_ROOT), cfg, train=True, seed=1)
    item = a[5]
    assert item["image"].shape == (3, 32, 32) and item["index"] == 5 and item["minority"] == 0
    assert torch.equal(a[5]["image"], b[5]["image"]) and torch.equal(a[5]["image"], a[5]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[5]["image"], b[5]["image"])
    c = make_dataset(npz_manifest(8), str(NPZ_ROOT), cfg, train=True, seed=2)
    assert not torch.equal(a[5]["image"], c[5]["image"])
    assert item_seed(1, 0, 5) != item_seed(1, 0, 6)


def _epochs(ds, workers: int, epochs: list[int]) -> list[list[torch.Tensor]]:
    loader = make_loader(ds, batch_size=8, shuffle=True, num_workers=workers, seed=7)
    out = []
    for epoch in epochs:
        ds.set_epoch(epoch)
        out.append([torch.cat([b["image"].flatten(1), b["index"][:, None].float()], 1) for b in loader])
    return out


def test_loader_same_across_workers_and_resumable():
    cfg = DataConfig(image_size=16)
    two_workers = _epochs(make_dataset(npz_manifest(40), str(NPZ_ROOT), cfg, True), 2, [0, 1])
    resumed = _epochs(make_dataset(npz_manifest(40), str(NPZ_ROOT), cfg, True), 0, [1])
    first = _epochs(make_dataset(npz_manifest(40), str(NPZ_ROOT), cfg, True), 0, [0])
    assert all(torch.equal(x, y) for x, y in zip(two_workers[1], resumed[0]))
    assert all(torch.equal(x, y) for x, y in zip(two_workers[0], first[0]))
    assert not torch.equal(two_workers[0][0], two_workers[1][0])  # new epoch: new order and draws


def test_persistent_cache_matches_direct_decode_and_is_reused(tmp_path):
    df = jpg_manifest(tmp_path, 6)
    cfg = DataConfig(image_size=48, cache_dir=str(tmp_path / "cache"))
    paths = [str(tmp_path / p) for p in df["path"]]
    first = build_store(paths, cfg)
    assert first.built and first.images.shape == (6, 1, 48, 48)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(first.images[i], preprocess(p, cfg))
    assert not build_store(paths, cfg).built
    ds = make_dataset(df, str(tmp_path), cfg, train=False)
    mem = make_dataset(df, str(tmp_path), DataConfig(image_size=48), train=False)
    assert all(torch.equal(ds[i]["image"], mem[i]["image"]) for i in range(6))
    assert ds[0]["image"][0, 0].max() == 0 and ds[0]["image"][0, 24].max() > 0.2  # 409-row image: top rows are padding, aspect ratio kept


def test_persistent_cache_invalidated_by_config_and_files(tmp_path):
    df = jpg_manifest(tmp_path, 4)
    cfg = DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))
    paths = [str(tmp_path / p) for p in df["path"]]
    assert build_store(paths, cfg).built
    assert build_store(paths, DataConfig(image_size=32, channels=3, kind="natural", cache_dir=cfg.cache_dir)).built
    assert build_store(paths, DataConfig(image_size=64, cache_dir=cfg.cache_dir)).built
    assert not build_store(paths, cfg).built
    os.utime(paths[2], ns=(1_000_000_000, 1_000_000_000))
    assert build_store(paths, cfg).built
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(paths[0])
    store = build_store(paths, cfg)
    assert store.built and store.images[0].max() == 0


def test_npz_cache_keyed_by_content_not_mtime(tmp_path):
    npz = tmp_path / "mnist.npz"
    shutil.copy(BUNDLED_NPZ, npz)
    df = pd.DataFrame({"path": [f"mnist.npz#test/{i}" for i in range(5)], "minority": 0})
    cfg = DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))
    paths = [f"{npz}#test/{i}" for i in range(5)]
    assert build_store(paths, cfg).built
    os.utime(npz, ns=(2_000_000_000, 2_000_000_000))
    assert not build_store(paths, cfg).built
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["test_images"] = 255 - arrays["test_images"]
    np.savez(npz, **arrays)
    assert build_store(paths, cfg).built
    assert len(make_dataset(df, str(tmp_path), cfg, train=False)) == 5


def _manifest_with_bad(tmp_path: Path) -> pd.DataFrame:
    df = jpg_manifest(tmp_path, 3)
    (tmp_path / "cut.jpg").write_bytes(CXR[0].read_bytes()[:3000])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    bad = pd.DataFrame({"path": ["cut.jpg", "zero.jpg", "text.png", "gone.jpg"], "minority": 1})
    return pd.concat([df.iloc[:1], bad, df.iloc[1:]], ignore_index=True)


@pytest.mark.parametrize("cache", [False, True])
def test_bad_images_skipped_and_reported(tmp_path, cache):
    df = _manifest_with_bad(tmp_path)
    cfg = DataConfig(image_size=32, on_bad_image="skip", cache_dir=str(tmp_path / "c") if cache else "")
    skipped: list = []
    ds = make_dataset(df, str(tmp_path), cfg, train=True, skipped=skipped)
    assert len(ds) == 3 and [ds[i]["index"] for i in range(3)] == [0, 5, 6]
    assert [Path(p).name for p, _ in skipped] == ["cut.jpg", "zero.jpg", "text.png", "gone.jpg"]
    assert all(reason for _, reason in skipped)
    if cache:  # a reused cache must not forget its bad files, nor let "fail" pass
        again: list = []
        assert len(make_dataset(df, str(tmp_path), cfg, train=True, skipped=again)) == 3 and again == skipped
        cfg.on_bad_image = "fail"
        with pytest.raises(BadImageError, match="cut.jpg"):
            make_dataset(df, str(tmp_path), cfg, train=True)


def test_bad_image_fails_at_build_time(tmp_path):
    df = _manifest_with_bad(tmp_path)
    with pytest.raises(BadImageError, match="cut.jpg"):
        make_dataset(df, str(tmp_path), DataConfig(image_size=32), train=True)
    cfg = DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BadImageError):
        make_dataset(df, str(tmp_path), cfg, train=True)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written left behind


def test_augmentation_grid(tmp_path):
    df = jpg_manifest(tmp_path, 5)
    ds = make_dataset(df, str(tmp_path), DataConfig(image_size=32), train=True)
    grid = save_augmentation_grid(ds, str(tmp_path / "out" / "grid.png"), n=5)
    assert grid.shape == (3, 2 * 34 + 2, 3 * 34 + 2) and grid.dtype == np.float32  # 3 columns, 2 rows
    assert 0.0 <= grid.min() and grid.max() <= 1.0
    plain = make_dataset(df, str(tmp_path), DataConfig(image_size=32), train=False)
    assert not np.array_equal(grid, save_augmentation_grid(plain, str(tmp_path / "plain.png"), n=5))
    png = np.asarray(Image.open(tmp_path / "out" / "grid.png"))
    assert png.ndim == 3 and png.shape[2] == 3 and png.shape[0] % grid.shape[1] == 0
