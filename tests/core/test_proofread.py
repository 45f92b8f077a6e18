"""Object-level proofreading edits."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_unet_loop.core import proofread as pr


def apply(labels, edit):
    out = labels.copy()
    out[edit.box] = edit.after
    return out


@pytest.fixture
def plane():
    lab = np.zeros((120, 160), np.int32)
    lab[disk((30, 30), 12)] = 1
    lab[disk((30, 80), 12)] = 2
    # a peanut: two touching discs that the model merged into one object
    lab[disk((80, 60), 14)] = 3
    lab[disk((80, 86), 14)] = 3
    lab[75:78, 28:31] = 0  # no hole here; a hole in object 4:
    lab[disk((85, 130), 15)] = 4
    lab[84:87, 129:132] = 0
    lab[5:8, 150:153] = 5  # a tiny object
    return lab


def test_object_box_grows_until_the_object_is_inside():
    lab = np.zeros((1000, 1000), np.int32)
    lab[100:900, 450:460] = 7
    box = pr.object_box(lab, 7, (500, 455), start=8)
    assert box == (slice(100, 900), slice(450, 460))
    assert pr.object_box(lab, 7) == box
    with pytest.raises(pr.ProofreadError):
        pr.object_box(lab, 8, (500, 455))


def test_delete(plane):
    out = apply(plane, pr.delete(plane, (30, 30)))
    assert 1 not in out and (out == 2).sum() == (plane == 2).sum()
    with pytest.raises(pr.ProofreadError, match="background"):
        pr.delete(plane, (0, 0))


def test_merge(plane):
    out = apply(plane, pr.merge(plane, [(30, 30), (30, 80), (30, 80)]))
    assert 2 not in out and (out == 1).sum() == (plane == 1).sum() + (plane == 2).sum()
    with pytest.raises(pr.ProofreadError, match="at least two"):
        pr.merge(plane, [(30, 30), (30, 31)])
    with pytest.raises(pr.ProofreadError, match="at least two"):
        pr.merge(plane, [(30, 30), (0, 0)])


def test_split_at_seeds_follows_the_neck(plane):
    edit = pr.split(plane, [(80, 55), (78, 92)])
    out = apply(plane, edit)
    new = out[80, 86]
    assert out[80, 60] == 3 and new not in (0, 3) and new == plane.max() + 1
    assert (out[:, :70] == new).sum() < 15 and (out[:, 76:100] == 3).sum() < 15


def test_split_errors(plane):
    with pytest.raises(pr.ProofreadError, match="at least two"):
        pr.split(plane, [(80, 60)])
    with pytest.raises(pr.ProofreadError, match="different objects"):
        pr.split(plane, [(30, 30), (30, 80)])
    with pytest.raises(pr.ProofreadError, match="background"):
        pr.split(plane, [(80, 60), (0, 0)])
    with pytest.raises(pr.ProofreadError, match="same pixel"):
        pr.split(plane, [(80, 60), (80, 60)])


def test_cut_line(plane):
    out = apply(plane, pr.cut(plane, (60, 73), (100, 73)))
    assert out[80, 60] == 3 and out[80, 86] not in (0, 3)
    assert (out[plane == 3] == 0).sum() == 0  # no gap left on the line
    with pytest.raises(pr.ProofreadError, match="crosses no object"):
        pr.cut(plane, (110, 0), (110, 20))
    with pytest.raises(pr.ProofreadError, match="side to side"):
        pr.cut(plane, (30, 20), (30, 25))


def test_a_cut_line_ending_off_the_image_keeps_its_direction(plane):
    """The end point (300, 300) lies off the 120 x 160 plane: the line is cut at the border, not bent to (119, 159)."""
    off = pr.cut(plane, (60, 60), (300, 300))
    inside = pr.cut(plane, (60, 60), (119, 119))  # where the same line leaves the plane
    assert off.box == inside.box
    np.testing.assert_array_equal(off.after, inside.after)
    with pytest.raises(pr.ProofreadError, match="crosses no object"):
        pr.cut(plane, (-50, 0), (-10, 400))  # wholly above the plane


def test_fill_holes_and_grow_shrink(plane):
    out = apply(plane, pr.fill_holes(plane, (85, 120)))
    assert (out[84:87, 129:132] == 4).all()
    grown = apply(plane, pr.dilate(plane, (30, 30), 2))
    assert (grown == 1).sum() > (plane == 1).sum() and (grown == 2).sum() == (plane == 2).sum()
    shrunk = apply(plane, pr.erode(plane, (30, 30), 2))
    assert 0 < (shrunk == 1).sum() < (plane == 1).sum()
    with pytest.raises(pr.ProofreadError, match="too thin"):
        pr.erode(plane, (6, 151), 3)


def test_remove_small_and_relabel(plane):
    out = apply(plane, pr.remove_small(plane, 20))
    assert 5 not in out and 1 in out
    relabelled = apply(out, pr.relabel_sequential(out))
    assert sorted(np.unique(relabelled)) == [0, 1, 2, 3, 4]


def test_remove_small_and_relabel_take_huge_ids_without_a_table_up_to_them(plane):
    """uint32 ids reach 4e9: a lookup table or bincount up to the largest id would need gigabytes."""
    import resource

    big = np.where(plane > 0, plane.astype(np.uint32) + 3_000_000_000, 0).astype(np.uint32)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, hard))
    try:
        out = apply(big, pr.remove_small(big, 20))
        relabelled = apply(out, pr.relabel_sequential(out))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert 3_000_000_005 not in out and 3_000_000_001 in out
    assert sorted(np.unique(relabelled)) == [0, 1, 2, 3, 4] and relabelled.dtype == np.uint32


def test_doubt_table_ranks_the_merged_object_first(plane):
    table = pr.doubt_table(plane)
    assert table["label"][0] == 3  # the peanut: low solidity
    assert table["reason"][0] == "not convex"
    fg = (plane > 0).astype(np.float32)
    fg[plane == 2] = 0.55  # the model hesitated on object 2
    table = pr.doubt_table(plane, fg_prob=fg)
    assert table["label"][0] == 2 and table["reason"][0] == "uncertain"
    assert pr.doubt_table(np.zeros((10, 10), np.int32))["label"].size == 0


def _blob(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2


def test_add_object_takes_the_region_the_model_nearly_found():
    labels = np.zeros((80, 80), np.int32)
    labels[_blob(labels.shape, (20, 20), 8)] = 1
    fg = np.full(labels.shape, 0.02, np.float32)
    fg[_blob(labels.shape, (20, 20), 8)] = 0.9
    missed = _blob(labels.shape, (55, 55), 7)
    fg[missed] = 0.3  # below the usual 0.5: the model missed it
    edit = pr.add_object(labels, (55, 55), fg)
    after = labels.copy()
    after[edit.box] = edit.after
    assert set(np.unique(after)) == {0, 1, 2}
    assert ((after == 2) == missed).all()
    assert "added object 2" in edit.message


def test_add_object_does_not_spill_into_a_faint_background():
    labels = np.zeros((100, 100), np.int32)
    fg = np.full(labels.shape, 0.1, np.float32)  # a faint haze everywhere
    nucleus = _blob(labels.shape, (50, 50), 6)
    fg[nucleus] = 0.35
    edit = pr.add_object(labels, (50, 50), fg)
    assert ((edit.after > 0) == nucleus[edit.box]).all()  # the haze (0.1) is not taken


def test_add_object_refuses_objects_and_empty_places():
    labels = np.zeros((40, 40), np.int32)
    labels[5:10, 5:10] = 3
    fg = np.zeros(labels.shape, np.float32)
    with pytest.raises(pr.ProofreadError, match="object \\(3\\) here already"):
        pr.add_object(labels, (7, 7), fg)
    with pytest.raises(pr.ProofreadError, match="sees no separate object"):
        pr.add_object(labels, (30, 30), fg)


def test_add_object_adds_only_the_clicked_one_of_two_touching():
    labels = np.zeros((60, 80), np.int32)
    a, b = _blob(labels.shape, (30, 28), 9), _blob(labels.shape, (30, 46), 9)
    fg = np.where(a | b, 0.3, 0.0).astype(np.float32)
    yy, xx = np.mgrid[:60, :80]
    dist = np.maximum(
        np.clip(1 - np.hypot(yy - 30, xx - 28) / 9, 0, 1), np.clip(1 - np.hypot(yy - 30, xx - 46) / 9, 0, 1)
    ).astype(np.float32)
    edit = pr.add_object(labels, (30, 26), fg, dist)
    added = edit.after > 0
    assert added[a[edit.box] & ~b[edit.box]].all()
    assert not added[b[edit.box] & ~a[edit.box]].any()


def test_correct_worst_redraws_the_wrong_areas_from_the_truth():
    """The simulated proofreader fixes a merge and a miss, worst first, and leaves border slivers alone."""
    from napari_unet_loop.core.metrics import correction_agreement

    truth = np.zeros((100, 140), np.int32)
    truth[disk((25, 25), 10)] = 1  # found
    truth[disk((25, 70), 10)] = 2  # merged with 3 by the model
    truth[disk((25, 92), 10)] = 3
    truth[disk((70, 40), 10)] = 4  # missed
    truth[disk((70, 135), 10, shape=truth.shape)] = 5  # cut by the border, missed: a sliver nobody redraws
    pred = np.zeros_like(truth)
    pred[truth == 1] = 7
    pred[(truth == 2) | (truth == 3)] = 8
    pred[20:31, 75:85] = 8  # and the gap between them: IoU under 0.5 for both
    edit = pr.correct_worst(pred, truth, 5)
    fixed = apply(pred, edit)
    assert "3 object(s), 3 drawn" in edit.message
    np.testing.assert_array_equal(fixed == 7, truth == 1)  # right objects keep their id
    assert not (fixed[truth == 5]).any()  # the border sliver stays missed
    for t in (2, 3, 4):  # each drawn as the truth has it, with an id of its own
        ids = np.unique(fixed[truth == t])
        assert ids.size == 1 and ids[0] not in (0, 7, 8) and (fixed == ids[0]).sum() == (truth == t).sum()
    ag = correction_agreement(pred, fixed, truth)
    assert ag.n_fixed == ag.n_fixed_found == 3  # the truth gets every correction right
    assert pr.correct_worst(pred, truth, 1).message.startswith("corrected the areas of 1 object(s)")
    with pytest.raises(pr.ProofreadError, match="shape"):
        pr.correct_worst(pred, truth[:50], 1)


def test_negative_values_are_not_objects_to_remove_or_renumber(plane):
    """A layer marking pixels -1 (e.g. 'ignore'): Remove small and Relabel leave them, and 0 stays 0."""
    marked = plane.astype(np.int32)
    marked[0:2, 0:2] = -1  # 4 px, under any minimum size
    out = apply(marked, pr.remove_small(marked, 20))
    assert (out[0:2, 0:2] == -1).all() and 5 not in out
    relabelled = apply(out, pr.relabel_sequential(out))
    assert sorted(np.unique(relabelled)) == [-1, 0, 1, 2, 3, 4]
    assert (relabelled[out == 0] == 0).all() and (relabelled[0:2, 0:2] == -1).all()
