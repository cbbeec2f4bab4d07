"""Datasets: loading, subsets, clear failures, and the on-device batching and augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dropviz.data import datasets
from dropviz.data.datasets import Batches, DatasetError, ImageData, channel_stats, load_split, random_crop_flip


def test_digits_ship_offline_as_32x32_rgb_with_a_fixed_split():
    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 1797 and train.classes == [str(d) for d in range(10)]
    assert train.images[:, :, :4].max() == 0  # the 4-pixel border is padding
    assert torch.equal(load_split("digits", "test").labels, test.labels)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                size = (32, 32) if i else (48, 20)  # one odd-sized image per class: resized to 32x32
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_reads_classes_from_subfolders_and_resizes(folder):
    train = load_split("imagefolder", "train", folder)
    assert train.classes == ["cat", "dog"] and train.images.shape == (12, 3, 32, 32)
    assert train.labels.tolist() == [0] * 6 + [1] * 6
    assert len(load_split("imagefolder", "test", folder)) == 4


def _pillow_rgb32(path) -> torch.Tensor:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = im if im.size == (32, 32) else im.resize((32, 32), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(im)).permute(2, 0, 1)


def test_jpeg_batches_decode_as_pillow_does_and_a_bad_file_is_named(tmp_path, monkeypatch):
    # JPEGs are decoded many to a call by torchvision; the images must be Pillow's, pixel for pixel, whatever the
    # mode, size or format beside them, and a broken file must still be named
    monkeypatch.setattr(datasets, "DECODE_CHUNK", 3)
    rng = np.random.default_rng(1)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a").mkdir(parents=True)
    images = {"0.jpg": (32, 32, 3), "1.jpeg": (32, 32), "2.png": (32, 32, 3), "3.jpg": (40, 24, 3),
              "4.JPG": (32, 32, 3)}
    for name, shape in images.items():
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / "train" / "a" / name, quality=75)
    expected = torch.stack([_pillow_rgb32(tmp_path / "train" / "a" / name) for name in sorted(images)])
    assert torch.equal(load_split("imagefolder", "train", tmp_path).images, expected)

    broken = tmp_path / "train" / "a" / "5.jpg"
    broken.write_bytes((tmp_path / "train" / "a" / "0.jpg").read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot read image .*5.jpg"):
        load_split("imagefolder", "train", tmp_path)


def test_subsets_are_seeded(folder):
    a, b = load_split("imagefolder", "train", folder, limit=5, seed=1), load_split("imagefolder", "train", folder, limit=5, seed=1)
    assert len(a) == 5 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, load_split("imagefolder", "train", folder, limit=5, seed=2).images)


def test_missing_image_folder_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DatasetError, match="train/<class>/ and test/<class>/"):
        load_split("imagefolder", "train", tmp_path / "nowhere")


def test_missing_cifar_offline_fails_at_once_saying_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_online", lambda url: False)
    with pytest.raises(DatasetError, match=r"cifar-100-python\.tar\.gz .* into that folder"):
        load_split("cifar100", "train", tmp_path)


def test_unknown_dataset_and_split_are_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_split("mnist", "train")
    with pytest.raises(ValueError, match="split must be"):
        load_split("digits", "val")


def test_random_crop_flip_takes_windows_of_the_padded_image():
    images = torch.arange(6 * 2 * 8 * 8, dtype=torch.float32).view(6, 2, 8, 8)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=2)
    flips = 0
    for i in range(6):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 0 < flips < 6  # P(all 6 or none flipped) = 2 / 64 with a fair coin; seed 0 gives a mix
    assert torch.equal(random_crop_flip(images, torch.Generator().manual_seed(0), padding=0, flip=False), images)


def _toy(n: int = 10) -> ImageData:
    return ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.arange(n), [str(i) for i in range(n)])


def test_train_batches_shuffle_per_epoch_and_drop_the_ragged_end():
    data = _toy(10)
    mean, std = channel_stats(data)
    batches = Batches(data, 4, torch.device("cpu"), mean, std, train=True)
    epoch0 = [y for _, y in batches.epoch(0)]
    assert len(batches) == len(epoch0) == 2 and all(len(y) == 4 for y in epoch0)
    assert len(set(torch.cat(epoch0).tolist())) == 8
    assert not torch.equal(torch.cat(epoch0), torch.cat([y for _, y in batches.epoch(1)]))
    assert torch.equal(torch.cat(epoch0), torch.cat([y for _, y in batches.epoch(0)]))


def test_test_batches_cover_everything_in_order_normalised_channels_last():
    data = _toy(10)
    mean, std = channel_stats(data)
    batches = Batches(data, 4, torch.device("cpu"), mean, std, train=False)
    xs, ys = zip(*batches.epoch())
    assert len(batches) == 3 and torch.cat(ys).tolist() == list(range(10))
    x = torch.cat(xs)
    assert xs[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_shards_split_each_epoch_between_processes():
    data = _toy(12)
    mean, std = channel_stats(data)
    shards = [torch.cat([y for _, y in Batches(data, 3, torch.device("cpu"), mean, std, train=True,
                                              shard=(rank, 2)).epoch(5)]) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert sorted(torch.cat(shards).tolist()) == list(range(12))
