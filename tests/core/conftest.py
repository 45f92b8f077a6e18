"""Shared fixtures of the core tests: synthetic instance images and tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet_loop.core.model_files import new_model
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.unet import UNet, UNetConfig

TINY = UNetConfig(depth=2, base_width=4)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Run torch on one thread: tiny networks gain nothing from more, and a busy CPU loses a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_discs(
    shape: tuple[int, int],
    n: int,
    radius: tuple[int, int] = (5, 9),
    seed: int = 0,
    gap: int = 2,
) -> np.ndarray:
    """Return ``int32`` labels of up to ``n`` non-overlapping discs (ids 1..k)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    placed = []
    for _ in range(200 * n):
        if len(placed) == n:
            break
        r = int(rng.integers(radius[0], radius[1] + 1))
        cy = int(rng.integers(r + 1, shape[0] - r - 1))
        cx = int(rng.integers(r + 1, shape[1] - r - 1))
        if any((cy - y) ** 2 + (cx - x) ** 2 < (r + q + gap) ** 2 for y, x, q in placed):
            continue
        placed.append((cy, cx, r))
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = len(placed)
    return labels


def disc_image(labels: np.ndarray, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """A normalised ``float32`` image of bright objects on a dark background, with noise."""
    rng = np.random.default_rng(seed)
    img = (labels > 0).astype(np.float32) + noise * rng.standard_normal(labels.shape).astype(np.float32)
    return img.astype(np.float32)


@pytest.fixture
def discs():
    """Factory of synthetic disc labels: ``discs(shape, n, radius=(5, 9), seed=0, gap=2)``."""
    return random_discs


@pytest.fixture
def disc_img():
    """Factory of images of labels: ``disc_img(labels, noise=0.1, seed=0)``."""
    return disc_image


@pytest.fixture
def tiny_net():
    """A freshly initialised small U-Net (depth 2, width 4, batch norm), fixed seed."""
    torch.manual_seed(0)
    return UNet(TINY)


@pytest.fixture
def model():
    """A tiny untrained model (depth 2, width 4) with loose thresholds, for segmentation paths."""
    return new_model(TINY, name="tiny", seed=0, postprocess=PostprocessConfig(0.3, 0.4, 3))


@pytest.fixture
def make_model():
    """Factory of tiny models with a card: ``make_model(name="tiny", seed=0, **card)``.

    Their batch-norm buffers are not the trivial ones, so that saving and loading check them too.
    """

    def make(name: str = "tiny", seed: int = 0, **card):
        m = new_model(TINY, name=name, seed=seed, **card)
        for mod in m.net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
        return m

    return make


@pytest.fixture
def same_weights():
    """``same_weights(net_a, net_b)``: whether two networks hold the same tensors under the same names."""

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    return same
