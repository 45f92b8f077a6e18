import numpy as np
import pytest
import torch

from napari_unet_loop.core.image import InputError
from napari_unet_loop.core.model_files import new_model
from napari_unet_loop.core.postprocess import PostprocessConfig, instances
from napari_unet_loop.core.predict import Progress, run
from napari_unet_loop.core.segment import Segmentation, iter_segment, segment
from napari_unet_loop.core.unet import UNetConfig

TINY = UNetConfig(depth=2, base_width=4)


def test_segment_returns_int32_labels_of_the_image_shape(model, discs, disc_img):
    labels = discs((50, 70), 4)
    image = (disc_img(labels) * 1000 + 200).astype(np.uint16)  # raw, un-normalised
    seg = segment(model, image, tile=32, precision="fp32")
    assert isinstance(seg, Segmentation)
    assert seg.labels.dtype == np.int32 and seg.labels.shape == (50, 70)
    assert seg.probs.shape == (4, 50, 70)
    assert seg.labels.min() >= 0
    # labels come from the model card's thresholds, applied to the returned outputs
    np.testing.assert_array_equal(seg.labels, instances(seg.probs, model.card.postprocess))


def test_segment_uses_given_thresholds(model):
    # a head that ignores its input: foreground probability 1 - 1 / (2 + e) = 0.79 everywhere
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    image = np.random.default_rng(0).random((40, 40))
    default = segment(model, image, tile=64, precision="fp32")
    np.testing.assert_array_equal(default.labels, 1)  # card thresholds: fg > 0.3
    strict = segment(model, image, tile=64, precision="fp32", postprocess=PostprocessConfig(0.9, 0.5, 1))
    np.testing.assert_array_equal(strict.labels, 0)
    np.testing.assert_allclose(strict.probs[0], 1 / (2 + np.e), rtol=1e-5)


def test_segment_tiling_does_not_change_the_result(model, discs, disc_img):
    image = disc_img(discs((60, 90), 5))
    a = segment(model, image, tile=16, precision="fp32")
    b = segment(model, image, tile=128, precision="fp32")
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)


def test_segment_colour_and_multichannel_images(model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    assert segment(model, rgb, tile=32, precision="fp32").labels.shape == (30, 40)
    multi = rng.random((30, 40, 5))
    with pytest.raises(InputError, match="choose the channel"):
        segment(model, multi, precision="fp32")
    assert segment(model, multi, channel=3, tile=32, precision="fp32").labels.shape == (30, 40)


def test_iter_segment_reports_progress(model):
    image = np.random.default_rng(0).random((40, 40))
    seen = []
    seg = run(iter_segment(model, image, tile=16, batch_size=4, precision="fp32"), seen.append)
    assert seen[0] == Progress(0, 9)
    assert Progress(9, 9) in seen
    assert seen[-2:] == [Progress(0, 1, "instances"), Progress(1, 1, "instances")]
    assert seg.labels.shape == (40, 40)


def test_segment_rejects_unusable_images(model):
    with pytest.raises(InputError, match="constant"):
        segment(model, np.zeros((32, 32)), precision="fp32")
    with pytest.raises(InputError, match="too small"):
        segment(model, np.random.default_rng(0).random((4, 32)), precision="fp32")


def _perfect_network(monkeypatch):
    """Replace the network's prediction by maps computed from the image itself (bright = object)."""
    from scipy import ndimage as ndi

    from napari_unet_loop.core import predict as predict_mod
    from napari_unet_loop.core.targets import distance_map

    def fake(net, x, **kwargs):
        fg = x[0] > 0.5
        lab, _ = ndi.label(fg)
        dist = distance_map(lab)
        return np.stack([1.0 - fg, fg * 1.0, np.zeros_like(dist), dist]).astype(np.float32)

    monkeypatch.setattr(predict_mod, "predict", fake)
    return fake


def test_blockwise_equals_whole_image(monkeypatch):
    from skimage.draw import disk

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.metrics import score
    from napari_unet_loop.core.postprocess import instances
    from napari_unet_loop.core.predict import run
    from napari_unet_loop.core.segment import iter_segment_blocks

    fake = _perfect_network(monkeypatch)
    rng = np.random.default_rng(0)
    img = np.zeros((300, 410), np.float32)
    for _ in range(60):  # discs everywhere, many crossing the 96 px block borders
        img[disk((rng.integers(0, 300), rng.integers(0, 410)), rng.integers(5, 14), shape=img.shape)] = 1
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    model = model_files.new_model(TINY)
    from napari_unet_loop.core.image import prepare_input

    whole = instances(fake(None, prepare_input(img, 1, model.card.normalization)), model.card.postprocess)
    blocks = run(iter_segment_blocks(model, img, block=96, margin=32))
    s = score(whole, blocks)
    assert s.n_true == s.n_pred == whole.max() == blocks.max()  # ids 1..N without gaps
    assert s.ap75 == 1.0 and s.seg > 0.99


def test_tiny_blocks_are_refused():
    model = new_model(TINY)
    img = np.random.default_rng(0).random((80, 80)).astype(np.float32)
    with pytest.raises(InputError, match="too small"):
        segment(model, img, block=8)


def test_large_planes_go_block_by_block(monkeypatch):
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core import segment as seg_mod

    _perfect_network(monkeypatch)
    monkeypatch.setattr(seg_mod, "LARGE_PIXELS", 100 * 100)
    img = np.zeros((150, 150), np.float32)
    img[20:40, 20:40] = 1
    img[100:130, 90:140] = 1
    out = seg_mod.segment(model_files.new_model(TINY), img)
    assert out.probs is None and out.labels.max() == 2
    # an image under the limit that reaches the network enlarged beyond it (small objects) goes too
    sized = model_files.new_model(TINY, diameter=30.0)
    small = img[:90, :90]
    assert seg_mod.segment(sized, small).probs is not None  # 90 x 90 as it is
    enlarged = seg_mod.segment(sized, small, diameter=15.0)  # 180 x 180 at the network
    assert enlarged.factor == 2.0 and enlarged.probs is None and enlarged.labels.max() == 1


def test_segment_converts_the_image_by_modality(model, discs, disc_img):
    """``modality``: the card's setting by default; auto detects, a kind forces, none keeps the grey image."""
    labels = discs((64, 64), 4)
    bright_field = np.clip(230 - disc_img(labels) * 180, 0, 255).astype(np.uint8)  # dark discs, bright field
    assert segment(model, bright_field, tile=32).modality is None  # card "none": grey as it is
    model.card.modality = "auto"
    auto = segment(model, bright_field, tile=32)
    assert auto.modality == "brightfield"
    forced = segment(model, bright_field, tile=32, modality="brightfield")
    np.testing.assert_array_equal(forced.probs, auto.probs)
    as_is = segment(model, bright_field, tile=32, modality="none")
    assert as_is.modality is None and not np.array_equal(as_is.probs, auto.probs)
    fluo = segment(model, bright_field, tile=32, modality="fluorescence")
    np.testing.assert_array_equal(fluo.probs, as_is.probs)  # fluorescence: the grey image as it is
    blocks = segment(model, bright_field, tile=32, block=64)  # block-wise: detected once, on the whole image
    assert blocks.modality == "brightfield"
    with pytest.raises(InputError, match="unknown imaging modality"):
        segment(model, bright_field, modality="phase")


def test_thresholds_follow_the_imaging_kind(model, discs, disc_img, monkeypatch):
    """A card's thresholds for one imaging kind apply to images of that kind, whole or block by block."""
    from napari_unet_loop.core import postprocess as pp_mod

    used = []  # the thresholds of each post-processing (whole image, or each block)
    real = pp_mod.instances_from_maps
    monkeypatch.setattr(pp_mod, "instances_from_maps", lambda fg, d, pp: used.append(pp) or real(fg, d, pp))
    model.card.modality = "auto"
    general, bright = model.card.postprocess, PostprocessConfig(0.85, 0.45, 24, 1.0)
    model.card.postprocess_by_kind = {"brightfield": bright}
    labels = discs((64, 64), 4)
    bright_field = np.clip(230 - disc_img(labels) * 180, 0, 255).astype(np.uint8)
    segment(model, bright_field, tile=32)
    assert used == [bright]
    segment(model, bright_field, tile=32, block=64)  # each block's post-processing
    assert len(used) > 1 and set(used) == {bright}
    used.clear()
    segment(model, bright_field, tile=32, modality="fluorescence")  # another kind: the general thresholds
    segment(model, bright_field, tile=32, postprocess={"min_size": 5})  # a setting given replaces the kind's
    mine = PostprocessConfig(0.4, 0.4, 0)
    segment(model, bright_field, tile=32, postprocess=mine)  # a full set is used as it is
    assert used == [general, PostprocessConfig(0.85, 0.45, 5, 1.0), mine]


def test_a_kind_with_its_own_weights_is_segmented_by_them(model, discs, disc_img):
    """Images of a kind the model has its own network for go to it, whole, tiled or block by block."""
    from napari_unet_loop.core import kind_weights

    model.card.modality = "auto"
    labels = discs((64, 64), 4)
    bright_field = np.clip(230 - disc_img(labels) * 180, 0, 255).astype(np.uint8)
    before = segment(model, bright_field, tile=32)
    own = new_model(TINY, seed=7, modality="auto", postprocess=PostprocessConfig(0.6, 0.4, 3, 0.0))
    kind_weights.add_kind_weights(model, "brightfield", own)
    kind = segment(model, bright_field, tile=32)
    assert kind.modality == "brightfield" and not np.allclose(kind.probs, before.probs)
    alone = segment(own, bright_field, tile=32, modality="brightfield")  # the specialist on its own
    np.testing.assert_allclose(kind.probs, alone.probs, atol=1e-6)
    np.testing.assert_array_equal(kind.labels, instances(kind.probs, PostprocessConfig(0.6, 0.4, 3, 0.0)))
    tiled = segment(model, bright_field, tile=16)
    np.testing.assert_allclose(tiled.probs, kind.probs, atol=1e-4)
    blocks = segment(model, bright_field, tile=32, block=64)
    np.testing.assert_array_equal(blocks.labels > 0, kind.labels > 0)
    other = segment(model, bright_field, tile=32, modality="fluorescence")  # another kind: the general network
    np.testing.assert_allclose(
        other.probs, segment(model.for_kind(None), bright_field, tile=32, modality="fluorescence").probs
    )


# ----------------------------------------------------------------------------- object size


@pytest.fixture
def sized(model):
    """The tiny model, recording that it was trained on objects 10 px across."""
    model.card.diameter = 10.0
    return model


def bright_is_object(model):
    """Make the network a thresholder: bright pixels are object interior, every one a seed."""

    def forward(x):
        k = 10.0 * (x[:, :1] - 0.5)
        return torch.cat([-k, k, torch.full_like(k, -50.0), k], dim=1)

    model.net.forward = forward
    return model


def test_diameter_rescales_the_image_and_returns_labels_on_its_grid(sized, discs, disc_img):
    image = disc_img(discs((90, 120), 4, radius=(14, 16)))
    seg = segment(sized, image, tile=32, precision="fp32", diameter=30.0)
    assert seg.factor == pytest.approx(1 / 3) and seg.diameter == 30.0
    assert seg.labels.shape == (90, 120) and seg.probs.shape == (4, 90, 120)
    # the network saw the image at a third of its size: its outputs, resized back, are the labels' source
    from napari_unet_loop.core.image import prepare_input
    from napari_unet_loop.core.predict import predict
    from napari_unet_loop.core.scale import postprocess_at, resize

    x = resize(prepare_input(image, 1, sized.card.normalization), (30, 40))
    # 30 x 40 px at the network: small, so the flips are averaged (tta "auto", the default)
    expected = resize(predict(sized.net, x, tile=64, precision="fp32", tta=True), (90, 120))
    np.testing.assert_allclose(seg.probs, expected, atol=1e-4)
    pp = postprocess_at(sized.card.postprocess, 1 / 3)
    assert pp.min_size == 27  # 3 px at the network's scale: 27 px on the image's grid
    np.testing.assert_array_equal(seg.labels, instances(seg.probs, pp))


def test_tiling_does_not_change_a_rescaled_result(sized, discs, disc_img):
    image = disc_img(discs((150, 210), 6, radius=(14, 18)))
    a = segment(sized, image, tile=16, precision="fp32", diameter=25.0)
    b = segment(sized, image, tile=256, precision="fp32", diameter=25.0)
    assert a.factor == b.factor == pytest.approx(0.4)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_the_card_default_diameter_applies_when_none_is_given(sized, discs, disc_img):
    image = disc_img(discs((60, 60), 2))
    assert segment(sized, image, tile=32, precision="fp32").factor == 1.0
    sized.card.default_diameter = 20.0  # e.g. fine-tuned on cells twice the network's size
    seg = segment(sized, image, tile=32, precision="fp32")
    assert seg.factor == pytest.approx(0.5) and seg.diameter == 20.0


def test_block_wise_rescaled_segmentation_matches_the_whole_image(sized, discs, disc_img):
    labels = discs((160, 160), 8, radius=(8, 10))
    image = disc_img(labels, noise=0.0)
    bright_is_object(sized)
    whole = segment(sized, image, tile=64, precision="fp32", diameter=15.0)
    blocks = segment(sized, image, tile=64, precision="fp32", diameter=15.0, block=64)
    assert blocks.probs is None and blocks.factor == whole.factor
    assert whole.labels.max() == blocks.labels.max() == labels.max()  # each disc once, none cut by a block
    assert np.mean((whole.labels > 0) == (blocks.labels > 0)) > 0.999


def test_a_diameter_needs_a_model_that_records_one(model):
    image = np.random.default_rng(0).random((40, 40))
    with pytest.raises(InputError, match="records no object diameter"):
        segment(model, image, diameter=30.0)
    with pytest.raises(InputError, match="records no object diameter"):
        segment(model, image, diameter="auto")
    assert segment(model, image, tile=32, precision="fp32").factor == 1.0  # as before object sizes


def test_bad_diameters_are_refused(sized):
    image = np.random.default_rng(0).random((40, 40))
    for bad in (0, -5.0, "big"):
        with pytest.raises(InputError, match="diameter"):
            segment(sized, image, diameter=bad)


def test_auto_diameter_measures_the_objects_it_finds(sized, discs):
    """A 'network' that finds bright regions whatever their size: the estimate is what it measures."""
    from napari_unet_loop.core.scale import median_diameter

    labels = discs((200, 200), 6, radius=(15, 15), gap=6)
    image = (labels > 0).astype(np.float32)
    bright_is_object(sized)
    seg = segment(sized, image, tile=64, precision="fp32", diameter="auto")
    truth = median_diameter([labels])
    assert seg.diameter == pytest.approx(truth, rel=0.1)  # 30 px discs, for a model of 10 px
    assert seg.factor == pytest.approx(10.0 / seg.diameter)
    assert seg.labels.max() == 6


def test_auto_diameter_of_a_large_image_measures_where_it_has_content(sized, discs, monkeypatch):
    """A mosaic whose centre is blank fill: measured on a quarter with objects; with none found, the default."""
    from napari_unet_loop.core import segment as segment_module

    monkeypatch.setattr(segment_module, "AUTO_PIXELS", 200 * 200)
    bright_is_object(sized)
    image = np.zeros((800, 800), np.float32)
    quarter = discs((400, 400), 20, radius=(15, 15), gap=6)
    image[:400, :400] = quarter > 0  # the top left quarter only
    seg = segment(sized, image, tile=64, precision="fp32", diameter="auto")
    assert seg.diameter == pytest.approx(30, rel=0.15) and seg.labels.max() == quarter.max()
    strip = np.zeros((800, 800), np.float32)
    strip[:12, 300:500] = 1  # content in no crop: the model's own size, the whole image segmented
    seg = segment(sized, strip, tile=64, precision="fp32", diameter="auto")
    assert seg.diameter == sized.image_diameter and seg.labels.max() == 1


def _count_passes(monkeypatch) -> list:
    """Record the ``diameter`` of every :func:`iter_segment` pass from now on (the list returned)."""
    from napari_unet_loop.core import segment as segment_module

    calls = []
    real = segment_module.iter_segment

    def counted(*args, **kwargs):
        calls.append(kwargs.get("diameter"))
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(segment_module, "iter_segment", counted)
    return calls


def test_upscale_small_enlarges_images_of_small_objects_only(sized, discs, monkeypatch):
    """A model whose card sets upscale_small: objects under its diameter / 1.5 are segmented enlarged."""

    bright_is_object(sized)
    small = discs((120, 120), 6, radius=(2, 3), gap=6)  # 5-7 px across, for a model of 10 px
    image = (small > 0).astype(np.float32)
    assert segment(sized, image, tile=64, precision="fp32").factor == 1.0  # the card does not ask
    sized.card.upscale_small = True
    seg = segment(sized, image, tile=64, precision="fp32")
    assert seg.factor == pytest.approx(10.0 / seg.diameter) and seg.factor > 1.5
    assert seg.labels.shape == image.shape and seg.labels.max() == small.max()
    # what was asked is done as asked: a given diameter, or a plane of a stack (its planes alike)
    assert segment(sized, image, tile=64, precision="fp32", diameter=10.0).factor == 1.0
    limits = [(0.0, 1.0)]
    assert segment(sized, image, tile=64, precision="fp32", limits=limits).factor == 1.0

    calls = _count_passes(monkeypatch)
    large = discs((120, 120), 4, radius=(6, 7), gap=6)  # about the model's size: one pass, as it was
    assert segment(sized, (large > 0).astype(np.float32), tile=64, precision="fp32").factor == 1.0
    assert calls == [None]
    calls.clear()
    segment(sized, image, tile=64, precision="fp32")
    assert calls[0] is None and 2 <= len(calls) <= 4 and all(d < 10.0 / 1.5 for d in calls[1:])


def test_sizes_a_network_learnt_unscaled_are_segmented_unscaled_and_once(sized, discs, monkeypatch):
    """Objects within a network's native sizes: not rescaled, and never segmented twice for the same factor."""
    from napari_unet_loop.core.segment import diameter_factor

    bright_is_object(sized)
    sized.card.weights_by_kind = {"he": {"native_diameters": [20.0, 40.0]}}  # a kind's own weights' sizes
    assert diameter_factor(sized, 30.0, "he") == (30.0, 1.0)
    assert diameter_factor(sized, 30.0, "fluorescence") == (30.0, pytest.approx(1 / 3))
    sized.card.weights_by_kind = {}
    sized.card.native_diameters = (4.0, 40.0)
    assert diameter_factor(sized, 30.0) == (30.0, 1.0) and diameter_factor(sized, 80.0)[1] == pytest.approx(1 / 8)
    calls = _count_passes(monkeypatch)
    # upscale_small finds objects of 5-7 px: within the native sizes, so the first pass stands, run once
    sized.card.upscale_small = True
    small = discs((120, 120), 6, radius=(2, 3), gap=6)
    seg = segment(sized, (small > 0).astype(np.float32), tile=64, precision="fp32")
    assert seg.factor == 1.0 and seg.diameter == sized.image_diameter and calls == [None]
    # the estimate's passes at 10, 20 and 40 px and its refinement all take the image as it is: one network pass
    calls.clear()
    large = discs((200, 200), 6, radius=(15, 15), gap=6)
    seg = segment(sized, (large > 0).astype(np.float32), tile=64, precision="fp32", diameter="auto")
    assert seg.factor == 1.0 and seg.labels.max() == 6 and calls == ["auto", 10.0]
    assert seg.diameter == pytest.approx(30, rel=0.1)


def test_auto_diameter_of_small_isolated_nuclei_is_not_a_blob_of_a_shrunk_pass():
    """Shrunk 4x, 9 px nuclei melt into one blob of the whole image: that pass measures nothing."""
    from napari_unet_loop.core import model_files

    model = model_files.load("default")
    yy, xx = np.mgrid[:128, :128]
    nuclei = np.zeros((128, 128), bool)
    for cy in range(12, 128, 20):
        for cx in range(12, 128, 20):
            nuclei |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 4**2  # 36 nuclei, 9 px across
    image = (np.where(nuclei, 200.0, 20.0) + np.random.default_rng(0).normal(0, 4, nuclei.shape)).astype(np.float32)
    seg = segment(model, image, diameter="auto")
    assert 6 < seg.diameter < 12 and seg.labels.max() == 36  # was: 138 px and no object


def test_a_colour_network_for_he_images_reads_their_colour(model, discs, disc_img):
    """A grey model's own colour network for H&E images gets R, G and B, whole, tiled or block by block."""
    from dataclasses import replace

    from napari_unet_loop.core import kind_weights

    model.card.modality = "auto"
    labels = discs((64, 64), 4)
    nuclei = disc_img(labels)[..., None]
    stained = np.clip(np.array([235, 190, 215]) * (1 - nuclei) + np.array([90, 50, 140]) * nuclei, 0, 255)
    stained = stained.astype(np.uint8)
    colour = new_model(
        replace(TINY, in_channels=3), seed=7, modality="none", postprocess=PostprocessConfig(0.6, 0.4, 3)
    )
    kind_weights.add_kind_weights(model, "he", colour)
    seg = segment(model, stained, tile=32)
    alone = segment(colour, stained, tile=32)  # the colour network on its own, as a model of its own
    assert seg.modality == "he" and alone.modality is None
    np.testing.assert_allclose(seg.probs, alone.probs, atol=1e-6)
    np.testing.assert_array_equal(seg.labels, instances(seg.probs, PostprocessConfig(0.6, 0.4, 3)))
    rgba = np.concatenate([stained, np.full((64, 64, 1), 255, np.uint8)], axis=-1)  # PNGs: RGBA
    np.testing.assert_allclose(segment(model, rgba, tile=32).probs, seg.probs, atol=1e-6)
    np.testing.assert_allclose(segment(model, stained, tile=16).probs, seg.probs, atol=1e-4)
    blocks = segment(model, stained, tile=32, block=64)
    np.testing.assert_array_equal(blocks.labels > 0, seg.labels > 0)
    grey = segment(model, stained, tile=32, modality="brightfield")  # read as another kind: the grey network
    assert grey.modality == "brightfield" and grey.probs.shape == seg.probs.shape
    with pytest.raises(InputError, match="reads H&E / stained tissue images in colour.*not colour"):
        segment(model, stained.mean(-1), tile=32, modality="he")  # a grey image has no colour to read


def test_flips_are_averaged_by_default_on_images_small_as_the_network_sees_them():
    """``tta="auto"`` (the default): on for at most TTA_AUTO_PIXELS at the network's scale, off above,
    judged on the whole image after rescaling for the object size (so every tile and block alike)."""
    from napari_unet_loop.core.predict import TTA_AUTO_PIXELS

    sized = new_model(TINY, seed=3, diameter=30.0)
    rng = np.random.default_rng(0)
    side = 320  # 102,400 px: small as it is, 409,600 px enlarged twice
    assert side * side <= TTA_AUTO_PIXELS < (2 * side) ** 2
    img = rng.random((side, side)).astype(np.float32)
    kw = dict(precision="fp32", tile=128)
    plain, flips = segment(sized, img, tta=False, **kw), segment(sized, img, tta=True, **kw)
    assert not np.allclose(plain.probs, flips.probs)  # the flips change the maps of this network
    np.testing.assert_array_equal(segment(sized, img, **kw).probs, flips.probs)
    np.testing.assert_array_equal(segment(sized, img, tta="on", **kw).probs, flips.probs)
    # objects of 15 px: enlarged 2x, 640 x 640 at the network: no flips unless asked
    big = segment(sized, img, diameter=15.0, **kw)
    np.testing.assert_array_equal(big.probs, segment(sized, img, diameter=15.0, tta=False, **kw).probs)
    with pytest.raises(ValueError, match="one of auto, on, off"):
        segment(sized, img, tta="sometimes")
