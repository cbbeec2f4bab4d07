"""Image sources: samples, CIFAR-10 layouts, defensive upload decoding, feature-map tensors."""
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dropviz.data import images
from dropviz.data.images import ImageError, decode_image, find_cifar10, load_sample, to_feature_map


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w=40, h=30) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(images.SAMPLES))
def test_every_sample_loads_as_rgb_uint8(name):
    pixels = load_sample(name)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8
    assert pixels.std() > 5  # a real photo, not a blank


def test_unknown_sample_names_the_choices():
    with pytest.raises(ImageError, match="astronaut"):
        load_sample("no-such-photo")


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_round_trip_exactly(fmt):
    pixels = gradient()
    decoded = decode_image(encode(Image.fromarray(pixels), fmt))
    assert decoded.format == fmt and decoded.notes == ()
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_formats_decode_close_to_the_original(fmt):
    pixels = gradient()
    decoded = decode_image(encode(Image.fromarray(pixels), fmt, quality=95))
    assert decoded.pixels.shape == pixels.shape
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 6  # q95 error on a smooth gradient is ~1-3


def test_animated_gif_gives_its_first_frame_and_says_so():
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    decoded = decode_image(data)
    assert tuple(decoded.pixels[0, 0]) == (255, 0, 0)
    assert any("2 frames" in note for note in decoded.notes)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2] = (0, 0, 0, 255)  # opaque black top half, transparent bottom half
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (decoded.pixels[:2] == 0).all() and (decoded.pixels[2:] == 255).all()
    assert any("white" in note for note in decoded.notes)


def test_palette_image_is_converted():
    im = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    decoded = decode_image(encode(im, "PNG"))
    np.testing.assert_array_equal(decoded.pixels, np.asarray(im.convert("RGB")))
    assert any("Palette" in note for note in decoded.notes)


def test_sixteen_bit_image_is_rescaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(values), "PNG"))
    np.testing.assert_array_equal(decoded.pixels[0, :, 0], [0, 128, 255])
    assert any("16-bit" in note for note in decoded.notes)


def test_cmyk_jpeg_is_converted_to_rgb():
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(encode(im, "JPEG", quality=95))
    r, g, b = decoded.pixels[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in note for note in decoded.notes)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, I am a text file" * 10, "not an image"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
])
def test_non_images_are_refused_with_a_message(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(ImageError, match="truncated|damaged"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 megapixels in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="megapixels"):
        decode_image(bomb)


def test_pixel_and_byte_limits_are_stated():
    data = encode(Image.fromarray(gradient(40, 30)), "PNG")
    with pytest.raises(ImageError, match=r"40 x 30 .* limit is 0.0 megapixels"):
        decode_image(data, max_pixels=1000)
    with pytest.raises(ImageError, match="upload limit is 1 MiB"):
        decode_image(b"\0" * (2**20 + 1), max_bytes=2**20)


def test_feature_map_is_a_centre_crop_resized_to_side():
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 10:30] = 255  # the centred 20x20 square is white, the side bands black
    fmap = to_feature_map(pixels, 8)
    assert fmap.shape == (1, 3, 8, 8) and fmap.dtype == torch.float32
    assert torch.allclose(fmap, torch.ones_like(fmap))
    gray = to_feature_map(gradient(), 16, gray=True)
    assert gray.shape == (1, 1, 16, 16) and 0.0 <= gray.min() and gray.max() <= 1.0


@pytest.mark.parametrize("side", [0, 3, 513, 2.5, True])
def test_feature_map_side_out_of_range_is_refused(side):
    with pytest.raises(ValueError, match="side must be"):
        to_feature_map(gradient(), side)


def test_cifar_python_and_binary_layouts(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    labels = [3, 1, 4, 1, 5]
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)
    with open(tmp_path / "py" / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": labels}, f)
    (tmp_path / "bin" / "cifar-10-batches-bin").mkdir(parents=True)
    records = np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1)
    records.tofile(tmp_path / "bin" / "cifar-10-batches-bin" / "test_batch.bin")
    for layout in ("py", "bin"):
        cifar = find_cifar10(tmp_path / layout)
        assert len(cifar) == 5
        pixels, label = cifar.image(2)
        assert label == "deer"
        np.testing.assert_array_equal(pixels[..., 0], data[2, :1024].reshape(32, 32))  # red plane first
        with pytest.raises(ImageError, match=r"\[0, 4\]"):
            cifar.image(5)


def test_cifar_image_folder_from_env(tmp_path, monkeypatch):
    test_dir = tmp_path / "cifar10-jpeg" / "test"
    for i, cls in enumerate(images.CIFAR10_CLASSES):
        (test_dir / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(test_dir / cls / "0000.png")
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(tmp_path))
    cifar = find_cifar10()
    assert len(cifar) == 10 and cifar.classes == images.CIFAR10_CLASSES
    pixels, label = cifar.image(3)
    assert label == "cat" and pixels[0, 0, 0] == 60


def test_no_cifar_copy_gives_none(tmp_path):
    assert find_cifar10(tmp_path) is None


def test_real_cifar10_copy_is_found_from_its_data_dir(cifar10_dir):
    cifar = find_cifar10(cifar10_dir.parent)
    assert len(cifar) == 10_000 and cifar.classes == images.CIFAR10_CLASSES
    pixels, label = cifar.image(9_999)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 and label == "truck"
    assert len(find_cifar10(cifar10_dir)) == 10_000  # the dataset folder itself works too


@pytest.mark.parametrize("size", [(3000, 8), (700, 2), (8, 3000)])
def test_strips_too_thin_to_show_are_refused_with_their_shape(size):
    with pytest.raises(ImageError, match=f"{size[0]} x {size[1]} pixels.*at most {images.MAX_ASPECT_RATIO} times"):
        decode_image(encode(Image.new("RGB", size, (200, 30, 30)), "PNG"))


def test_the_thinnest_accepted_strip_still_decodes():
    decoded = decode_image(encode(Image.new("RGB", (images.MAX_ASPECT_RATIO * 3, 3)), "PNG"))
    assert decoded.pixels.shape == (3, images.MAX_ASPECT_RATIO * 3, 3)


@pytest.mark.parametrize("shape, width", [((512, 512), 160), ((32, 32), 160), ((100, 1600), 160),
                                          ((1600, 100), 10), ((3, 48), 160), ((48, 3), 10)])
def test_thumbnails_fit_a_160_px_square_and_stay_visible(shape, width):
    pixels = np.zeros((*shape, 3), np.uint8)
    assert images.thumbnail_width(pixels) == width
    height = width * shape[0] / shape[1]
    assert max(width, height) <= 160 and min(width, height) >= 10
