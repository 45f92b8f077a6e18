import math

import numpy as np
import pytest

from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.scale import (
    check_diameter,
    check_native,
    median_diameter,
    object_diameters,
    postprocess_at,
    resize,
    resize_labels,
    scale_factor,
    scaled_shape,
)


def test_object_diameters_are_those_of_discs_of_the_same_area(discs):
    labels = discs((200, 200), 6, radius=(10, 10))
    d = object_diameters(labels)
    assert d.size == 6
    np.testing.assert_allclose(d, 20.0, rtol=0.05)  # pixelised discs of radius 10


def test_negative_and_huge_ids_are_measured_without_a_count_up_to_the_largest():
    """np.bincount refused -1 and would need 24 GB for an id of 3e9 (uint32 ids are valid)."""
    labels = np.zeros((40, 40), np.int64)
    labels[2:12, 2:12] = 3_000_000_000  # 100 px
    labels[20:30, 20:30] = -1  # not an object
    labels[30:40, 0:20] = 5  # 200 px, partly unreviewed below
    ignore = np.zeros_like(labels, bool)
    ignore[30:40, 0:5] = True
    np.testing.assert_allclose(
        sorted(object_diameters(labels, ignore)), [2 * math.sqrt(100 / math.pi), 2 * math.sqrt(200 / math.pi)]
    )


def test_unreviewed_and_tiny_objects_are_not_measured():
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 2:12] = 1  # 100 px
    labels[20:40, 20:40] = 2  # 400 px, mostly unreviewed below
    labels[0, 30:33] = 3  # 3 px speck
    ignore = np.zeros_like(labels, bool)
    ignore[25:, :] = True
    d = object_diameters(labels, ignore)
    np.testing.assert_allclose(d, [2 * math.sqrt(100 / math.pi)])
    assert median_diameter([labels], [None]) == pytest.approx(
        np.median([2 * math.sqrt(a / math.pi) for a in (100, 400)])
    )
    assert median_diameter([np.zeros((5, 5), int)]) is None


def test_scale_factor_keeps_images_within_tolerance_and_bounds():
    assert scale_factor(20, 60) == pytest.approx(1 / 3)
    assert scale_factor(20, 10) == pytest.approx(2.0)
    assert scale_factor(20, 20.5) == 1.0
    assert scale_factor(None, 60) == 1.0 and scale_factor(20, None) == 1.0
    assert scale_factor(20, 1000) == pytest.approx(1 / 8)  # at most 8x smaller
    assert scale_factor(20, 1) == pytest.approx(4.0)


def test_objects_within_the_sizes_a_network_learnt_unscaled_are_not_rescaled():
    native = check_native([13.5, 42.7])
    assert native == (13.5, 42.7)
    assert scale_factor(20, 39, native) == 1.0 and scale_factor(20, 13.5, native) == 1.0
    assert scale_factor(20, 60, native) == pytest.approx(1 / 3)  # outside: to the network's diameter
    assert scale_factor(20, 10, native) == pytest.approx(2.0)
    assert check_native(None) is None


@pytest.mark.parametrize("bad", [[40, 13], [13], "13,40", [0, 20], [10, float("nan")], 12])
def test_check_native_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="native"):
        check_native(bad)


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), "x", 1e6])
def test_check_diameter_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="diameter"):
        check_diameter(bad)


def test_resize_round_trip_and_labels_nearest(discs):
    labels = discs((90, 120), 5, radius=(12, 16))
    img = (labels > 0).astype(np.float32)[None]
    small = resize(img, scaled_shape(labels.shape, 1 / 3))
    assert small.shape == (1, 30, 40) and small.dtype == np.float32
    assert small.min() >= -1e-6 and small.max() <= 1 + 1e-6  # antialiased, no overshoot
    back = resize(small, labels.shape)
    assert back.shape == (1, 90, 120)
    assert np.mean((back[0] > 0.5) == (labels > 0)) > 0.95
    lab_small = resize_labels(labels, (30, 40))
    assert lab_small.dtype == labels.dtype
    assert set(np.unique(lab_small)) <= set(np.unique(labels))  # no new ids
    np.testing.assert_array_equal(resize_labels(lab_small, (90, 120))[1::3, 1::3], lab_small)


def test_postprocess_sizes_follow_the_scale():
    pp = PostprocessConfig(0.5, 0.4, min_size=32, dist_sigma=2.0)
    big = postprocess_at(pp, 1 / 3)  # objects 3x larger than the network's
    assert big.min_size == 288 and big.dist_sigma == pytest.approx(6.0)
    assert big.fg_threshold == 0.5 and big.seed_threshold == 0.4
    assert postprocess_at(pp, 1.0) is pp
