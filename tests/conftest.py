"""Shared fixtures: a private user-model folder, a tiny, fast model file, frames like phase contrast."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest
import torch

# Under pytest (not in a plain napari session, see docs/architecture.md "Known issues"), every napari
# viewer created and closed with the napari 0.9 stack on Python 3.11 drops the reference count of
# ``None`` by a few thousand; after ~25 viewers CPython aborts with "none_dealloc: deallocating None".
# Python >= 3.12 makes None immortal. On older Pythons, give None references that are never released
# (a list would be freed at interpreter exit, where the deficit would then reach 0 anyway).
if sys.version_info < (3, 12) and sys.implementation.name == "cpython":
    ctypes.c_ssize_t.from_address(id(None)).value += 100_000_000


@pytest.fixture(autouse=True)
def _private_model_dir(tmp_path_factory, monkeypatch):
    """Keep user models of the tests out of the real user folder."""
    monkeypatch.setenv("NAPARI_UNET_LOOP_MODELS", str(tmp_path_factory.mktemp("user_models")))
    monkeypatch.setenv("NAPARI_UNET_LOOP_AUTOSAVE", str(tmp_path_factory.mktemp("autosave")))
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A small randomly initialised model file (depth 2, width 4): fast on CPU, useless results."""
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="tiny", description="test model", seed=0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    model_files.save(model, path)
    return path


@pytest.fixture(scope="session")
def shipped_model_available():
    """Whether the shipped default model file is present."""
    from napari_unet_loop.core import model_files

    try:
        model_files.load("default")
    except model_files.ModelError:
        return False
    return True


@pytest.fixture
def discs():
    """A synthetic image with touching bright discs and its labels."""
    yy, xx = np.mgrid[:96, :128]
    labels = np.zeros((96, 128), np.int32)
    centres = [(30, 30), (30, 52), (70, 90), (70, 30), (25, 100)]
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2] = i
    rng = np.random.default_rng(0)
    image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
    return image.astype(np.float32), labels


@pytest.fixture
def phase_like():
    """Make grey frames like phase contrast: a mid-grey field, dark cell bodies, bright halos, one disc labelled.

    ``make(background, seed=0)`` returns ``(image, labels)``, 96 x 96; the field lies at
    ``background`` between the image's 1st and 99.8th percentiles (what
    :func:`napari_unet_loop.core.modality.detect` reads), e.g. 0.30 and 0.40 on either side of
    the line between fluorescence and brightfield.
    """

    def make(background: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        image = np.full((96, 96), 255 * background)
        image.flat[rng.choice(image.size, image.size * 3 // 100, replace=False)] = 0  # cell bodies
        image.flat[rng.choice(image.size, image.size // 100, replace=False)] = 255  # halos
        yy, xx = np.mgrid[:96, :96]
        labels = ((yy - 40) ** 2 + (xx - 50) ** 2 <= 15**2).astype(np.uint16)
        return image.astype(np.uint8), labels

    return make
