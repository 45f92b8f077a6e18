"""What the user corrected: the objects a correction touched, counted once each."""

import numpy as np
import pytest

from napari_unet_loop.core.edits import changed_mask, changed_objects, labelled_region
from napari_unet_loop.core.metrics import correction_agreement


def _labels() -> np.ndarray:
    lab = np.zeros((40, 40), np.int32)
    lab[2:10, 2:10] = 1
    lab[2:10, 20:30] = 2
    lab[20:30, 5:15] = 3
    return lab


def test_nothing_changed_is_nothing_corrected():
    lab = _labels()
    assert changed_objects(lab, lab.copy()) == 0
    with pytest.raises(ValueError, match="shapes differ"):
        changed_mask(lab, lab[:10])


@pytest.mark.parametrize(
    ("edit", "n"),
    [
        (lambda c: c.__setitem__((slice(32, 38), slice(32, 38)), 9), 1),  # a new object on background
        (lambda c: c.__setitem__(c == 3, 0), 1),  # one erased
        (lambda c: c.__setitem__((slice(2, 12), slice(2, 12)), 1), 1),  # one grown
        (lambda c: c.__setitem__((slice(2, 10), slice(6, 10)), 7), 2),  # one split: the old piece and the new
        (lambda c: c.__setitem__(c == 2, 1), 2),  # two merged into one
        (lambda c: c.__setitem__((slice(2, 10), slice(26, 36)), 9), 2),  # a new one drawn over a neighbour's edge
    ],
)
def test_each_object_a_correction_touches_counts_once(edit, n):
    original = _labels()
    current = original.copy()
    edit(current)
    assert changed_objects(original, current) == n


def test_the_count_is_what_the_before_after_comparison_judges():
    """The dock's "N object(s) corrected" and its "of the N you drew or reshaped" count the same objects."""
    original = _labels()
    current = original.copy()
    current[2:10, 26:36] = 9  # drawn over the edge of object 2: 9 drawn, 2 reshaped
    current[current == 3] = 0  # 3 erased
    judged = correction_agreement(original, current, current)
    assert changed_objects(original, current) == judged.n_fixed + judged.n_removed == 3


def test_labelled_region_is_the_marked_objects_and_a_ring_of_half_their_diameter():
    labels = np.zeros((100, 100), np.int32)
    yy, xx = np.mgrid[:100, :100]
    labels[(yy - 30) ** 2 + (xx - 30) ** 2 <= 10**2] = 1  # diameter about 20 px: a ring of 10
    labels[(yy - 70) ** 2 + (xx - 70) ** 2 <= 10**2] = 2
    region = labelled_region(labels)
    assert region[labels > 0].all()
    assert region[30, 49] and not region[30, 52]  # 19 px from the centre: 9 outside the edge; 22 px: out
    assert not region[5, 95] and not region[95, 5]  # far from both
    assert labelled_region(labels, margin=0).sum() == (labels > 0).sum()
    assert not labelled_region(np.zeros((8, 8), np.int32)).any()  # nothing marked: nothing trusted
