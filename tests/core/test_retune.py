"""The threshold re-tune that ends a fine-tune (``core.retune``)."""

import json

import numpy as np
import pytest

from napari_unet_loop.core import retune
from napari_unet_loop.core.sampling import Sample


def test_validation_objects_counts_what_validation_scores():
    """An object mostly in unreviewed pixels is left out of the scores, so it does not shrink the noise bar."""

    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:15] = 1  # reviewed
    labels[5:15, 25:35] = 2  # 30 of 100 pixels unreviewed: scored
    labels[5:15, 45:55] = 3  # 70 of 100 pixels unreviewed: not scored
    ignore = np.zeros(labels.shape, bool)
    ignore[5:15, 32:35] = True
    ignore[5:15, 48:] = True
    sample = Sample(np.zeros((1, 40, 60), np.float32), labels, ignore)
    assert retune.validation_objects([sample]) == 2
    assert retune.validation_objects([Sample(np.zeros((1, 40, 60), np.float32), labels)]) == 3


def test_retuned_thresholds_are_kept_only_when_the_gain_clears_the_bar(monkeypatch, discs):
    from napari_unet_loop.core.postprocess import PostprocessConfig, Tuned

    labels = discs((120, 120), 9, radius=(6, 8))
    val = [Sample(np.zeros((1, 120, 120), np.float32), labels)]
    start, found = PostprocessConfig(0.5, 0.5, 8), PostprocessConfig(0.6, 0.4, 16)
    assert retune.validation_objects(val) == labels.max() == 9
    noise = retune.tuning_noise(0.5, 9)
    assert noise == pytest.approx((0.25 / 9) ** 0.5)
    assert retune.tuning_noise(1.0, 100) == pytest.approx((0.09 / 100) ** 0.5)  # never zero
    # trust: the starting model's validation AP@0.5 raises the bar to noise x (1 + trust)
    for gain, trust, kept in (
        (noise * 0.9, 0.0, False),
        (noise * 1.1, 0.0, True),
        (noise * 1.1, 0.8, False),  # a model that already did well: its thresholds stay
        (noise * 1.9, 0.8, True),
        (noise * 1.1, float("nan"), True),  # no measure of trust: the noise alone
    ):
        monkeypatch.setattr(
            "napari_unet_loop.core.retune.tune_thresholds",
            lambda *a, g=gain, **k: Tuned(found, 0.5 + g, 0.7, 0.5, 0.7, 0.01, 9, found, 20),
        )
        r = retune.retune(None, val, "cpu", start, trust=trust)
        assert r.kept is kept and r.postprocess == (found if kept else start)
        assert r.found == found and r.to_dict()["found"] == found.to_dict()  # what the search proposed, kept or not
        assert r.to_dict()["validation_objects"] == 9 and r.to_dict()["kept"] is kept
        assert ("starting thresholds" in r.verdict()) is not kept
        assert ("already scored 0.80" in r.verdict()) is (trust == 0.8 and not kept)


def test_retuned_thresholds_that_fit_the_masks_better_are_kept_at_no_loss_of_ap50(monkeypatch, discs):
    """AP@0.5 at its top on a few objects: a SEG gain beyond its paired noise keeps the thresholds."""
    from napari_unet_loop.core.postprocess import PostprocessConfig, Tuned

    labels = discs((120, 120), 9, radius=(6, 8))
    val = [Sample(np.zeros((1, 120, 120), np.float32), labels)]
    start, found = PostprocessConfig(0.85, 0.5, 24), PostprocessConfig(0.65, 0.5, 24)
    for ap_after, seg_after, se, trust, kept in (
        (1.0, 0.85, 0.01, 0.0, True),  # SEG +0.03 > 0.01: masks the size of the annotations
        (1.0, 0.85, 0.02, 0.6, False),  # the bar grows with trust: 0.032
        (1.0, 0.825, 0.01, 0.0, False),  # +0.005: within the noise
        (0.9, 0.90, 0.01, 0.0, False),  # a SEG gain that costs AP@0.5 is not one
        (1.0, 0.90, float("inf"), 0.0, False),  # one object: no measure of the noise
    ):
        monkeypatch.setattr(
            "napari_unet_loop.core.retune.tune_thresholds",
            lambda *a, t=Tuned(found, ap_after, seg_after, 1.0, 0.82, se, 9, start, 30), **k: t,
        )
        r = retune.retune(None, val, "cpu", start, trust=trust)
        assert (r.kept, r.for_seg, r.for_ap50) == (kept, kept, False)
        assert r.postprocess == (found if kept else start)
        assert ("masks fit the annotations better (SEG 0.820 -> 0.850" in r.verdict()) is kept
        record = r.to_dict()
        assert record["seg_before"] == 0.82 and record["seg_after"] == round(seg_after, 4)
        assert record["seg_noise"] == (None if se == float("inf") else se)
        json.dumps(record)  # the card's record stays JSON (no inf)


def _refused_search_with_reach(monkeypatch, start, found, reach, reach_seg=0.94, reach_se=0.01):
    """A search whose thresholds clear neither bar (AP@0.5 1.0 -> 1.0; SEG +0.05, noise 0.03 x 2 at trust 1.0),
    and its reach: the start with only the foreground threshold moved, SEG 0.90 -> ``reach_seg``."""
    from napari_unet_loop.core.postprocess import Tuned

    t = Tuned(found, 1.0, 0.95, 1.0, 0.90, 0.03, 9, found, 30, reach, reach_seg, reach_se)
    monkeypatch.setattr("napari_unet_loop.core.retune.tune_thresholds", lambda *a, **k: t)


def test_the_masks_reach_is_kept_past_its_noise_when_the_search_clears_no_bar(monkeypatch, discs):
    """The start's thresholds with only the foreground threshold moved: kept when their SEG gain beats its
    paired noise alone, however well the start did on the stripe (trust raises neither side of that test)."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    val = [Sample(np.zeros((1, 120, 120), np.float32), labels)]
    start, found = PostprocessConfig(0.85, 0.5, 24, 1.0), PostprocessConfig(0.65, 0.4, 16, 1.0)
    reach = PostprocessConfig(0.65, 0.5, 24, 1.0)
    for reach_seg, reach_se, moved, kept in (
        (0.94, 0.01, reach, True),  # +0.04 > 0.01
        (0.94, 0.05, reach, False),  # within its noise
        (0.94, float("inf"), reach, False),  # one object: no measure of the noise
        (0.90, 0.0, start, False),  # the start's own foreground threshold was the best: nothing moved
    ):
        _refused_search_with_reach(monkeypatch, start, found, moved, reach_seg, reach_se)
        r = retune.retune(None, val, "cpu", start, trust=1.0)
        assert not r.for_ap50 and not r.for_seg  # the search's own: refused
        assert (r.kept, r.by_reach, r.for_reach) == (kept, kept, kept)
        assert r.postprocess == (reach if kept else start) and r.found == found
        record = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        assert record["by_reach"] is kept and record["found_for_reach"] == moved.to_dict()
        if kept:
            assert r.verdict() == (
                "kept the starting thresholds with the foreground threshold at 0.65 (was 0.85): the masks fit the "
                "annotations better (SEG 0.900 -> 0.940, gain > 0.010), no fewer validation objects found"
            )
        else:
            assert r.verdict().startswith("kept the starting thresholds: the gain (+0.000) is within the noise")
    # a search that clears a bar is kept as it is: the reach is a fallback, not a rival
    _refused_search_with_reach(monkeypatch, start, found, reach)
    r = retune.retune(None, val, "cpu", start, trust=0.0)
    assert r.for_seg and r.postprocess == found and not r.by_reach


def test_the_veto_checks_the_reach_when_it_is_kept(monkeypatch, discs):
    """The reach kept on the stripe is checked on the training images like the search's thresholds, and turned
    down when it segments them worse; the verdict names the foreground threshold that was turned down."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    samples = [Sample(np.zeros((1, 120, 120), np.float32), labels) for _ in range(3)]
    start, found = PostprocessConfig(0.5, 0.3, 8), PostprocessConfig(0.45, 0.2, 8)
    reach = PostprocessConfig(0.99, 0.3, 8)  # on blurred maps: small masks, none matching at IoU 0.5
    _refused_search_with_reach(monkeypatch, start, found, reach)
    calls = []
    _maps_of(monkeypatch, calls, blur=1.5)
    r = retune.retune(None, samples[:1], "cpu", start, trust=1.0, whole=samples)
    assert r.vetoed and not r.kept and r.by_reach and r.postprocess == start and calls == [1, 1, 1]
    assert r.on_training["found"]["ap50"] < r.on_training["start"]["ap50"] == 1.0
    assert r.verdict().startswith(
        "kept the starting thresholds: the starting ones with the foreground threshold at 0.99 (was 0.5; validation "
        "SEG 0.900 -> 0.940) segment the 3 training images worse (AP50 1.000 -> "
    )
    # a reach that does as well on them stays
    _refused_search_with_reach(monkeypatch, start, found, PostprocessConfig(0.45, 0.3, 8))
    kept = retune.retune(None, samples[:1], "cpu", start, trust=1.0, whole=samples)
    assert kept.kept and kept.by_reach and not kept.vetoed and kept.postprocess == PostprocessConfig(0.45, 0.3, 8)


def test_retune_searches_the_candidate_values_it_is_given(monkeypatch, discs):
    """``search`` narrows the threshold search (bench_retune's variants); the bar judges what it finds."""
    from napari_unet_loop.core.postprocess import PostprocessConfig, tune

    labels = discs((96, 96), 6, radius=(6, 8))
    fg = (labels > 0).astype(np.float32)
    maps = [(fg, fg)]
    monkeypatch.setattr(
        "napari_unet_loop.core.retune.tune_thresholds",
        lambda net, val, device, start, precision, **search: tune(maps, [labels], start=start, **search),
    )
    val = [Sample(np.zeros((1, 96, 96), np.float32), labels)]
    start = PostprocessConfig(0.5, 0.5, 500)  # drops every object: the search lowers the minimum size
    free = retune.retune(None, val, "cpu", start)
    narrowed = retune.retune(None, val, "cpu", start, min_sizes=(400, 600))
    assert free.kept and free.found.min_size < 200 and free.after == 1.0
    assert narrowed.found.min_size in (400, 500, 600) and narrowed.after < free.after


def test_the_verdict_without_validation_objects_says_so():
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.retune import Retuned, tuning_noise

    r = Retuned(PostprocessConfig(), 0.0, 0.0, tuning_noise(0.0, 0), False, 0, 0.5, PostprocessConfig())
    assert r.verdict() == "kept the starting thresholds: no validation object to judge a gain by"
    assert "inf" not in r.verdict()
    record = json.dumps(r.to_dict(), allow_nan=False)  # strict JSON: no Infinity in the card
    assert json.loads(record)["noise"] is None and json.loads(record)["bar"] is None


def test_the_verdict_on_thresholds_that_find_fewer_objects_says_so():
    """The SEG step may give up objects within the noise; refused, that is a loss, not a gain within the noise."""
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.retune import Retuned, tuning_noise

    found = PostprocessConfig(0.4, 0.5, 8, 1.0)
    r = Retuned(PostprocessConfig(), 0.8, 0.75, tuning_noise(0.8, 30), False, 30, 0.0, found, 0.70, 0.78, 0.01)
    assert not r.for_ap50 and not r.for_seg
    assert r.verdict() == (
        "kept the starting thresholds: the re-tuned ones, chosen for their masks (SEG 0.700 -> 0.780), "
        "find fewer of the 30 validation objects (AP50 0.800 -> 0.750)"
    )


def _kept_found(monkeypatch, start, found):
    """The stripe's search finds ``found`` and clears the bar (AP@0.5 0.5 -> 0.9 on 9 objects)."""
    from napari_unet_loop.core.postprocess import Tuned

    monkeypatch.setattr(
        "napari_unet_loop.core.retune.tune_thresholds",
        lambda *a, **k: Tuned(found, 0.9, 0.8, 0.5, 0.7, 0.01, 9, found, 20),
    )


def _maps_of(monkeypatch, calls, blur=0.0):
    """The network's maps on each sample: its own labels' foreground, blurred by ``blur`` (sigma, px)."""
    from scipy import ndimage as ndi

    def maps(net, samples, device, precision="auto", tile=None, tta=False):
        calls.append(len(samples))
        fg = [ndi.gaussian_filter((s.labels > 0).astype(np.float32), blur) for s in samples]
        return [(f, f) for f in fg], [s.labels for s in samples], [s.ignore for s in samples]

    monkeypatch.setattr("napari_unet_loop.core.retune.prediction_maps", maps)


def test_thresholds_that_segment_the_training_images_worse_are_vetoed(monkeypatch, discs):
    """Re-tuned thresholds that clear the bar on the stripe but lose both AP@0.5 and SEG on the training
    images, whole, give way to the start's; the evidence is in the record and the verdict."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    val = [Sample(np.zeros((1, 120, 120), np.float32), labels)]
    whole = [Sample(np.zeros((1, 120, 120), np.float32), labels)]
    start, found = PostprocessConfig(0.5, 0.5, 8), PostprocessConfig(0.5, 0.5, 5000)  # drops every object
    _kept_found(monkeypatch, start, found)
    calls = []
    _maps_of(monkeypatch, calls)
    r = retune.retune(None, val, "cpu", start, whole=whole)
    assert r.vetoed and not r.kept and r.postprocess == start and r.found == found and calls == [1]
    assert r.on_training == {"images": 1, "start": {"ap50": 1.0, "seg": 1.0}, "found": {"ap50": 0.0, "seg": 0.0}}
    assert r.verdict() == (
        "kept the starting thresholds: the re-tuned ones (validation AP50 0.500 -> 0.900) segment the 1 "
        "training image worse (AP50 1.000 -> 0.000, SEG 1.000 -> 0.000)"
    )
    record = json.loads(json.dumps(r.to_dict()))
    assert record["vetoed"] is True and record["kept"] is False
    assert record["on_training_images"]["found"] == {"ap50": 0.0, "seg": 0.0}
    # without the training images: no check, nothing predicted
    calls.clear()
    plain = retune.retune(None, val, "cpu", start)
    assert plain.kept and plain.postprocess == found and not plain.vetoed and plain.on_training is None
    assert plain.to_dict()["vetoed"] is False and calls == []


def test_where_the_start_stays_the_training_images_choose_the_foreground_threshold(monkeypatch, discs):
    """Nothing cleared a bar on the stripe: the start with only its foreground threshold moved to the best SEG
    on the training images (no fewer objects found there) is kept when its per-object gain there beats its
    noise; the network runs once per training image, the verdict says on what it was chosen."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    samples = [Sample(np.zeros((1, 120, 120), np.float32), labels) for _ in range(3)]
    start, found = PostprocessConfig(0.9, 0.3, 8), PostprocessConfig(0.6, 0.2, 8)
    _refused_search_with_reach(monkeypatch, start, found, start)  # the stripe's reach: the start's own
    calls = []
    _maps_of(monkeypatch, calls, blur=1.5)  # blurred discs: at 0.9 the masks are drawn too small
    r = retune.retune(None, samples[:1], "cpu", start, trust=1.0, whole=samples)
    assert calls == [1, 1, 1] and r.kept and r.by_training and not r.by_reach and not r.vetoed
    moved = r.postprocess
    assert moved == r.on_training_reach and moved.fg_threshold < 0.9
    assert (moved.seed_threshold, moved.min_size, moved.dist_sigma) == (0.3, 8, start.dist_sigma)
    trained = r.on_training
    assert trained["images"] == 3 and "found" not in trained  # nothing else was checked there
    assert trained["reach"]["seg"] > trained["start"]["seg"] and trained["reach"]["ap50"] >= trained["start"]["ap50"]
    assert trained["reach"]["gain"] > trained["reach"]["noise"]
    record = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert record["by_training"] is True and record["found_on_training"] == moved.to_dict() and record["kept"]
    verdict = r.verdict()
    assert verdict.startswith(
        f"kept the starting thresholds with the foreground threshold at {moved.fg_threshold:g} (was 0.9): on the 3 "
        "training images, whole, the masks fit the annotations better (SEG "
    )
    assert verdict.endswith(
        "the validation data alone kept them: the gain (+0.000) is within the noise of 9 "
        "validation objects (+-0.100, x2.00 because the starting model already scored 1.00 on them)"
    )
    # only the foreground thresholds the search was given; none but the start's: nothing moves
    r = retune.retune(None, samples[:1], "cpu", start, trust=1.0, whole=samples, fg_thresholds=(0.9,))
    assert not r.kept and r.postprocess == start and r.on_training_reach is None and "reach" not in r.on_training
    # a gain within its noise (one object: no measure of the noise) is recorded, not kept
    one = discs((120, 120), 1, radius=(8, 8))
    single = [Sample(np.zeros((1, 120, 120), np.float32), one)]
    r = retune.retune(None, single, "cpu", start, trust=1.0, whole=single)
    assert not r.kept and not r.by_training and r.postprocess == start and r.on_training_reach is not None
    assert r.on_training["reach"]["noise"] is None  # no measure of the noise on one object; strict JSON in the card
    json.dumps(r.to_dict(), allow_nan=False)
    # stopped before the training images were segmented: the start's stay, no check claimed
    import threading

    stop = threading.Event()
    stop.set()
    r = retune.retune(None, samples[:1], "cpu", start, trust=1.0, whole=samples, stop=stop)
    assert not r.kept and r.postprocess == start and not r.check_stopped and r.on_training is None


def test_after_a_veto_the_training_images_may_still_move_the_foreground_threshold(monkeypatch, discs):
    """The search's thresholds turned down on the training images: the same maps then choose the foreground
    threshold alone; the verdict and the dock's note say the validation data's choice was turned down."""
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.gui.finetune_report import thresholds_note

    labels = discs((120, 120), 9, radius=(6, 8))
    samples = [Sample(np.zeros((1, 120, 120), np.float32), labels) for _ in range(3)]
    start, found = PostprocessConfig(0.9, 0.3, 8), PostprocessConfig(0.9, 0.3, 5000)  # found drops every object
    _kept_found(monkeypatch, start, found)
    calls = []
    _maps_of(monkeypatch, calls, blur=1.5)
    r = retune.retune(None, samples[:1], "cpu", start, whole=samples)
    assert calls == [1, 1, 1] and r.vetoed and r.kept and r.by_training and r.postprocess.fg_threshold < 0.9
    assert r.on_training["found"] == {"ap50": 0.0, "seg": 0.0} and r.to_dict()["on"] == "training images"
    assert (
        "); the validation data's choice was turned down: the re-tuned ones (validation AP50 0.500 -> 0.900) "
        "segment the 3 training images worse (AP50 " in r.verdict()
    )
    assert thresholds_note(r).endswith("; the thresholds chosen on the validation tiles segmented them worse.")


def test_the_training_images_threshold_is_kept_only_past_its_paired_noise():
    """Mixed per-object gains (some objects better, some worse) stay within their noise; steady ones do not."""
    from napari_unet_loop.core.postprocess import PostprocessConfig
    from napari_unet_loop.core.retune import Retuned, reach_on_training

    start = PostprocessConfig(0.85, 0.5, 24)

    def judged():
        return Retuned(start, 1.0, 1.0, 0.1, False, 3, start=start)

    def scores_of(per_object):  # per foreground threshold: each object's SEG; AP@0.5 1.0 throughout
        def scores(pp):
            o = np.asarray(per_object.get(pp.fg_threshold, per_object[0.85]), float)
            return 1.0, float(np.nanmean(o)) if np.isfinite(o).any() else 1.0, o

        return scores

    mixed = scores_of({0.85: [0.8, 0.8, 0.8], 0.6: [0.95, 0.7, 0.85]})  # gain +0.033, noise 0.073
    r = reach_on_training(judged(), mixed, 2, (0.85, 0.6))
    assert not r.kept and r.on_training_reach.fg_threshold == 0.6 and r.postprocess == start
    assert r.on_training["reach"]["gain"] < r.on_training["reach"]["noise"]
    steady = scores_of({0.85: [0.8, 0.8, 0.8], 0.6: [0.85, 0.86, 0.84]})
    r = reach_on_training(judged(), steady, 2, (0.6, 0.85))
    assert r.kept and r.by_training and r.postprocess.fg_threshold == 0.6
    assert r.on_training == {
        "images": 2,
        "start": {"ap50": 1.0, "seg": 0.8},
        "reach": {"fg_threshold": 0.6, "ap50": 1.0, "seg": 0.85, "gain": 0.05, "noise": 0.0058},
    }
    unscored = scores_of({0.85: [0.8, 0.8], 0.6: [np.nan, np.nan]})  # no object scored both ways: nothing moves
    r = reach_on_training(judged(), unscored, 1, (0.6,))
    assert not r.kept and r.on_training_reach is None and "reach" not in r.on_training
    kept = judged()
    kept.kept = True  # thresholds the validation data kept (and the veto passed): not looked at again
    assert reach_on_training(kept, steady, 2, (0.6,)).on_training is None and kept.postprocess == start


def test_thresholds_that_lose_only_one_measure_on_the_training_images_are_kept(monkeypatch, discs):
    """The veto needs a loss on both AP@0.5 and SEG: masks drawn tighter (SEG down, AP@0.5 the same) stay."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    samples = [Sample(np.zeros((1, 120, 120), np.float32), labels) for _ in range(20)]
    start, found = PostprocessConfig(0.5, 0.3, 8), PostprocessConfig(0.8, 0.3, 8)  # the same objects, smaller
    _kept_found(monkeypatch, start, found)
    calls = []
    _maps_of(monkeypatch, calls, blur=1.5)
    r = retune.retune(None, samples[:1], "cpu", start, whole=samples)
    assert r.kept and r.postprocess == found and not r.vetoed
    assert calls == [1] * retune.VETO_IMAGES  # one prediction each for at most VETO_IMAGES training images
    trained = r.on_training
    assert trained["images"] == retune.VETO_IMAGES
    assert trained["found"]["ap50"] == trained["start"]["ap50"] == 1.0
    assert trained["found"]["seg"] < trained["start"]["seg"]
    assert "kept the re-tuned thresholds" in r.verdict()


def test_a_stop_during_the_check_on_the_training_images_keeps_the_starting_thresholds(monkeypatch, discs):
    """Stop pressed while the training images are segmented: the check ends after that image, and thresholds
    not checked to the end are not trusted (it could not be interrupted, and said nothing)."""
    import threading

    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = discs((120, 120), 9, radius=(6, 8))
    samples = [Sample(np.zeros((1, 120, 120), np.float32), labels) for _ in range(5)]
    start, found = PostprocessConfig(0.5, 0.3, 8), PostprocessConfig(0.8, 0.3, 8)  # kept when checked (above)
    _kept_found(monkeypatch, start, found)
    stop, calls = threading.Event(), []
    _maps_of(monkeypatch, calls, blur=1.5)
    real = retune.reviewed_part
    monkeypatch.setattr(retune, "reviewed_part", lambda s: (stop.set() if len(calls) == 1 else None) or real(s))
    r = retune.retune(None, samples[:1], "cpu", start, whole=samples, stop=stop)
    assert calls == [1, 1] and r.check_stopped and not r.kept and not r.vetoed and r.postprocess == start
    assert r.found == found and r.to_dict()["check_stopped"] is True
    assert r.verdict() == (
        "kept the starting thresholds: the re-tuned ones (validation AP50 0.500 -> 0.900) were not checked on the "
        "training images to the end (stopped)"
    )
    calls.clear()
    stop.clear()
    monkeypatch.setattr(retune, "reviewed_part", real)
    assert retune.retune(None, samples[:1], "cpu", start, whole=samples, stop=stop).postprocess == found


def test_the_veto_segments_only_the_reviewed_part_of_a_training_image(monkeypatch, discs):
    """A correction in a corner of a large image: the network runs on that corner and its margin, not the rest."""
    from napari_unet_loop.core.postprocess import PostprocessConfig

    labels = np.zeros((600, 800), np.int32)
    labels[:120, :120] = discs((120, 120), 9, radius=(6, 8))
    ignore = np.ones(labels.shape, bool)
    ignore[:120, :120] = False
    whole = [Sample(np.zeros((1, 600, 800), np.float32), labels, ignore)]
    shapes = []
    real = retune.reviewed_part
    monkeypatch.setattr(retune, "reviewed_part", lambda s: shapes.append(real(s).labels.shape) or real(s))
    _kept_found(monkeypatch, PostprocessConfig(0.5, 0.5, 8), PostprocessConfig(0.5, 0.5, 5000))
    _maps_of(monkeypatch, [])
    r = retune.retune(None, whole, "cpu", PostprocessConfig(0.5, 0.5, 8), whole=whole)
    assert shapes == [(120 + retune.VETO_MARGIN, 120 + retune.VETO_MARGIN)]
    assert r.vetoed and r.on_training["start"] == {"ap50": 1.0, "seg": 1.0}  # the corner's objects, all scored
    part = real(whole[0], margin=0)
    assert part.labels.shape == (120, 120) and not part.ignore.any()
    assert real(Sample(np.zeros((1, 50, 50), np.float32), np.zeros((50, 50), np.int32))).labels.shape == (50, 50)
