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
