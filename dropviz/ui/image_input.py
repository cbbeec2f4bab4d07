"""Choosing the input image (sample photo, CIFAR-10 test image, or an upload) and caching it as a tensor.

``image_picker(key=...)`` draws the widgets and returns a :class:`PickedImage`; ``feature_map(picked, side,
gray)`` gives the cached ``(1, C, side, side)`` tensor. A bad upload shows its message with ``st.error``
and the previous image stays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import streamlit as st
import torch

from dropviz.data import images
from dropviz.data.images import ImageError
from dropviz.regularizers import Param
from dropviz.ui.controls import warn_unusable_url_value

PHOTO, CIFAR, UPLOAD = "photo", "CIFAR-10", "upload"
SOURCES = (PHOTO, CIFAR, UPLOAD)
DEFAULT_PHOTO = "astronaut"
SIDES = (16, 32, 48, 64, 96, 128, 160, 192, 224, 256)


@dataclass(frozen=True)
class PickedImage:
    """The chosen image: ``pixels`` (H, W, 3) uint8, a short ``id`` naming it for caches, a caption."""

    pixels: np.ndarray = field(repr=False)
    id: str
    caption: str


@st.cache_data(show_spinner=False)
def load_photo(name: str) -> np.ndarray:
    return images.load_sample(name)


@st.cache_resource(show_spinner=False)
def cifar_test_set(data_dir: str) -> images.Cifar10Test | None:
    """The local CIFAR-10 test set, found once per data dir (None if there is none)."""
    return images.find_cifar10(data_dir)


@st.cache_data(show_spinner=False, max_entries=256)
def load_cifar(data_dir: str, index: int) -> tuple[np.ndarray, str]:
    return cifar_test_set(data_dir).image(index)


@st.cache_data(show_spinner=False, max_entries=8)
def decode_upload(file_id: str, _data: bytes) -> images.DecodedImage:
    """Decoded once per uploaded file (the id changes with every upload); errors are not cached."""
    return images.decode_image(_data)


@st.cache_data(show_spinner=False, max_entries=64)
def _feature_map(image_id: str, side: int, gray: bool, _pixels: np.ndarray) -> torch.Tensor:
    return images.to_feature_map(_pixels, side, gray)


def feature_map(picked: PickedImage, side: int, gray: bool = False) -> torch.Tensor:
    """``picked`` as a ``(1, C, side, side)`` float tensor, cached on the image id, side and gray."""
    return _feature_map(picked.id, side, gray, picked.pixels)


def _photo() -> PickedImage:
    return PickedImage(load_photo(DEFAULT_PHOTO), f"photo:{DEFAULT_PHOTO}", images.SAMPLES[DEFAULT_PHOTO])


def image_picker(*, key: str, bind_url: bool = True) -> PickedImage:
    """Widgets choosing the input image; returns it. Photo name and CIFAR index are part of the URL."""
    bind = "query-params" if bind_url else None
    if bind_url:
        warn_unusable_url_value(f"{key}image", options=SOURCES)
    source = st.radio("Image", SOURCES, horizontal=True, key=f"{key}image", bind=bind,
                      help="A photo shipped with scikit-image, a CIFAR-10 test image, or your own file.")
    if source == PHOTO:
        if bind:
            warn_unusable_url_value(f"{key}photo", options=list(images.SAMPLES))
        name = st.selectbox("Photo", list(images.SAMPLES), key=f"{key}photo", bind=bind,
                            help=", ".join(f"{k}: {v}" for k, v in images.SAMPLES.items()))
        return PickedImage(load_photo(name), f"photo:{name}", images.SAMPLES[name])
    if source == CIFAR:
        return _cifar_picker(key, bind)
    return _upload_picker(key)


def _cifar_picker(key: str, bind: str | None) -> PickedImage:
    data_dir = str(images.data_dir())
    test_set = cifar_test_set(data_dir)
    if test_set is None:
        st.info(f"No CIFAR-10 copy found in `{data_dir}`. Put the torchvision download or an ImageFolder "
                f"copy there, or set `DROPVIZ_DATA_DIR`. Showing a photo instead.")
        return _photo()
    if bind:
        last = len(test_set) - 1
        warn_unusable_url_value(f"{key}cifar", param=Param(f"{key}cifar", "test image", int, 0, 0, last))
    index = st.number_input(f"Test image (0 to {len(test_set) - 1})", 0, len(test_set) - 1, 0, 1,
                            key=f"{key}cifar", bind=bind)
    pixels, label = load_cifar(data_dir, int(index))
    return PickedImage(pixels, f"cifar:{data_dir}:{index}", f"CIFAR-10 test image {index}: {label}")


def _upload_picker(key: str) -> PickedImage:
    limit_mb = images.MAX_UPLOAD_BYTES // 2**20
    file = st.file_uploader(
        "Image file", type=list(images.UPLOAD_EXTENSIONS), key=f"{key}upload", max_upload_size=limit_mb,
        help=f"PNG, JPEG, WebP, BMP, TIFF or GIF (first frame); at most {limit_mb} MB and "
             f"{images.MAX_PIXELS / 1e6:.1f} megapixels.")
    last_key = f"{key}last_upload"
    if file is not None:
        try:
            decoded = decode_upload(file.file_id, file.getvalue())
        except ImageError as err:
            st.error(f"**{file.name}**: {err}", icon=":material/broken_image:")
        else:
            for note in decoded.notes:
                st.caption(note)
            st.session_state[last_key] = PickedImage(decoded.pixels, f"upload:{file.file_id}",
                                                     f"{file.name} ({decoded.format})")
    previous = st.session_state.get(last_key)
    if previous is None:
        st.caption("No usable upload yet: showing a photo.")
        return _photo()
    if file is None or previous.id != f"upload:{file.file_id}":
        st.caption(f"Showing the last good upload, {previous.caption}.")
    return previous


def feature_map_controls(*, key: str, bind_url: bool = True, default_side: int = 128) -> tuple[int, bool]:
    """The side the image is resized to (it becomes an N=1 feature map) and whether to use one channel."""
    bind = "query-params" if bind_url else None
    if bind_url:
        warn_unusable_url_value(f"{key}side", options=[str(side) for side in SIDES])
        warn_unusable_url_value(f"{key}gray", param=Param(f"{key}gray", "gray", bool, False))
    side = st.select_slider("Feature-map side", SIDES, value=default_side, key=f"{key}side", bind=bind,
                            help="The image is centre-cropped and resized to side x side, like a feature map "
                                 "of a CNN, so block_size means what it means in a network.")
    gray = st.toggle("One channel (grayscale)", key=f"{key}gray", bind=bind)
    return int(side), bool(gray)


def image_sidebar(*, key: str, bind_url: bool = True, default_side: int = 128) -> tuple[PickedImage, torch.Tensor]:
    """The whole input block in the sidebar (source, side, channels, a thumbnail); returns the image and
    its cached feature map."""
    with st.sidebar:
        picked = image_picker(key=key, bind_url=bind_url)
        side, gray = feature_map_controls(key=key, bind_url=bind_url, default_side=default_side)
        image_thumbnail(picked)
    return picked, feature_map(picked, side, gray)


def image_thumbnail(picked: PickedImage) -> None:
    """The picked image inside a 160 px square, so a tall image does not run down the sidebar."""
    st.image(picked.pixels, caption=picked.caption, width=images.thumbnail_width(picked.pixels))
