from dataclasses import replace

import numpy as np
import pytest

from napari_unet_loop.core.augment import AugmentConfig
from napari_unet_loop.core.finetune import (
    FINE_TUNE,
    FROM_SCRATCH,
    NEEDS_A_START,
    check_start,
    preset,
    validation_interval,
    validation_steps,
)
from napari_unet_loop.core.image import InputError
from napari_unet_loop.core.sampling import Sample


def test_presets():
    ft = preset(True, minutes=5)
    assert (ft.patch_size, ft.batch_size, ft.learning_rate, ft.freeze_norm, ft.anchor) == (128, 8, 2e-3, True, 30.0)
    assert ft.augment == AugmentConfig(blur=0.0) and ft.val_every_s == 30.0
    scratch = preset(False, minutes=120)
    assert (scratch.batch_size, scratch.learning_rate, scratch.freeze_norm, scratch.anchor) == (16, 2e-3, False, 0.0)
    assert scratch.augment.blur == 1.0 and scratch.val_every_s == 720.0
    assert ft.val_every_steps is None  # a time budget validates by time
    by_steps = preset(True, minutes=None, steps=300)
    assert by_steps.val_every_steps == 30  # a step budget alone: at fixed steps, whatever the load
    assert preset(True, minutes=None, steps=300, val_every_s=5.0).val_every_steps is None  # asked for by time
    assert preset(True, minutes=2, steps=300).val_every_steps is None
    assert preset(True, batch_size=None, learning_rate=1e-3).learning_rate == 1e-3  # None keeps the preset
    assert set(FINE_TUNE) == set(FROM_SCRATCH)


def test_validation_interval():
    assert validation_interval(0.5) == 10.0 and validation_interval(10) == 60.0 and validation_interval(None) == 60.0
    assert validation_steps(1000) == 100 and validation_steps(3) == 1 and validation_steps(None) is None


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError):
        preset(True, patch=64)


def test_check_samples_refuses_what_cannot_teach():
    import numpy as np

    from napari_unet_loop.core.finetune import MIN_ANNOTATED_PX, check_samples
    from napari_unet_loop.core.image import InputError
    from napari_unet_loop.core.sampling import Sample

    image = np.zeros((64, 64), np.float32)
    labels = np.zeros((64, 64), np.int32)
    with pytest.raises(InputError, match="nothing to train on"):
        check_samples([])
    with pytest.raises(InputError, match="hold no objects"):
        check_samples([Sample(image, labels)])
    labels[10:20, 10:20] = 1
    ignore = np.ones((64, 64), bool)
    ignore[10:30, 10:30] = False  # 400 reviewed pixels
    with pytest.raises(InputError, match=f"review at least {MIN_ANNOTATED_PX}"):
        check_samples([Sample(image, labels, ignore=ignore)])
    assert check_samples([Sample(image, labels)]) == 64 * 64


def test_training_record_has_one_schema():
    from napari_unet_loop.core.finetune import training_record

    config = preset(True, minutes=1)
    rec = training_record(config, "cpu", ["a", "b"], ["a[validation]"], steps=3, seconds=1.234, modality="auto", x=1)
    assert rec["data"] == {"n_train": 2, "n_val": 1, "train_names": ["a", "b"], "val_names": ["a[validation]"]}
    assert rec["steps"] == 3 and rec["seconds"] == 1.2 and rec["validated"] is True and rec["x"] == 1
    assert rec["config"] == config.to_dict() and rec["modality"] == "auto"
    assert rec["precision_used"] in ("fp32", "bf16")  # what "auto" became on this CPU
    fp32 = training_record(
        preset(True, minutes=1, precision="fp32"), "cpu", [], [], steps=0, seconds=0, modality="auto"
    )
    assert fp32["precision_used"] == "fp32"


# ----------------------------------------------------------------------------- object size


def test_samples_are_rescaled_to_the_network_diameter(discs):
    from napari_unet_loop.core.finetune import record_sizes, to_network_scale
    from napari_unet_loop.core.model_card import ModelCard
    from napari_unet_loop.core.unet import UNetConfig

    labels = discs((240, 240), 6, radius=(15, 15), gap=4)  # objects ~30 px across
    ignore = np.zeros(labels.shape, bool)
    ignore[:, 200:] = True
    sample = Sample(np.random.default_rng(0).random((1, 240, 240), dtype=np.float32), labels, ignore, name="a")
    card = ModelCard(name="m", architecture=UNetConfig(depth=2, base_width=4), diameter=10.0)
    scaled = to_network_scale([sample], card)
    assert scaled.diameter == pytest.approx(30.0, rel=0.05)
    assert scaled.factor == pytest.approx(10.0 / scaled.diameter)
    s = scaled.samples[0]
    assert s.labels.shape == s.ignore.shape == s.image.shape[-2:] == (80, 80)
    assert s.name == "a" and s.labels.max() == labels.max()
    assert to_network_scale([sample], card, diameter=10.2).factor == 1.0  # within 5 %: as it is
    assert to_network_scale([sample], card, diameter=10.2).samples[0] is sample
    with pytest.raises(InputError, match="diameter"):
        to_network_scale([sample], card, diameter=-1)
    # the child keeps the network's scale and segments images like its training images by default
    record_sizes(card, scaled)
    assert card.diameter == 10.0 and card.default_diameter == pytest.approx(30.0, rel=0.05)
    # a model without a diameter (from scratch) is trained at the samples' own scale
    fresh = ModelCard(name="n", architecture=UNetConfig(depth=2, base_width=4))
    scratch = to_network_scale([sample], fresh)
    assert scratch.factor == 1.0 and scratch.samples[0] is sample
    record_sizes(fresh, scratch)
    assert fresh.diameter == fresh.default_diameter == pytest.approx(30.0, rel=0.05)


def test_a_network_that_learnt_the_objects_size_unscaled_fine_tunes_and_segments_them_unscaled(discs):
    """The shipped H&E network learnt 13-43 px nuclei as they are: a fine-tune on 30 px nuclei is not rescaled."""
    import copy

    from napari_unet_loop.core.finetune import record_sizes, to_network_scale
    from napari_unet_loop.core.model_card import ModelCard
    from napari_unet_loop.core.model_files import Model
    from napari_unet_loop.core.segment import diameter_factor
    from napari_unet_loop.core.unet import UNet, UNetConfig

    labels = discs((240, 240), 6, radius=(15, 15), gap=4)  # objects ~30 px across
    sample = Sample(np.random.default_rng(0).random((1, 240, 240), dtype=np.float32), labels, name="a")
    arch = UNetConfig(depth=2, base_width=4)
    card = ModelCard(name="m", architecture=arch, diameter=10.0, native_diameters=(8.0, 40.0))
    scaled = to_network_scale([sample], card)
    assert scaled.factor == 1.0 and scaled.samples[0] is sample
    child = copy.deepcopy(card)
    record_sizes(child, scaled)
    assert child.default_diameter == pytest.approx(30.0, rel=0.05) and child.native_diameters == (8.0, 40.0)
    model = Model(UNet(arch), child)
    assert diameter_factor(model, None)[1] == 1.0  # its images segmented as it learnt them
    assert diameter_factor(model, 80.0)[1] == pytest.approx(10.0 / 80.0)  # larger objects still rescaled
    assert ModelCard.from_dict(child.to_dict()).native_diameters == (8.0, 40.0)
    # objects outside the range: rescaled to the network's diameter, as before
    assert to_network_scale([sample], replace(card, native_diameters=(8.0, 20.0))).factor == pytest.approx(
        10.0 / scaled.diameter
    )


def test_a_fine_tune_starts_from_the_kind_most_of_its_images_are():
    from napari_unet_loop.core.finetune import start_kind
    from napari_unet_loop.core.sampling import Sample

    def samples(*kinds):
        return [Sample(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int32), kind=k) for k in kinds]

    assert start_kind(samples("brightfield", "brightfield", "he")) == "brightfield"
    assert start_kind(samples("he", "he", "brightfield")) == "he"
    assert start_kind(samples("brightfield", "fluorescence")) is None  # a tie
    assert start_kind(samples("", "")) is None  # kinds unknown
    assert start_kind([]) is None
    # one vote per image: the validation stripe cut from an image does not count again (dock == train)
    from napari_unet_loop.core.sampling import VALIDATION_SUFFIX

    named = samples("he", "he", "brightfield", "brightfield")
    for s, name in zip(named, ["a", f"a{VALIDATION_SUFFIX}", "b", "c"], strict=True):
        s.name = name
    assert start_kind(named) == "brightfield"


def test_weights_for_one_kind_train_at_the_models_object_size_and_refuse_what_could_not_join():
    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.finetune import one_kind_diameter
    from napari_unet_loop.core.unet import UNetConfig

    def samples(*kinds):
        return [Sample(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int32), kind=k) for k in kinds]

    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="m", modality="auto")
    model.card.diameter = 20.0
    assert one_kind_diameter(model, samples("he", "he"), "he", None) == 20.0  # the model's size, not the labels'
    assert one_kind_diameter(model, samples("he"), "he", 24.0) == 24.0  # the user's, within the zoom range
    with pytest.raises(InputError, match="objects of 20 px and yours are set to 40 px"):
        one_kind_diameter(model, samples("he"), "he", 40.0)
    with pytest.raises(InputError, match="some training images are fluorescence"):
        one_kind_diameter(model, samples("he", "fluorescence"), "he", None)
    with pytest.raises(InputError, match="kind is not known"):
        one_kind_diameter(model, samples("he"), None, None)
    model.card.modality = "none"
    with pytest.raises(InputError, match="does not detect each image's kind"):
        one_kind_diameter(model, samples("he"), "he", None)


@pytest.mark.parametrize(
    ("parent", "trained", "colour", "expected"),
    [
        ("auto", "auto", False, "auto"),
        ("none", "none", False, "none"),
        ("none", "brightfield", False, "auto"),
        ("auto", "none", False, "none"),
        ("auto", "auto", True, "none"),  # a grey model's colour network for H&E: its child reads colour as it is
    ],
)
def test_finetuned_model_is_fed_as_it_was_trained(parent, trained, colour, expected):
    from napari_unet_loop.core.finetune import finetuned_modality

    assert finetuned_modality(parent, trained, colour) == expected


def test_a_fine_tune_into_one_network_names_the_weights_it_leaves_behind():
    from napari_unet_loop.core import kind_weights, model_files
    from napari_unet_loop.core.finetune import weights_left_behind
    from napari_unet_loop.core.unet import UNetConfig

    tiny = UNetConfig(depth=2, base_width=4)
    parent = model_files.new_model(tiny, name="base", modality="auto")
    grey = Sample(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), np.int32), kind="fluorescence", name="a")
    assert weights_left_behind(parent, None, [grey]) == ""  # no weights of its own for any kind
    kind_weights.add_kind_weights(parent, "brightfield", model_files.new_model(tiny, modality="auto"))
    note = weights_left_behind(parent, "fluorescence", [grey])
    assert note.startswith("the new model is one network: base's own weights for brightfield images stay in base")
    assert "images trained on" not in note
    bright = Sample(grey.image, grey.labels, kind="brightfield", name="b")
    stripe = Sample(grey.image, grey.labels, kind="brightfield", name="b[validation]")
    assert "(1 of the images trained on are such images" in weights_left_behind(parent, None, [grey, bright, stripe])
    assert weights_left_behind(parent, "brightfield", [bright]) == ""  # it starts from them
    assert "my-model's own" in weights_left_behind(parent, None, [grey], "my-model")


def test_check_start_refuses_what_needs_a_trained_model_from_scratch():
    """Anchor, last layer only and one kind's weights change a trained model: from random weights, refused."""
    check_start(True)  # nothing asked
    check_start(True, anchor=None, head_only="", only_kind=None)
    for key in NEEDS_A_START:
        check_start(False, **{key: "the setting"})  # from a trained model: fine
        with pytest.raises(InputError, match=f"^the setting {NEEDS_A_START[key]}: start from a trained model"):
            check_start(True, **{key: "the setting"})
    with pytest.raises(ValueError, match="not a setting"):
        check_start(False, freeze_encoder="--freeze-encoder")


def test_last_layer_only_by_default_for_a_kinds_own_weights():
    """Automatic: the last layer for the model's own weights for the images' kind, every layer otherwise."""
    from napari_unet_loop.core.finetune import LAYERS, last_layer_only

    assert set(LAYERS) == {"auto", "all", "last"}
    assert last_layer_only("auto", own_weights=True) and not last_layer_only("auto", own_weights=False)
    assert not last_layer_only("auto", own_weights=True, fine_tune=False)  # random weights: every layer
    for own in (True, False):
        assert last_layer_only("last", own) and not last_layer_only("all", own)
    with pytest.raises(ValueError, match="layers must be one of auto, all, last"):
        last_layer_only("head", True)
    # what the choice is recorded as
    assert preset(True, 5, head_only=last_layer_only("auto", True)).head_only


def test_layers_asked_reads_head_only_as_the_last_layer_and_refuses_a_contradiction():
    """``--layers`` and ``--head-only`` as train and the benchmarks read them."""
    from napari_unet_loop.core.finetune import layers_asked

    assert [layers_asked(v, False) for v in (None, "auto", "all", "last")] == ["auto", "auto", "all", "last"]
    assert layers_asked(None, True) == layers_asked("last", True) == "last"
    for other in ("auto", "all"):
        with pytest.raises(InputError, match=f"--head-only is --layers last: it contradicts --layers {other}"):
            layers_asked(other, True)
