import numpy as np
import pytest

from napari_unet_loop.core.metrics import (
    ErrorCounts,
    MatchCounts,
    SegCounts,
    error_kinds,
    matching,
    matching_planes,
    pool,
    score,
)


def _example():
    """Three true objects, three predictions (hand-computed scores in the tests)."""
    true = np.zeros((10, 20), np.int32)
    pred = np.zeros((10, 20), np.int32)
    true[0:4, 0:4] = 1  # 16 px, predicted exactly
    pred[0:4, 0:4] = 3
    true[0:4, 6:11] = 2  # 20 px, predicted by 12 px inside it: IoU 0.6
    pred[0:4, 6:9] = 9
    true[6:10, 0:4] = 7  # missed
    pred[6:10, 14:18] = 4  # false positive
    return true, pred


def test_hand_computed_example():
    true, pred = _example()
    counts, seg = matching(true, pred)
    m50, m75 = counts[0.5], counts[0.75]
    assert (m50.tp, m50.fp, m50.fn) == (2, 1, 1)
    assert (m75.tp, m75.fp, m75.fn) == (1, 2, 2)
    assert m50.sum_iou == pytest.approx(1.6)
    assert m50.ap == pytest.approx(2 / 4)
    assert m75.ap == pytest.approx(1 / 5)
    assert m50.precision == pytest.approx(2 / 3)
    assert m50.recall == pytest.approx(2 / 3)
    assert m50.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m50.pq == pytest.approx(1.6 / (2 + 0.5 + 0.5))
    assert seg.n == 3
    assert seg.seg == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    s = score(true, pred)
    assert s.ap50 == pytest.approx(0.5) and s.ap75 == pytest.approx(0.2)
    assert s.f1_50 == pytest.approx(2 / 3) and s.pq == pytest.approx(1.6 / 3)
    assert s.seg == pytest.approx(1.6 / 3)
    assert (s.n_images, s.n_true, s.n_pred) == (1, 3, 3)
    assert set(s.to_dict()) >= {"ap50", "ap75", "f1_50", "pq", "seg", "n_true", "n_pred"}


def test_perfect_prediction_with_other_ids():
    true, _ = _example()
    pred = np.where(true > 0, true + 100, 0)
    s = score(true, pred)
    assert s.ap50 == s.ap75 == s.f1_50 == s.pq == s.seg == 1.0


def test_seg_needs_more_than_half_of_the_true_object():
    true = np.zeros((8, 8), np.int32)
    true[0:4, 0:4] = 1  # 16 px
    half = np.zeros_like(true)
    half[0:4, 0:2] = 1  # 8 px inside: IoU 0.5, covers exactly half
    counts, seg = matching(true, half)
    assert counts[0.5].tp == 1  # IoU >= 0.5 is a match ...
    assert seg.seg == 0.0  # ... but SEG needs more than half
    more = half.copy()
    more[0, 2] = 1  # 9 px inside
    _, seg = matching(true, more)
    assert seg.seg == pytest.approx(9 / 16)
    # a prediction larger than the true object: covers it fully, IoU counts
    big = np.zeros_like(true)
    big[0:4, 0:8] = 5
    _, seg = matching(true, big)
    assert seg.seg == pytest.approx(0.5)


def test_pooling_sums_counts_over_images():
    true, pred = _example()
    perfect = score(true, true)
    r1 = matching(true, pred)
    r2 = matching(true, true)
    pooled = pool([r1, r2])
    # pooled AP = total TP / (TP + FP + FN), not the mean of the per-image APs
    assert pooled.ap50 == pytest.approx((2 + 3) / (2 + 3 + 1 + 1))
    assert pooled.ap50 != pytest.approx((0.5 + perfect.ap50) / 2)
    assert pooled.ap75 == pytest.approx((1 + 3) / (1 + 3 + 2 + 2))
    assert pooled.seg == pytest.approx((1.6 + 3) / 6)
    assert pooled.pq == pytest.approx((1.6 + 3) / (5 + 0.5 + 0.5))
    assert (pooled.n_images, pooled.n_true, pooled.n_pred) == (2, 6, 6)
    m = r1[0][0.5] + r2[0][0.5]
    assert (m.tp, m.fp, m.fn) == (5, 1, 1)
    assert (r1[1] + r2[1]).n == 6


def test_pooling_nothing():
    s = pool([])
    assert s.n_images == 0 and s.ap50 == 1.0 and s.seg == 1.0


def test_counts_at_different_thresholds_do_not_add():
    with pytest.raises(ValueError):
        MatchCounts(0.5, 1) + MatchCounts(0.75, 1)
    assert (SegCounts(1.5, 2) + SegCounts(0.5, 1)).seg == pytest.approx(2 / 3)


def test_empty_images():
    empty = np.zeros((10, 10), np.int32)
    obj = empty.copy()
    obj[2:5, 2:5] = 1
    obj[6:9, 6:9] = 2
    both = score(empty, empty)
    assert both.ap50 == 1.0 and both.seg == 1.0 and both.n_true == both.n_pred == 0
    fp_only = matching(empty, obj)
    assert (fp_only[0][0.5].tp, fp_only[0][0.5].fp, fp_only[0][0.5].fn) == (0, 2, 0)
    assert score(empty, obj).ap50 == 0.0 and score(empty, obj).precision_50 == 0.0
    fn_only = score(obj, empty)
    assert fn_only.ap50 == 0.0 and fn_only.seg == 0.0 and fn_only.n_true == 2 and fn_only.recall_50 == 0.0


def test_images_without_background():
    true = np.full((6, 6), 3, np.int32)
    pred = np.full((6, 6), 8, np.int32)
    assert score(true, pred).ap75 == 1.0
    half = np.zeros((6, 6), np.int32)
    half[:, :4] = 1
    counts, seg = matching(true, half)
    assert counts[0.5].tp == 1 and seg.seg == pytest.approx(24 / 36)


def test_ignore_mask_drops_objects_mostly_inside_it():
    true, pred = _example()
    ignore = np.zeros(true.shape, bool)
    ignore[6:10, :] = True  # holds the missed true object and the false positive
    counts, seg = matching(true, pred, ignore=ignore)
    assert (counts[0.5].tp, counts[0.5].fp, counts[0.5].fn) == (2, 0, 0)
    assert seg.n == 2
    # an object exactly half inside the ignored region is kept
    ignore2 = np.zeros(true.shape, bool)
    ignore2[6:8, :] = True
    counts2, _ = matching(true, pred, ignore=ignore2)
    assert (counts2[0.5].fp, counts2[0.5].fn) == (1, 1)
    # an all-False mask changes nothing
    no_ignore, _ = matching(true, pred, ignore=np.zeros(true.shape, bool))
    assert no_ignore[0.5] == matching(true, pred)[0][0.5]
    # huge ids (a table of counts per id would not fit in memory) give the same answer
    big, _ = matching(true.astype(np.int64) * 10**12, pred.astype(np.int64) * 3 * 10**9, ignore=ignore)
    assert big[0.5] == counts[0.5]


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        matching(np.zeros((4, 4), int), np.zeros((4, 5), int))


def _reference(true, pred, thresholds):
    """Brute force: every one-to-one matching, the one with the largest summed IoU."""
    tids = [i for i in np.unique(true) if i]
    pids = [j for j in np.unique(pred) if j]
    iou = np.zeros((len(tids), len(pids)))
    cover = np.zeros((len(tids), len(pids)), bool)
    for a, i in enumerate(tids):
        for b, j in enumerate(pids):
            inter = np.sum((true == i) & (pred == j))
            union = np.sum((true == i) | (pred == j))
            iou[a, b] = inter / union
            cover[a, b] = 2 * inter > np.sum(true == i)

    def best(a, used, t):
        """(summed IoU, matches) of the best matching of true objects a.. to unused predictions."""
        if a == len(tids):
            return 0.0, 0
        options = [best(a + 1, used, t)]
        for b in range(len(pids)):
            if b not in used and iou[a, b] >= t:
                s, n = best(a + 1, used | {b}, t)
                options.append((s + iou[a, b], n + 1))
        return max(options)

    out = {}
    for t in thresholds:
        s, tp = best(0, frozenset(), t)
        out[t] = (tp, len(pids) - tp, len(tids) - tp, s)
    seg = sum(iou[a][cover[a]].sum() for a in range(len(tids)))
    return out, seg, len(tids)


def _random_labels(rng, shape, n, ids):
    labels = np.zeros(shape, np.int32)
    for k in range(n):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 12, size=2)
        labels[y : y + h, x : x + w] = ids[k]
    return labels


@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (24, 24)
    true = _random_labels(rng, shape, 5, rng.choice(np.arange(1, 50), 5, replace=False))
    # predictions: the true objects jittered, plus strays
    pred = np.zeros(shape, np.int32)
    for k, i in enumerate(np.unique(true)[1:]):
        ys, xs = np.nonzero(true == i)
        dy, dx = rng.integers(-2, 3, size=2)
        pred[np.clip(ys + dy, 0, 23), np.clip(xs + dx, 0, 23)] = k + 1
    pred = np.where(pred > 0, pred, _random_labels(rng, shape, 2, [10, 11]))
    thresholds = (0.1, 0.3, 0.5, 0.75, 0.9)
    counts, seg = matching(true, pred, thresholds=thresholds)
    ref, ref_seg, n_true = _reference(true, pred, thresholds)
    for t in thresholds:
        tp, fp, fn, s = ref[t]
        c = counts[t]
        assert (c.tp, c.fp, c.fn) == (tp, fp, fn), f"threshold {t}"
        assert c.sum_iou == pytest.approx(s)
    assert seg.n == n_true
    assert seg.total == pytest.approx(ref_seg)


def test_low_threshold_matching_is_one_to_one_and_optimal():
    # one prediction overlaps two true objects: it can match only one of them
    true = np.zeros((4, 12), np.int32)
    true[:, 0:6] = 1
    true[:, 6:12] = 2
    pred = np.zeros_like(true)
    pred[:, 2:10] = 1
    pred[:, 10:12] = 2  # IoU with true 2: 2/6
    counts, _ = matching(true, pred, thresholds=(0.1,))
    c = counts[0.1]
    # best: pred 1 <-> true 1 (IoU 4/10) and pred 2 <-> true 2 (IoU 2/6): two matches
    assert (c.tp, c.fp, c.fn) == (2, 0, 0)
    assert c.sum_iou == pytest.approx(4 / 10 + 2 / 6)


def test_stacks_are_matched_plane_by_plane():
    true = np.zeros((2, 8, 8), np.int32)
    true[0, :3, :3], true[0, 5:, 5:] = 1, 2
    true[1, :3, 5:], true[1, 5:, :3] = 3, 4
    pred = np.zeros_like(true)  # a perfect prediction numbered 1..N in each plane
    pred[0][true[0] == 1], pred[0][true[0] == 2] = 1, 2
    pred[1][true[1] == 3], pred[1][true[1] == 4] = 1, 2
    counts, seg = matching_planes(true, pred)
    assert (counts[0.5].tp, counts[0.5].fp, counts[0.5].fn) == (4, 0, 0)
    assert seg.seg == 1.0
    assert pool([matching(true, pred)]).ap50 < 1.0  # as one volume, ids shared by planes merge
    assert matching_planes(true[0], pred[0])[0][0.5] == matching(true[0], pred[0])[0][0.5]


def test_correction_agreement_counts_only_what_the_user_changed():
    from napari_unet_loop.core.metrics import correction_agreement

    original = np.zeros((40, 40), np.int32)
    original[2:8, 2:8] = 1  # kept as is
    original[10:16, 10:30] = 2  # a merge of three the user splits (2 keeps a third)
    original[30:36, 30:36] = 4  # a false positive the user erases
    corrected = original.copy()
    corrected[10:16, 17:24] = 3
    corrected[10:16, 24:30] = 6
    corrected[30:36, 30:36] = 0
    corrected[20:26, 2:8] = 5  # a missed object the user paints
    old = correction_agreement(original, corrected, original)
    assert (old.n_fixed, old.n_fixed_found, old.n_removed, old.n_removed_found) == (4, 0, 1, 1)
    new = corrected.copy()
    new[20:26, 2:8] = 0  # the new model still misses the painted one
    agree = correction_agreement(original, corrected, new)
    assert (agree.n_fixed, agree.n_fixed_found, agree.n_removed, agree.n_removed_found) == (4, 3, 1, 0)
    none = correction_agreement(original, original, original)
    assert (none.n_fixed, none.n_removed) == (0, 0)


def test_correction_agreement_does_not_credit_one_object_twice():
    from napari_unet_loop.core.metrics import correction_agreement

    original = np.zeros((10, 20), np.int32)
    original[2:8, 2:18] = 1  # the old model's merge
    corrected = original.copy()
    corrected[2:8, 10:18] = 2  # split into equal halves: IoU 0.5 with the merge each
    agree = correction_agreement(original, corrected, original)
    assert (agree.n_fixed, agree.n_fixed_found) == (2, 0)


def _errors_scene():
    """One true object of each fate, side by side on a 40 x 120 canvas, and its segmentation."""
    true = np.zeros((40, 120), np.int32)
    pred = np.zeros_like(true)
    true[5:15, 5:15] = 1  # found
    pred[5:15, 5:15] = 7
    true[5:15, 20:30] = 2  # missed: nothing there
    true[5:15, 35:45] = 3  # split in three (the largest piece: IoU 0.4)
    pred[5:15, 35:38], pred[5:15, 38:41], pred[5:15, 41:45] = 8, 9, 13
    true[5:15, 50:53], true[5:15, 53:56], true[5:15, 56:60] = 4, 5, 14  # three neighbours merged into one
    pred[5:15, 50:60] = 10
    true[5:15, 65:75] = 6  # outline too far off: a prediction three times as large
    pred[3:20, 63:80] = 11
    pred[25:35, 100:110] = 12  # invented: no true object there
    return true, pred


def test_error_kinds_name_each_objects_fate():
    true, pred = _errors_scene()
    e = error_kinds(true, pred)
    assert e == ErrorCounts(found=1, missed=1, split=1, merged=3, outline=1, invented=1, pieces=5)
    # the same bookkeeping as matching: found = TP, lost true objects = FN, unmatched predictions = FP
    m = matching(true, pred)[0][0.5]
    assert (e.found, e.missed + e.split + e.merged + e.outline, e.invented + e.pieces) == (m.tp, m.fn, m.fp)
    assert e.summary() == "1 missed, 3 merged, 1 split, 1 outline off; 1 invented, 5 extra pieces"


def test_error_kinds_pool_over_images_and_planes_and_skip_unreviewed_objects():
    true, pred = _errors_scene()
    one = error_kinds(true, pred)
    assert error_kinds(np.stack([true, true]), np.stack([pred, pred])) == one + one
    ignore = np.zeros(true.shape, bool)
    ignore[:, 18:32] = True  # the missed object was never reviewed
    assert error_kinds(true, pred, ignore=ignore).missed == 0
    reviewed = error_kinds(true, pred, ignore=ignore)
    stacked = error_kinds(np.stack([true, true]), np.stack([pred, pred]), np.stack([ignore, ignore]))
    assert stacked == reviewed + reviewed  # a stack's ignore is split into planes too
    assert error_kinds(true, true) == ErrorCounts(found=len(np.unique(true)) - 1)
    assert error_kinds(np.zeros((5, 5), int), np.zeros((5, 5), int)) == ErrorCounts()
    with pytest.raises(ValueError, match="shape"):
        error_kinds(true, pred[:, :10])


def test_an_object_cut_by_the_edge_of_the_reviewed_region_is_left_out_on_both_sides():
    """A true object mostly unreviewed is left out; its prediction, exactly half unreviewed, was kept and
    counted as invented (AP@0.5 0 for a right answer). Either side left out takes its partner along."""
    from napari_unet_loop.core.metrics import drop_ignored, score

    t = np.zeros((1, 12), np.int32)
    t[0, :10] = 1
    p = t.copy()
    p[0, :2] = 0  # IoU 0.8 with the only true object
    ig = np.zeros(t.shape, bool)
    ig[0, :6] = True  # 6 of the object's 10 pixels, 4 of the prediction's 8
    s = score(t, p, ignore=ig)
    assert s.n_true == 0 and s.n_pred == 0 and s.ap50 == 1.0
    # the other way round: the prediction mostly unreviewed, the true object not
    t2, p2 = np.zeros((1, 12), np.int32), np.zeros((1, 12), np.int32)
    t2[0, 2:12], p2[0, 0:10] = 1, 1
    ig2 = np.zeros(t2.shape, bool)
    ig2[0, :6] = True  # 4 of the object's 10 pixels, 6 of the prediction's 10
    kept_t, kept_p = drop_ignored(t2, p2, ig2)
    assert not kept_t.any() and not kept_p.any()
    # a reviewed object swallowed by a prediction lying mostly in unreviewed pixels is still missed
    t4, p4 = np.zeros((1, 30), np.int32), np.zeros((1, 30), np.int32)
    t4[0, 20:24], p4[0, 0:24] = 3, 4  # IoU 4 / 24: no match
    ig4 = np.zeros(t4.shape, bool)
    ig4[0, :18] = True
    kept_t, kept_p = drop_ignored(t4, p4, ig4)
    assert kept_t[0, 20] == 3 and not kept_p.any()
    assert score(t4, p4, ignore=ig4).n_true == 1
    # objects away from the edge are untouched; a prediction on a reviewed object stays
    t3 = np.zeros((1, 30), np.int32)
    t3[0, 20:28] = 2
    p3 = t3.copy()
    p3[0, 2:8] = 5  # an invented object in the unreviewed pixels goes, as before
    ig3 = np.zeros(t3.shape, bool)
    ig3[0, :10] = True
    a, b = drop_ignored(t3, p3, ig3)
    p3[0, 2:8] = 0
    np.testing.assert_array_equal(a, t3)
    np.testing.assert_array_equal(b, p3)


def test_error_kinds_of_a_plane_segmented_empty_counts_its_objects_missed():
    """A stack whose second plane the model found nothing in: every true object of it is missed (it crashed)."""
    from napari_unet_loop.core.metrics import error_kinds

    t = np.zeros((2, 4, 4), int)
    t[:, :2, :2] = 1
    p = t.copy()
    p[1] = 0
    e = error_kinds(t, p)
    assert (e.found, e.missed, e.invented) == (1, 1, 0)
    assert error_kinds(t[1], p[1]).missed == 1
