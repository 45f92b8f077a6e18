import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_loop.core.targets import (
    BACKGROUND,
    BOUNDARY,
    INTERIOR,
    border_weight_map,
    check_labels,
    class_map,
    distance_map,
    make_targets,
)


def _two_squares(gap: int, shape=(40, 60)) -> np.ndarray:
    """Two 12x12 squares side by side, ``gap`` pixels apart (0: touching)."""
    labels = np.zeros(shape, np.int32)
    labels[14:26, 10:22] = 1
    labels[14:26, 22 + gap : 34 + gap] = 2
    return labels


def test_class_map_of_a_square():
    labels = np.zeros((10, 10), np.int32)
    labels[2:7, 3:8] = 5
    classes = class_map(labels)
    assert classes.dtype == np.uint8
    expected = np.zeros((10, 10), np.uint8)
    expected[2:7, 3:8] = BOUNDARY
    expected[3:6, 4:7] = INTERIOR
    np.testing.assert_array_equal(classes, expected)


def test_class_map_separates_touching_objects_by_two_boundary_pixels():
    classes = class_map(_two_squares(gap=0))
    row = classes[20]
    np.testing.assert_array_equal(row[20:24], [INTERIOR, BOUNDARY, BOUNDARY, INTERIOR])
    assert (classes[_two_squares(0) == 0] == BACKGROUND).all()


def test_distance_map_is_normalised_per_object(discs):
    labels = discs((80, 80), 6, radius=(3, 12), seed=3)
    labels[labels == 2] = 40  # non-sequential ids
    dist = distance_map(labels)
    assert dist.dtype == np.float32
    assert dist.min() >= 0 and dist.max() <= 1
    assert (dist[labels == 0] == 0).all()
    for k in np.unique(labels)[1:]:
        d = dist[labels == k]
        assert d.max() == pytest.approx(1.0)
        assert d.min() > 0
    # deepest point of a disc is its centre, and the rim is lower than the centre
    sq = np.zeros((21, 21), np.int32)
    sq[3:18, 3:18] = 1
    d = distance_map(sq)
    assert d[10, 10] == pytest.approx(1.0)
    assert d[3, 10] < d[6, 10] < d[10, 10]


def test_distance_map_of_touching_objects_dips_at_the_border():
    dist = distance_map(_two_squares(gap=0))
    row = dist[20]
    assert row[21] < row[16] and row[22] < row[27]
    assert row[16] == pytest.approx(1.0, abs=0.1)


def _reference_weight(labels, w0, sigma):
    classes = class_map(labels)
    counts = np.bincount(classes.ravel(), minlength=3).astype(float)
    wc = np.array([1.0, *(np.clip(counts[0] / counts[k], 1, 10) if counts[k] else 1.0 for k in (1, 2))])
    ids = np.unique(labels)[1:]
    d = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    d.sort(axis=0)
    border = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return wc[classes], border, d[0] + d[1]


def test_border_weight_map_matches_the_paper_formula(discs):
    labels = discs((70, 90), 7, radius=(4, 9), seed=5, gap=1)
    w = border_weight_map(labels, w0=10.0, sigma=5.0)
    wc, border, dsum = _reference_weight(labels, 10.0, 5.0)
    assert w.dtype == np.float32
    near = dsum <= 16  # inside the reach where the map is computed exactly
    np.testing.assert_allclose(w[near], (wc + border)[near], rtol=1e-4, atol=1e-4)
    # far away the border term is negligible anyway
    assert np.abs(w - (wc + border)).max() < 0.1


def test_border_weight_is_high_in_the_gap_between_objects():
    labels = _two_squares(gap=2)
    w = border_weight_map(labels, w0=10.0, sigma=5.0)
    gap = w[20, 22:24]
    far = w[2, 2]  # background corner, far from both objects
    assert far == pytest.approx(1.0, abs=0.05)
    assert (gap > 5 * far).all()
    assert gap.min() > w[2, 30] + 5  # background above the gap, farther from both objects
    # the weight decays with the width of the gap
    w_wide = border_weight_map(_two_squares(gap=8), w0=10.0, sigma=5.0)
    assert w_wide[20, 22 + 4] < gap.min()


def test_border_weight_without_border_term():
    labels = _two_squares(gap=2)
    classes = class_map(labels)
    w = border_weight_map(labels, classes, w0=0.0)
    counts = np.bincount(classes.ravel(), minlength=3)
    # class balancing only: inverse frequency relative to the background, capped to [1, 10]
    for k in range(3):
        expected = 1.0 if k == 0 else np.clip(counts[0] / counts[k], 1, 10)
        np.testing.assert_allclose(w[classes == k], expected, rtol=1e-6)
    single = (labels == 1).astype(np.int32)
    w1 = border_weight_map(single, w0=10.0)
    assert w1[20, 23] == pytest.approx(1.0)  # one object: no border term


def test_make_targets_with_ignore_mask(discs):
    labels = discs((50, 60), 4, seed=1)
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :20] = True
    t = make_targets(labels, ignore=ignore)
    full = make_targets(labels)
    assert (t.weight[ignore] == 0).all()
    np.testing.assert_array_equal(t.weight[~ignore], full.weight[~ignore])
    assert (full.weight > 0).all()
    np.testing.assert_array_equal(t.classes, full.classes)
    np.testing.assert_array_equal(t.distance, full.distance)
    assert t.classes.dtype == np.uint8 and t.weight.dtype == np.float32 and t.distance.dtype == np.float32
    with pytest.raises(ValueError, match="ignore mask shape"):
        make_targets(labels, ignore=ignore[:-1])


def test_make_targets_of_an_empty_image():
    t = make_targets(np.zeros((16, 16), np.uint16))
    assert (t.classes == 0).all() and (t.distance == 0).all()
    np.testing.assert_allclose(t.weight, 1.0)


def test_check_labels_accepts_whole_numbers():
    a = np.array([[0, 1], [2, 3]], np.uint16)
    out = check_labels(a)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, a)
    f = check_labels(np.array([[0.0, 1.0], [2.0, 7.0]]))
    assert f.dtype == np.int64 and f[1, 1] == 7
    b = check_labels(np.array([[True, False]]))
    np.testing.assert_array_equal(b, [[1, 0]])


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([[0.0, 1.5]]), "whole numbers"),
        (np.array([[0.0, np.nan]]), "whole numbers"),
        (np.array([[0, -1]]), "negative"),
        (np.zeros((2, 3, 4), np.int32), "2D"),
        (np.zeros(5, np.int32), "2D"),
        (np.array([["a", "b"]]), "whole numbers"),
    ],
)
def test_check_labels_rejects(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels)


def test_a_binary_mask_is_read_as_its_separate_pieces():
    """A 0/255 mask held every nucleus under one id: scored as one object, trained on as one."""
    from napari_unet_loop.core.targets import separate_mask

    mask = np.zeros((2, 20, 20), np.uint8)
    mask[0, 2:6, 2:6] = mask[0, 10:14, 10:14] = mask[0, 6:8, 6:8] = 255  # the last touches the first diagonally
    mask[1, 3:9, 3:9] = 255  # one piece: one object, as it is
    out, planes = separate_mask(mask)
    assert planes == 1 and out.dtype == np.int32
    assert sorted(np.unique(out[0]).tolist()) == [0, 1, 2] and out[0, 7, 7] == out[0, 3, 3]
    np.testing.assert_array_equal(out[1], mask[1])
    instances = np.zeros((20, 20), np.int32)
    instances[2:6, 2:6], instances[10:14, 10:14] = 1, 2  # two ids: instance labels, left alone
    same, planes = separate_mask(instances)
    assert planes == 0 and same is instances
