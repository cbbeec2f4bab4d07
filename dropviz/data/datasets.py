"""Image classification data held as one uint8 tensor, batched and augmented on the device it lives on.

Datasets (``DATASETS``):

* ``cifar10`` / ``cifar100``: torchvision's CIFAR in ``data_dir`` (downloaded when online; offline it fails
  at once with :class:`DatasetError` saying which file to put where);
* ``imagefolder``: any folder with ``train/<class>/*`` and ``test/<class>/*`` images, e.g. the CIFAR-10 JPEG
  copy; images that are not 32x32 are resized;
* ``digits``: scikit-learn's bundled 1,797 handwritten 8x8 digits, upscaled to 24x24 and padded to 32x32
  RGB, so a machine with no network and no data still has something to train on.

The whole split is decoded once into ``(N, C, 32, 32)`` uint8; :class:`Batches` keeps it on the training
device (the GPU on CUDA) and does shuffling, random-crop/flip augmentation and normalisation there, so a
training step never waits on the host.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from .images import data_dir as find_data_dir

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits")
IMAGE_SIZE = 32
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
JPEG_SUFFIXES = {".jpg", ".jpeg"}
DECODE_CHUNK = 1000  # images per call of the JPEG decoder


class DatasetError(RuntimeError):
    """The dataset cannot be loaded; the message says what to do about it."""


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None, seed: int = 0) -> "ImageData":
        """A seeded random subset of ``limit`` examples (all of them when ``limit`` is None or too big)."""
        if limit is None or limit >= len(self):
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        return ImageData(self.images[keep], self.labels[keep], self.classes)


def load_split(name: str, split: str, data_dir: str | Path | None = None, limit: int | None = None,
               seed: int = 0) -> ImageData:
    """Split ``"train"`` or ``"test"`` of dataset ``name``, optionally a seeded subset of ``limit`` images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = find_data_dir(data_dir)
    if name in ("cifar10", "cifar100"):
        data = _torchvision_cifar(name, split, data_dir)
    elif name == "imagefolder":
        return _image_folder(data_dir / split, limit, seed)
    elif name == "digits":
        data = _sklearn_digits(split)
    else:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    return data.subset(limit, seed)


def _online(url: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((urlparse(url).hostname, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _torchvision_cifar(name: str, split: str, root: Path) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    train = split == "train"
    try:
        dataset = cls(str(root), train=train, download=False)
    except RuntimeError:  # not extracted: extract the archive if it is there, else download it if online
        if not (root / cls.filename).is_file() and not _online(cls.url):
            raise DatasetError(
                f"{name} is not in {root.resolve()} and there is no network to download it. Put "
                f"{cls.filename} (from {cls.url}) into that folder, extracted ({cls.base_folder}/) or not, "
                f"set --data-dir / DROPVIZ_DATA_DIR to where it is, or use the offline 'digits' dataset."
            ) from None
        try:
            dataset = cls(str(root), train=train, download=True)
        except Exception as error:  # network errors come in many types; all mean the same to the user
            raise DatasetError(f"downloading {name} into {root.resolve()} failed: {error}") from None
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes))


def image_folder_classes(folder: Path) -> list[str]:
    """An image folder's classes: its subfolders, sorted (a label is a position in this list)."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def image_folder_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """An image folder's classes and its image files, each with its label."""
    classes = image_folder_classes(folder)
    files = [(path, label) for label, c in enumerate(classes)
             for path in sorted((folder / c).iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    return classes, files


def _image_folder(folder: Path, limit: int | None, seed: int) -> ImageData:
    if not folder.is_dir():
        raise DatasetError(f"no folder {folder.resolve()}: an imagefolder dataset needs train/<class>/ and "
                           f"test/<class>/ image folders under --data-dir")
    classes, files = image_folder_files(folder)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder.resolve()}/<class>/")
    if limit is not None and limit < len(files):  # pick the subset before decoding: far fewer files to read
        keep = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        files = [files[i] for i in keep]
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageData(_decode([path for path, _ in files]), labels, classes)


def _decode(paths: list[Path]) -> torch.Tensor:
    """The images at ``paths`` as one ``(N, 3, 32, 32)`` uint8 tensor.

    JPEGs go through torchvision's decoder a thousand at a time: for 32x32 files the cost is per call, and this
    takes a third of Pillow's time (CIFAR-10's 60,000: 2 s against 6 s here). Other formats, other sizes and any
    batch with a file it cannot read go through Pillow, one file at a time, which names a bad file. (torchvision
    0.29 marks its decoders deprecated in favour of TorchCodec, with a DeprecationWarning; the pinned version
    has them.)"""
    images = torch.empty((len(paths), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for start in range(0, len(paths), DECODE_CHUNK):
        chunk = paths[start:start + DECODE_CHUNK]
        jpegs = [path for path in chunk if path.suffix.lower() in JPEG_SUFFIXES]
        decoded = dict(zip(jpegs, _decode_jpegs(jpegs)))
        for i, path in enumerate(chunk, start):
            image = decoded.get(path)
            images[i] = image if image is not None and image.shape[1:] == images.shape[2:] else _decode_one(path)
    return images


def _decode_jpegs(paths: list[Path]) -> list[torch.Tensor]:
    """The JPEG files at ``paths`` decoded to RGB in one call, in order; none if one of them fails."""
    if not paths:
        return []
    try:
        return decode_jpeg([torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in paths],
                           mode=ImageReadMode.RGB)
    except (OSError, RuntimeError, ValueError):
        return []


def _decode_one(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.array(im)).permute(2, 0, 1)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from None


def _sklearn_digits(split: str, test_fraction: float = 0.2) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float()[:, None] * (255 / 16)  # values 0..16 -> 0..255
    images = F.interpolate(images, size=(24, 24), mode="bilinear", align_corners=False)
    images = F.pad(images, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # fixed split
    n_test = int(len(labels) * test_fraction)
    part = order[:n_test] if split == "test" else order[n_test:]
    return ImageData(images[part].contiguous(), labels[part], [str(d) for d in range(10)])


def random_crop_flip(images: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Standard CIFAR augmentation on a whole batch at once, on its device: zero-pad by ``padding``, crop a
    random window of the original size and (with ``flip``) mirror half of the images horizontally."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
    cols = torch.arange(w, device=device).view(1, 1, w)
    if flip:
        mirrored = torch.rand(n, 1, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows = torch.arange(h, device=device).view(1, h, 1)
    index = ((dy + rows) * (w + 2 * padding) + dx + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


class Batches:
    """Mini-batches of an :class:`ImageData` kept on ``device``: per-epoch seeded shuffle, augmentation
    (training), normalisation with the given per-channel statistics, channels-last float output.

    ``shard = (rank, world_size)`` gives each DistributedDataParallel process its own slice of every epoch.
    """

    def __init__(self, data: ImageData, batch_size: int, device: torch.device, mean: torch.Tensor,
                 std: torch.Tensor, train: bool, flip: bool = True, seed: int = 0, shard: tuple[int, int] = (0, 1)):
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.device, self.train, self.flip, self.seed = batch_size, device, train, flip, seed
        self.rank, self.world_size = shard
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)

    def _indices(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=generator) if self.train else \
            torch.arange(n, device=self.device)
        order = order[self.rank::self.world_size]
        if self.train:  # equal-sized batches keep BatchNorm statistics honest and every rank in step
            order = order[: len(order) // self.batch_size * self.batch_size]
        return order

    def __len__(self) -> int:
        per_rank = len(range(self.rank, len(self.labels), self.world_size))
        return per_rank // self.batch_size if self.train else -(-per_rank // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + epoch)
        for index in self._indices(generator).split(self.batch_size):
            images = self.images[index]
            if self.train:
                images = random_crop_flip(images, generator, flip=self.flip)
            x = (images.float() / 255 - self.mean) / self.std
            yield x.contiguous(memory_format=torch.channels_last), self.labels[index]


def channel_stats(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation in [0, 1] units, for normalisation."""
    x = data.images.float().div_(255).transpose(0, 1).flatten(1)
    return x.mean(1), x.std(1).clamp_min(1e-3)
