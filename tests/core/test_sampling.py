"""Patch cutting of the training sampler: crops inside the image and across its border read the same pixels."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet_loop.core import sampling
from napari_unet_loop.core.augment import NO_AUGMENT
from napari_unet_loop.core.sampling import PatchSampler, Sample
from napari_unet_loop.core.train import TrainConfig


def test_crops_inside_and_across_the_border_are_the_mirrored_image(monkeypatch):
    rng = np.random.default_rng(0)
    image = rng.random((1, 90, 120)).astype(np.float32)
    labels = np.zeros((90, 120), np.int32)
    labels[20:40, 30:60] = 1
    cfg = TrainConfig(patch_size=16, batch_size=3, steps=1, minutes=None, precision="fp32", augment=NO_AUGMENT)
    sampler = PatchSampler([Sample(image, labels)], cfg, torch.device("cpu"))
    s, half = sampler.src, sampler.src // 2
    centres = iter([(45, 60), (3, 117), (88, 2)])  # inside (a view), across two borders (mirrored indices)
    monkeypatch.setattr(sampler, "_centre", lambda item: next(centres))
    seen = {}
    real_warp = sampling.warp

    def recording_warp(grid, img, cont, cls):
        seen["img"], seen["cls"] = img.clone(), cls.clone()
        return real_warp(grid, img, cont, cls)

    monkeypatch.setattr(sampling, "warp", recording_warp)
    sampler.batch(3)
    padded = np.pad(image[0], s, mode="reflect")
    classes = np.pad(sampler.items[0]["cls"].numpy(), s, mode="reflect")
    for k, (cy, cx) in enumerate([(45, 60), (3, 117), (88, 2)]):
        y0, x0 = cy - half + s, cx - half + s
        np.testing.assert_array_equal(seen["img"][k, 0].numpy(), padded[y0 : y0 + s, x0 : x0 + s])
        np.testing.assert_array_equal(seen["cls"][k].numpy(), classes[y0 : y0 + s, x0 : x0 + s])
    assert 45 - half >= 0 and 60 + half <= 120  # the first crop took the view path


def test_the_stain_mix_reaches_colour_patches_and_leaves_their_classes_alone():
    from dataclasses import replace

    rng = np.random.default_rng(1)
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 10:30] = 1

    def patches(channels, stain):
        """The same draw (same seeds) without and with the stain mix."""
        image = rng.random((channels, 64, 64)).astype(np.float32)
        cfg = TrainConfig(patch_size=32, batch_size=4, steps=1, minutes=None, precision="fp32", augment=NO_AUGMENT)
        mixed = replace(cfg, augment=replace(NO_AUGMENT, stain=stain))
        return [PatchSampler([Sample(image, labels)], c, torch.device("cpu")).batch(4) for c in (cfg, mixed)]

    (plain, mixed) = patches(3, 1.0)
    assert not torch.allclose(plain[0], mixed[0], atol=1e-3)  # the colours changed
    assert all(torch.equal(a, b) for a, b in zip(plain[1:], mixed[1:], strict=True))  # classes, weights, distances
    (plain, mixed) = patches(1, 1.0)
    assert torch.equal(plain[0], mixed[0])  # grey patches: no mix


def _cuts_and_wholes(labels, axis, a, width):
    """By hand: objects the stripe [a, a + width) cuts, and objects wholly inside it."""
    inside = np.take(labels, np.arange(a, a + width), axis=axis)
    ids = [i for i in np.unique(inside) if i]
    whole = [i for i in ids if (inside == i).sum() == (labels == i).sum()]
    return len(ids) - len(whole), len(whole)


def test_clear_starts_are_the_places_that_cut_no_object():
    from skimage.measure import label

    from napari_unet_loop.core.sampling import clear_starts

    rng = np.random.default_rng(0)
    for trial in range(60):
        h, w = rng.integers(30, 90, 2)
        labels = label(rng.random((h, w)) < rng.uniform(0.02, 0.4))
        axis, width = int(rng.integers(0, 2)), int(rng.integers(3, 25))
        starts = rng.permutation(np.arange(0, labels.shape[axis] - width + 1))
        got = clear_starts(labels, axis, starts, width)
        by_hand = [(a, _cuts_and_wholes(labels, axis, a, width)) for a in starts]
        clear = [(a, whole) for a, (cut, whole) in by_hand if cut == 0 and whole > 0]
        expected = [a for a, _ in sorted(clear, key=lambda c: -c[1])]  # stable: ties keep the order of starts
        assert list(got) == expected, trial


def test_the_stripe_runs_through_background_where_it_can():
    """Three bands of objects with background between: the stripe holds the band of the most objects whole, for
    every seed; packed cells leave no such place."""
    from napari_unet_loop.core.sampling import Sample, clear_starts, split_validation

    labels = np.zeros((200, 100), np.int32)
    labels[10:26, 10:40] = 1  # band A: one object
    for k, x in enumerate((5, 35, 65)):  # band B: three
        labels[60:86, x : x + 20] = 2 + k
    labels[130:151, 10:35], labels[130:151, 60:85] = 5, 6  # band C: two
    image = np.zeros((1, 200, 100), np.float32)
    for seed in range(6):
        train, (val,) = split_validation([Sample(image, labels)], 0.2, seed=seed)
        assert set(np.unique(val.labels)) == {0, 2, 3, 4}, seed
        assert all((val.labels == i).sum() == (labels == i).sum() for i in (2, 3, 4)), seed
    yy, xx = np.mgrid[:200, :100]  # packed cells: every pixel in one, irregular borders
    seeds = np.random.default_rng(1).random((60, 2)) * (200, 100)
    packed = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1) + 1
    assert clear_starts(packed, 0, np.arange(0, 161), 40).size == 0
