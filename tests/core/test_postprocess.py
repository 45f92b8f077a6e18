import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_loop.core.postprocess import (
    PostprocessConfig,
    foreground_probability,
    instances,
    instances_from_maps,
)
from napari_unet_loop.core.targets import class_map, distance_map


def _stack_from_labels(labels: np.ndarray) -> np.ndarray:
    """Ideal network outputs for ``labels``: one-hot classes, then the distance map."""
    classes = class_map(labels)
    onehot = np.stack([classes == k for k in range(3)]).astype(np.float32)
    return np.concatenate([onehot, distance_map(labels)[None]])


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_two_touching_discs_are_separated():
    shape = (60, 80)
    true = np.zeros(shape, np.int32)
    true[_disc(shape, 30, 25, 12)] = 1
    true[_disc(shape, 30, 48, 12) & (true == 0)] = 2  # overlapping discs: they share a border
    # one connected foreground: a plain connected-components labelling would merge them
    assert ndi.label(true > 0)[1] == 1
    labels = instances(_stack_from_labels(true))
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    for k in (1, 2):
        best = max(_iou(labels == j, true == k) for j in (1, 2))
        assert best > 0.85


def test_labels_cover_the_foreground():
    shape = (60, 80)
    true = np.zeros(shape, np.int32)
    true[_disc(shape, 30, 25, 12)] = 1
    true[_disc(shape, 30, 48, 12) & (true == 0)] = 2
    labels = instances(_stack_from_labels(true))
    np.testing.assert_array_equal(labels > 0, true > 0)


def test_min_size_removes_small_objects():
    shape = (40, 40)
    fg = np.zeros(shape, np.float32)
    dist = np.zeros(shape, np.float32)
    big = _disc(shape, 20, 20, 8)
    fg[big] = 1
    dist[big] = 1
    fg[2:4, 2:4] = 1  # 4 pixels
    dist[2:4, 2:4] = 1
    kept = instances_from_maps(fg, dist, PostprocessConfig(min_size=8))
    assert kept.max() == 1
    np.testing.assert_array_equal(kept == 1, big)
    both = instances_from_maps(fg, dist, PostprocessConfig(min_size=4))
    assert both.max() == 2
    assert (both[2:4, 2:4] > 0).all()


def test_seedless_foreground_regions_become_objects():
    shape = (40, 60)
    fg = np.zeros(shape, np.float32)
    dist = np.zeros(shape, np.float32)
    seeded = _disc(shape, 20, 15, 8)
    orphan = _disc(shape, 20, 45, 8)
    fg[seeded | orphan] = 0.9
    dist[seeded] = 0.9
    dist[orphan] = 0.2  # below the seed threshold everywhere
    labels = instances_from_maps(fg, dist, PostprocessConfig(seed_threshold=0.5))
    assert labels.max() == 2
    assert len(np.unique(labels[orphan])) == 1 and labels[orphan][0] > 0
    assert len(np.unique(labels[seeded])) == 1 and labels[seeded][0] > 0
    assert labels[orphan][0] != labels[seeded][0]


def test_thresholds_are_applied():
    shape = (30, 30)
    fg = np.zeros(shape, np.float32)
    disc = _disc(shape, 15, 15, 6)
    fg[disc] = 0.6
    dist = np.where(disc, 0.7, 0).astype(np.float32)
    assert instances_from_maps(fg, dist, PostprocessConfig(fg_threshold=0.5)).max() == 1
    assert instances_from_maps(fg, dist, PostprocessConfig(fg_threshold=0.7)).max() == 0


def test_labels_are_sequential():
    shape = (50, 50)
    fg = np.zeros(shape, np.float32)
    dist = np.zeros(shape, np.float32)
    for cy, cx, r in [(10, 10, 2), (10, 35, 6), (35, 10, 1), (35, 35, 6)]:
        d = _disc(shape, cy, cx, r)
        fg[d] = 1
        dist[d] = 1
    labels = instances_from_maps(fg, dist, PostprocessConfig(min_size=20))
    assert sorted(np.unique(labels)) == [0, 1, 2]


def test_higher_seed_threshold_splits_less():
    shape = (60, 80)
    true = np.zeros(shape, np.int32)
    true[_disc(shape, 30, 25, 12)] = 1
    true[_disc(shape, 30, 48, 12) & (true == 0)] = 2
    probs = _stack_from_labels(true)
    # distance merged into one smooth hill with a shallow dip between the discs
    probs[3] = np.where(true > 0, 0.6 + 0.3 * probs[3], 0)
    assert instances(probs, PostprocessConfig(seed_threshold=0.7)).max() == 2
    assert instances(probs, PostprocessConfig(seed_threshold=0.55)).max() == 1


def test_foreground_probability():
    probs = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(foreground_probability(probs), 1 - probs[0])


def test_instances_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected"):
        instances(np.zeros((3, 10, 10), np.float32))
    with pytest.raises(ValueError, match="expected"):
        instances(np.zeros((10, 10), np.float32))


@pytest.mark.parametrize(
    "kwargs", [{"fg_threshold": 0.0}, {"fg_threshold": 1.0}, {"seed_threshold": 1.5}, {"min_size": -1}]
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        PostprocessConfig(**kwargs)


def test_config_dict_round_trip():
    cfg = PostprocessConfig(0.4, 0.6, 20)
    assert PostprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        PostprocessConfig.from_dict({"fg_threshold": 0.5, "sigma": 2})


def test_tune_finds_better_thresholds_than_a_bad_start():
    from skimage.draw import disk

    from napari_unet_loop.core.postprocess import PostprocessConfig, instances_from_maps, tune
    from napari_unet_loop.core.targets import distance_map

    rng = np.random.default_rng(0)
    maps, truths = [], []
    for _ in range(3):
        lab = np.zeros((96, 96), np.int32)
        for i in range(1, 9):
            lab[disk(tuple(rng.integers(10, 86, 2)), int(rng.integers(5, 10)), shape=lab.shape)] = i
        fg = np.clip((lab > 0) * 0.7 + rng.normal(0, 0.1, lab.shape), 0, 1)  # a timid foreground
        maps.append((fg.astype(np.float32), distance_map(lab)))
        truths.append(lab)
    bad = PostprocessConfig(fg_threshold=0.8, seed_threshold=0.9, min_size=0)
    found = tune(maps, truths, start=bad)
    from napari_unet_loop.core.metrics import matching, pool

    ap_bad = pool([matching(t, instances_from_maps(f, d, bad)) for (f, d), t in zip(maps, truths)]).ap50
    assert found.start_ap50 == pytest.approx(ap_bad)
    assert found.ap50 > ap_bad + 0.2
    assert found.config.fg_threshold < 0.7
    assert found.evaluated < 10 * 7 * 8 * 4 / 3  # far fewer than the full grid


def test_tune_draws_the_masks_the_size_of_the_annotations_among_settings_of_equal_ap50():
    """Every foreground threshold finds all four discs; the lowest draws them as large as the truth."""
    from skimage.draw import disk

    from napari_unet_loop.core.postprocess import PostprocessConfig, tune
    from napari_unet_loop.core.targets import distance_map

    lab = np.zeros((96, 96), np.int32)
    for i, (c, r) in enumerate(zip(((24, 24), (24, 70), (70, 24), (70, 70)), (10, 12, 13, 15)), start=1):
        lab[disk(c, r, shape=lab.shape)] = i
    dist = distance_map(lab)
    fg = np.where(lab > 0, np.clip(0.6 + 1.2 * dist, 0, 1), 0).astype(np.float32)  # surest at the centres
    start = PostprocessConfig(0.85, 0.5, 24, 1.0)
    found = tune([(fg, dist)], [lab], start=start)
    assert found.start_ap50 == found.ap50 == 1.0  # every setting on the way finds all four
    assert found.by_ap50 == start  # AP@0.5 alone sees no reason to move
    assert found.config.fg_threshold <= 0.55 and found.seg > found.start_seg + 0.1
    assert found.n_objects == 4 and 0 < found.seg_gain_se < found.seg - found.start_seg


def test_tune_draws_the_masks_to_size_at_an_ap50_within_the_noise_of_the_best():
    """On 40 objects the search gives up one false object (AP@0.5 1.0 -> 0.976, within the noise 0.047)
    for masks the size of the annotations; AP@0.5 alone keeps the small masks that leave it out."""
    from skimage.draw import disk

    from napari_unet_loop.core.postprocess import PostprocessConfig, tune
    from napari_unet_loop.core.retune import tuning_noise
    from napari_unet_loop.core.targets import distance_map

    lab = np.zeros((150, 192), np.int32)
    for i in range(40):
        r, c = divmod(i, 8)
        lab[disk((12 + 24 * r, 12 + 24 * c), 7 + i % 3, shape=lab.shape)] = i + 1
    dist = distance_map(lab)
    fg = np.where(lab > 0, np.clip(0.6 + 1.2 * dist, 0, 1), 0).astype(np.float32)  # surest at the centres
    fg[125:145, 10:30] = 0.8  # a faint blob of 400 px: a false object at any threshold under 0.8
    start = PostprocessConfig(0.85, 0.5, 24, 1.0)
    found = tune([(fg, dist)], [lab], start=start)
    assert found.start_ap50 == 1.0 and found.by_ap50.fg_threshold >= 0.8  # AP@0.5 alone keeps the small masks
    assert found.config.fg_threshold <= 0.6  # the masks reach the annotations' edges, the blob with them
    assert 1.0 - tuning_noise(1.0, 40) <= found.ap50 < 1.0
    assert found.seg > found.start_seg + 0.1


def test_tune_reach_moves_only_the_foreground_threshold_and_keeps_the_starts_ap50():
    """The masks' reach: as large as the truth, down to where faint background blobs would become objects."""
    from skimage.draw import disk

    from napari_unet_loop.core.postprocess import PostprocessConfig, tune
    from napari_unet_loop.core.targets import distance_map

    lab = np.zeros((96, 96), np.int32)
    for i, (c, r) in enumerate(zip(((24, 24), (24, 70), (70, 24), (70, 70)), (10, 12, 13, 15)), start=1):
        lab[disk(c, r, shape=lab.shape)] = i
    dist = distance_map(lab)
    fg = np.where(lab > 0, np.clip(0.6 + 1.2 * dist, 0, 1), 0).astype(np.float32)
    fg[44:52, 4:12] = 0.52  # a faint blob: an object at any threshold under 0.52
    start = PostprocessConfig(0.85, 0.5, 24, 1.0)
    found = tune([(fg, dist)], [lab], start=start)
    reach = found.reach
    assert reach == PostprocessConfig(0.55, start.seed_threshold, start.min_size, start.dist_sigma)
    assert found.reach_seg > found.start_seg + 0.1
    assert 0 < found.reach_seg_se < found.reach_seg - found.start_seg


def test_tune_pairs_the_same_objects_when_a_match_in_unreviewed_pixels_leaves_one_out():
    """A true object at the reviewed edge whose match lies mostly in unreviewed pixels is left out with it
    at one threshold and scored at another: the per-object arrays still pair object by object (the
    search raised "operands could not be broadcast" on them, ending a dock fine-tune after training)."""
    from napari_unet_loop.core.postprocess import SettingScores, paired_gain_se, tune

    truth = np.zeros((64, 64), np.int32)
    fg, dist = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    ignore = np.zeros((64, 64), bool)
    ignore[:, 32:] = True
    truth[10:20, 24:34] = 1  # 20 of its 100 px unreviewed
    fg[10:20, 24:34], fg[12:16, 24:34] = 0.35, 0.9  # found whole only at a low threshold
    fg[10:19, 34:44] = 0.35  # ... and then with 90 unreviewed px: a match lying mostly there
    dist[10:20, 24:34], dist[12:16, 26:30] = 0.3, 0.9
    for i, c in enumerate((5, 18), start=2):  # two reviewed objects, found whole
        truth[40:50, c : c + 10], fg[40:50, c : c + 10] = i, 0.9
        dist[40:50, c : c + 10], dist[43:47, c + 3 : c + 7] = 0.3, 0.9
    scores = SettingScores([(fg, dist)], [truth], [ignore])
    high = scores(PostprocessConfig(0.5, 0.5, 8, 0.0))[2]
    low = scores(PostprocessConfig(0.3, 0.5, 8, 0.0))[2]
    np.testing.assert_array_equal(high, [0.0, 1.0, 1.0])  # the core alone: IoU 0.4, not covering
    assert low.shape == (3,) and np.isnan(low[0]) and (low[1:] == 1.0).all()  # left out with its match
    assert paired_gain_se(low, high) == 0.0  # only the objects scored both ways
    found = tune([(fg, dist)], [truth], start=PostprocessConfig(0.5, 0.5, 8, 0.0), ignores=[ignore])
    assert found.n_objects == 3


def test_paired_gain_se_leaves_out_objects_not_scored_on_both_sides():
    from napari_unet_loop.core.postprocess import paired_gain_se

    after, before = np.array([np.nan, 1.0, 0.5, 0.9]), np.array([0.2, 0.5, 0.5, np.nan])
    assert paired_gain_se(after, before) == pytest.approx(np.std([0.5, 0.0], ddof=1) / np.sqrt(2))
    assert paired_gain_se(np.array([np.nan, 1.0]), np.array([0.0, 0.5])) == np.inf  # one pair left
