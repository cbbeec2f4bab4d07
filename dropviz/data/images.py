"""Images to look at regularizers on: packaged sample photos, CIFAR-10 test images, and user uploads.

Every source yields an ``(H, W, 3)`` ``uint8`` RGB array; :func:`to_feature_map` turns one into the
``(1, C, side, side)`` float tensor a regularizer sees, so ``block_size`` means what it means in a network.

Uploads are decoded defensively by :func:`decode_image`: anything that cannot be shown faithfully raises
:class:`ImageError` with a message meant for the user; images that can be converted (RGBA, palette, CMYK,
16-bit, animated) are converted and say how in :attr:`DecodedImage.notes`. Nothing here imports Streamlit.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 20 * 2**20
"""Largest upload accepted, in bytes (20 MiB)."""
MAX_PIXELS = 4096 * 4096
"""Largest decoded image accepted, in pixels (16.8 megapixels, e.g. 4096 x 4096); checked before decoding."""
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
UPLOAD_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")
MIN_SIDE, MAX_SIDE = 4, 512
"""Range of the feature-map side :func:`to_feature_map` resizes to."""
MAX_ASPECT_RATIO = 16
"""Longest side over shortest side accepted for an upload: the feature map is a centred square crop, and a
thumbnail of a thinner strip would be under ten pixels across (or tens of thousands long)."""

SAMPLES: dict[str, str] = {
    # name in skimage.data -> caption. All ship inside scikit-image's wheel: no download, works offline.
    "astronaut": "Astronaut (Eileen Collins)",
    "chelsea": "Chelsea the cat",
    "coffee": "Cup of coffee",
    "rocket": "Rocket on the launch pad",
    "camera": "Cameraman (grayscale)",
    "coins": "Coins (grayscale)",
    "hubble_deep_field": "Hubble deep field",
    "immunohistochemistry": "Immunohistochemistry stain",
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class ImageError(ValueError):
    """An image that cannot be used; the message is written for the person who supplied it."""


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to RGB: ``pixels`` is ``(H, W, 3)`` uint8; ``notes`` say what was converted."""

    pixels: np.ndarray
    format: str
    notes: tuple[str, ...] = field(default=())


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where local datasets live: ``path`` if given, else ``$DROPVIZ_DATA_DIR``, else ``data/``."""
    return Path(path if path is not None else os.environ.get("DROPVIZ_DATA_DIR", "data"))


# ---------------------------------------------------------------- samples


def load_sample(name: str) -> np.ndarray:
    """One of :data:`SAMPLES` as an ``(H, W, 3)`` uint8 array (grayscale photos are repeated to 3 channels)."""
    if name not in SAMPLES:
        raise ImageError(f"unknown sample image {name!r}; choose one of {sorted(SAMPLES)}")
    import skimage.data  # imported here: it takes ~0.3 s and only sample users need it

    return _as_rgb_array(getattr(skimage.data, name)())


def _as_rgb_array(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8)


# ---------------------------------------------------------------- CIFAR-10


class Cifar10Test:
    """The 10,000 CIFAR-10 test images from a local copy, in a fixed order (``image(i)`` is the same
    picture on every machine holding the same copy).

    Reads the layout torchvision downloads (``cifar-10-batches-py/test_batch``), the binary release
    (``cifar-10-batches-bin/test_batch.bin``), or an ImageFolder tree ``<root>/<class>/<file>``
    (e.g. the shared JPEG copy's ``cifar10-jpeg/test``). Use :func:`find_cifar10` to locate one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path.is_file() or self.path.is_dir()):
            raise ImageError(f"no CIFAR-10 copy at {self.path}")

    @cached_property
    def _items(self) -> tuple[np.ndarray | list[Path], list[int], tuple[str, ...]]:
        if self.path.name == "test_batch":
            with open(self.path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")  # the format torchvision itself reads this way
            pixels = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return pixels, list(batch["labels"]), CIFAR10_CLASSES
        if self.path.name == "test_batch.bin":
            records = np.fromfile(self.path, dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
            pixels = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return pixels, records[:, 0].astype(int).tolist(), CIFAR10_CLASSES
        classes = tuple(sorted(d.name for d in self.path.iterdir() if d.is_dir()))
        files, labels = [], []
        for label, cls in enumerate(classes):
            found = sorted(p for p in (self.path / cls).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        if not files:
            raise ImageError(f"no images under {self.path}/<class>/")
        return files, labels, classes

    @property
    def classes(self) -> tuple[str, ...]:
        return self._items[2]

    def __len__(self) -> int:
        return len(self._items[1])

    def image(self, index: int) -> tuple[np.ndarray, str]:
        """Test image ``index`` as ``(32, 32, 3)`` uint8 and its class name."""
        images, labels, classes = self._items
        if not 0 <= index < len(labels):
            raise ImageError(f"CIFAR-10 index must be in [0, {len(labels) - 1}], got {index}")
        if isinstance(images, np.ndarray):
            pixels = np.ascontiguousarray(images[index])
        else:
            with Image.open(images[index]) as im:
                pixels = _as_rgb_array(np.asarray(im.convert("RGB")))
        return pixels, classes[labels[index]]


def find_cifar10(path: str | os.PathLike | None = None) -> Cifar10Test | None:
    """The CIFAR-10 test set under :func:`data_dir` (``path`` or ``$DROPVIZ_DATA_DIR``), or None if absent.

    ``path`` may be the data dir, a dataset dir inside it, or the test split itself.
    """
    root = data_dir(path)
    candidates = [root / "cifar-10-batches-py" / "test_batch", root / "test_batch",
                  root / "cifar-10-batches-bin" / "test_batch.bin", root / "test_batch.bin"]
    for folder in (root / "cifar10-jpeg", root / "cifar10", root):
        candidates += [folder / "test"]
    candidates.append(root)
    for candidate in candidates:
        if candidate.is_file():
            return Cifar10Test(candidate)
        if candidate.is_dir() and _is_image_folder(candidate):
            return Cifar10Test(candidate)
    return None


def _is_image_folder(folder: Path) -> bool:
    """True if ``folder`` holds class sub-folders named like CIFAR-10's with an image file in the first."""
    subdirs = {d.name for d in folder.iterdir() if d.is_dir()}
    if not set(CIFAR10_CLASSES) <= subdirs:
        return False
    first = folder / CIFAR10_CLASSES[0]
    return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in first.iterdir())


# ---------------------------------------------------------------- uploads


def decode_image(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode an uploaded file (PNG, JPEG, WebP, BMP, TIFF, GIF) to RGB, or raise :class:`ImageError`.

    Sizes are checked before decoding (a decompression bomb never gets decompressed). Transparency is
    composited on white, palettes and CMYK are converted, 16-bit and float images are rescaled to 8 bits,
    animations and multi-page files give their first frame, EXIF rotation is applied.
    """
    if not data:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageError(f"The file is {len(data) / 2**20:.1f} MiB; the upload limit is {max_bytes / 2**20:.0f} MiB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("This file is not an image that can be read here: "
                         "upload a PNG, JPEG, WebP, BMP, TIFF or GIF.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(_too_many_pixels_message(None, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"The file is damaged and cannot be read ({err}).") from None
    with im:
        fmt = im.format
        width, height = im.size
        if width * height > max_pixels:
            raise ImageError(_too_many_pixels_message((width, height), max_pixels))
        if width < 1 or height < 1:
            raise ImageError(f"The image has no pixels ({width} x {height}).")
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise ImageError(_too_thin_message(width, height))
        notes = []
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"The file has {frames} frames; showing the first.")
        try:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            pixels = _to_rgb(im, notes)
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageError(f"The file is truncated or damaged and cannot be decoded ({err}).") from None
        return DecodedImage(pixels, fmt, tuple(notes))


def _too_many_pixels_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    limit = f"the limit is {max_pixels / 1e6:.1f} megapixels (e.g. {int(max_pixels ** 0.5)} x {int(max_pixels ** 0.5)})"
    if size is None:
        return f"The image is far too large to decode safely; {limit}."
    w, h = size
    return f"The image is {w} x {h} = {w * h / 1e6:.1f} megapixels; {limit}. Downscale it and try again."


def _too_thin_message(width: int, height: int) -> str:
    shape = "wider than tall" if width > height else "taller than wide"
    ratio = max(width, height) / min(width, height)
    return (f"The image is {width} x {height} pixels, {ratio:.0f} times {shape}; dropviz uses a centred square "
            f"of it, so upload one at most {MAX_ASPECT_RATIO} times longer one way than the other (crop it first).")


def thumbnail_width(pixels: np.ndarray, box: int = 160) -> int:
    """The display width that fits ``pixels`` (H, W, ...) into a ``box`` x ``box`` square, at least 1 pixel."""
    height, width = pixels.shape[:2]
    return max(1, round(box * width / max(height, width)))


def _to_rgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode to ``(H, W, 3)`` uint8, appending to ``notes`` what was changed."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit grayscale (Pillow opens 16-bit RGB as 8-bit RGB)
        notes.append("16-bit image rescaled to 8 bits.")
        return _as_rgb_array(_rescale(np.asarray(im, dtype=np.float64), 65535.0))
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        notes.append("Floating-point image rescaled to 8 bits.")
        return _as_rgb_array(_rescale(values, max(float(values.max()), 1.0)))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("Palette image converted to RGB.")
    elif mode == "CMYK":
        im = im.convert("RGB")
        notes.append("CMYK image converted to RGB.")
    elif "transparency" in im.info and mode in ("L", "RGB"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        notes.append("Transparent areas are shown on white.")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return _as_rgb_array(np.asarray(im))


def _rescale(values: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- tensors


def to_feature_map(img: np.ndarray, side: int, gray: bool = False) -> torch.Tensor:
    """An RGB image as a ``(1, C, side, side)`` float tensor in [0, 1] (``C`` = 1 if ``gray`` else 3).

    The largest centred square is cropped and resized with antialiasing, so the map is square like the
    feature maps of a CNN and nothing is stretched.
    """
    if isinstance(side, bool) or int(side) != side or not MIN_SIDE <= side <= MAX_SIDE:
        raise ValueError(f"side must be an integer in [{MIN_SIDE}, {MAX_SIDE}], got {side!r}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"img must be an (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    crop = min(h, w)
    left, top = (w - crop) // 2, (h - crop) // 2
    im = Image.fromarray(img[top:top + crop, left:left + crop])
    if gray:
        im = im.convert("L")
    im = im.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = torch.from_numpy(np.asarray(im).copy())
    pixels = pixels[None] if gray else pixels.permute(2, 0, 1)
    return pixels.unsqueeze(0).to(torch.float32).div_(255.0)
