from dataclasses import replace

import pytest
import torch

from napari_unet_loop.core.errors import ModelError
from napari_unet_loop.core.image import Normalization
from napari_unet_loop.core.kind_weights import add_kind_weights, same_size, with_kind_weights
from napari_unet_loop.core.model_card import FORMAT_VERSION, ONE_INPUT_FORMAT
from napari_unet_loop.core.model_files import load, new_model, read_card, save
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.unet import UNetConfig


def _predicts_like(net, other):
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        return torch.equal(net.eval()(x), other.eval()(x))


def test_a_kind_with_its_own_weights_round_trips_and_answers_for_its_images(tmp_path, make_model, same_weights):
    m = make_model(seed=0, modality="auto", postprocess=PostprocessConfig(0.5, 0.5, 8, 1.0))
    he_pp = PostprocessConfig(0.7, 0.4, 20, 2.0)
    he = make_model(name="he-only", seed=1, modality="he", postprocess=he_pp)
    he.card.training = {"steps": 5, "history": [1, 2], "data": {"train_names": ["a"], "images": "x"}}
    add_kind_weights(m, "he", he)
    assert m.net_for("he") is he.net and m.net_for("fluorescence") is m.net and m.net_for(None) is m.net
    assert m.card.thresholds("he") == PostprocessConfig(0.7, 0.4, 20, 2.0)  # own weights, own thresholds
    record = m.card.weights_by_kind["he"]
    assert record["name"] == "he-only" and "history" not in record["training"]  # the summary, not the bulk
    assert record["training"]["data"] == {"images": "x"}
    path = save(m, tmp_path / "both")
    loaded = load(path)
    assert set(loaded.nets_by_kind) == {"he"} and loaded.card.weights_by_kind == m.card.weights_by_kind
    assert loaded.card.format_version == ONE_INPUT_FORMAT == 2  # older plugins say "newer", not "damaged"
    assert read_card(path) == loaded.card  # from the header alone
    assert same_weights(loaded.net_for("he"), he.net) and same_weights(loaded.net, m.net)
    assert not _predicts_like(loaded.net_for("he"), loaded.net)  # two networks, not one twice
    assert not loaded.net_for("he").training
    # a fine-tune on H&E images starts from the H&E weights and thresholds, and keeps nothing per kind
    start = loaded.for_kind("he")
    assert start.net is loaded.net_for("he") and start.nets_by_kind == {}
    assert start.card.postprocess == PostprocessConfig(0.7, 0.4, 20, 2.0)
    assert start.card.postprocess_by_kind == {} and start.card.weights_by_kind == {}
    assert loaded.card.weights_by_kind and loaded.card.postprocess_by_kind  # the model itself is unchanged
    general = loaded.for_kind("brightfield")
    assert general.net is loaded.net and general.card.postprocess == PostprocessConfig(0.5, 0.5, 8, 1.0)
    assert start.path is None  # no file holds this network with this card
    save(start, tmp_path / "child")  # one network: saves as a model of its own
    assert load(tmp_path / "child.safetensors").nets_by_kind == {}
    # a specialist that itself has weights of its own for the kind gives those, with their thresholds
    again = make_model(seed=4, modality="auto")
    add_kind_weights(again, "he", loaded)
    assert again.net_for("he") is loaded.net_for("he") and again.card.thresholds("he") == he_pp


def test_with_kind_weights_makes_a_new_model_and_leaves_the_base_as_it_was(make_model):
    base = make_model(name="base", seed=0, modality="auto", postprocess=PostprocessConfig(0.5, 0.5, 8, 1.0))
    base.card.postprocess_by_kind = {"brightfield": PostprocessConfig(0.8, 0.5, 24, 1.0)}
    base.card.metrics = {"test": {"ap50": 0.8}}
    he = make_model(name="he-only", seed=1, modality="he", postprocess=PostprocessConfig(0.7, 0.4, 20, 2.0))
    he.card.metrics = {"validation": {"ap50": 0.6}}
    joined = with_kind_weights(base, "he", he, "joined")
    # the base's scores are not the joined model's; the kind's own stay with its weights
    assert joined.card.metrics == {} and joined.card.weights_by_kind["he"]["metrics"] == he.card.metrics
    assert base.card.metrics == {"test": {"ap50": 0.8}}
    assert (joined.name, joined.card.parent) == ("joined", "base") and "for H&E / stained tissue" in (
        joined.card.description
    )
    assert joined.net is base.net and joined.net_for("he") is he.net
    assert set(joined.card.postprocess_by_kind) == {"brightfield", "he"}
    assert (
        base.nets_by_kind == {}
        and base.card.weights_by_kind == {}
        and set(base.card.postprocess_by_kind) == {"brightfield"}
    )
    assert base.name == "base" and base.card.parent is None


def test_weights_for_a_kind_bring_how_they_read_images_in_doubt(make_model):
    base = make_model(name="base", modality="auto")
    phase = make_model(name="phase", seed=1, modality="auto")
    phase.card.kind_in_doubt = "brightfield"  # fine-tuned on phase-contrast frames, read as brightfield
    assert with_kind_weights(base, "brightfield", phase, "j").card.kind_in_doubt == "brightfield"
    assert with_kind_weights(base, "fluorescence", phase, "j").card.kind_in_doubt is None
    assert base.card.kind_in_doubt is None
    reading = base.reading_in_doubt_as("brightfield")  # a copy that shares the networks
    assert reading.card.kind_in_doubt == "brightfield" and reading.net is base.net and base.card.kind_in_doubt is None
    assert base.reading_in_doubt_as(None) is base
    base.card.kind_in_doubt = "fluorescence"  # the base's own reading stays
    assert with_kind_weights(base, "brightfield", phase, "j").card.kind_in_doubt == "fluorescence"


def test_own_weights_for_a_kind_must_fit_the_model(tmp_path, make_model):
    m = make_model(modality="auto")
    with pytest.raises(ModelError, match="network differs"):
        add_kind_weights(m, "he", new_model(UNetConfig(depth=2, base_width=8), modality="auto"))
    colour = new_model(replace(m.card.architecture, in_channels=3), modality="none")  # train --in-channels 3
    with pytest.raises(ModelError, match="reads 3 input channel.*1; only H&E .*model of its own"):
        add_kind_weights(m, "fluorescence", colour)  # grey images have no colour to read
    with pytest.raises(ModelError, match="reads 1 input channel.*3; only H&E"):
        add_kind_weights(new_model(colour.card.architecture, modality="auto"), "he", make_model(modality="auto"))
    with pytest.raises(ModelError, match="normalisation differs"):
        add_kind_weights(m, "he", make_model(modality="auto", normalization=Normalization(2.0, 99.0)))
    with pytest.raises(ModelError, match="not as he images"):
        add_kind_weights(m, "he", make_model(modality="brightfield"))
    with pytest.raises(ModelError, match="unknown imaging kind"):
        add_kind_weights(m, "phase", make_model(modality="auto"))
    with pytest.raises(ModelError, match="objects of 40 px.*objects of 20 px"):
        big = make_model(modality="auto", diameter=20.0, default_diameter=40.0)
        add_kind_weights(make_model(modality="auto", diameter=20.0), "he", big)
    near = make_model(modality="auto", diameter=20.0)
    add_kind_weights(near, "he", make_model(modality="auto", diameter=20.0, default_diameter=24.0))
    assert "he" in near.nets_by_kind  # within the training zoom range
    with pytest.raises(ModelError, match="would never be used"):
        add_kind_weights(make_model(modality="none"), "he", make_model(modality="auto"))
    assert m.nets_by_kind == {} and m.card.weights_by_kind == {}  # nothing half done
    # networks and card must agree before anything is written
    m.nets_by_kind["he"] = make_model(seed=2).net
    with pytest.raises(ValueError, match="do not match"):
        save(m, tmp_path / "m")
    assert not (tmp_path / "m.safetensors").exists()


def test_same_size_is_the_training_zoom_range():
    assert same_size(20.0, 26.0) and same_size(26.0, 20.0) and not same_size(20.0, 27.0)
    assert same_size(None, 90.0) and same_size(20.0, None)


def test_a_colour_network_answers_for_he_images_in_a_grey_model(tmp_path, make_model, same_weights):
    m = make_model(seed=0, modality="auto", postprocess=PostprocessConfig(0.5, 0.5, 8, 1.0))
    colour = new_model(replace(m.card.architecture, in_channels=3), name="he-colour", seed=2, modality="none")
    colour.card.postprocess = PostprocessConfig(0.7, 0.4, 20, 2.0)
    add_kind_weights(m, "he", colour)
    assert m.card.weights_by_kind["he"]["in_channels"] == 3 and m.card.weights_by_kind["he"]["name"] == "he-colour"
    assert [m.input_channels(k) for k in ("he", "fluorescence", "brightfield", None)] == [3, 1, 1, 1]
    path = save(m, tmp_path / "both")
    loaded = load(path)
    # older plugins, which build every kind's network with the general input, say "newer", not "damaged"
    assert loaded.card.format_version == FORMAT_VERSION == 3 and read_card(path) == loaded.card
    assert loaded.input_channels("he") == 3 and same_weights(loaded.net_for("he"), colour.net)
    assert loaded.card.thresholds("he") == PostprocessConfig(0.7, 0.4, 20, 2.0)
    # a fine-tune on H&E images starts from a colour model of one network, which reads the image as it is
    start = loaded.for_kind("he")
    assert start.card.architecture.in_channels == 3 and start.card.modality == "none" and start.nets_by_kind == {}
    assert load(save(start, tmp_path / "child")).card.architecture.in_channels == 3
    grey = loaded.for_kind("fluorescence")
    assert grey.card.architecture.in_channels == 1 and grey.card.modality == "auto"
    # the colour model fine-tuned on H&E images joins the model again (the dock's "only for images of this kind")
    again = with_kind_weights(m, "he", start, "again")
    assert again.input_channels("he") == 3 and again.net_for("he") is start.net
    # a card whose record and network disagree is not written
    m.card.weights_by_kind["he"] = {**m.card.weights_by_kind["he"], "in_channels": 1}
    with pytest.raises(ValueError, match="reads 3 input channel.*card says 1"):
        save(m, tmp_path / "bad")
    assert not (tmp_path / "bad.safetensors").exists()
