import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_unet_loop.core import model_files
from napari_unet_loop.core.image import Normalization
from napari_unet_loop.core.model_card import FORMAT_VERSION
from napari_unet_loop.core.model_files import (
    CARD_KEY,
    DEFAULT_MODEL,
    Model,
    ModelError,
    check_name,
    delete_user_model,
    export_model,
    import_model,
    list_models,
    load,
    new_model,
    rename_user_model,
    resolve,
    save,
    save_user_model,
    user_dir,
)
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.unet import UNetConfig

TINY = UNetConfig(depth=2, base_width=4)


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    """Point the user model folder at a temporary folder (never the real one)."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv("NAPARI_UNET_LOOP_MODELS", str(folder))
    return folder


def test_save_load_round_trip(tmp_path, make_model, same_weights):
    m = make_model(
        description="test model",
        parent="dsb2018-nuclei",
        normalization=Normalization(2.0, 99.0),
        postprocess=PostprocessConfig(0.4, 0.6, 12),
        training={"steps": 10, "images": ["a.tif"]},
        metrics={"ap50": 0.8},
    )
    path = save(m, tmp_path / "tiny")
    assert path == tmp_path / "tiny.safetensors" and path.is_file()
    assert m.path == path
    card_json = json.loads(path.with_suffix(".json").read_text())
    assert card_json["name"] == "tiny" and card_json["parent"] == "dsb2018-nuclei"
    loaded = load(path)
    assert same_weights(loaded.net, m.net)
    assert not loaded.net.training
    c, o = loaded.card, m.card
    assert c.name == "tiny" and loaded.name == "tiny"
    assert c.architecture == TINY
    assert c.normalization == Normalization(2.0, 99.0)
    assert c.postprocess == PostprocessConfig(0.4, 0.6, 12)
    assert c.description == "test model" and c.parent == "dsb2018-nuclei"
    assert c.training == {"steps": 10, "images": ["a.tif"]} and c.metrics == {"ap50": 0.8}
    assert c.created == o.created and c.format_version == 1  # one network: the format every release reads
    assert loaded.path == path
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()[CARD_KEY])
    assert meta["software"]["torch"] == torch.__version__


def test_loaded_model_predicts_like_the_saved_one(tmp_path, make_model):
    m = make_model()
    m.net.eval()
    path = save(m, tmp_path / "m.safetensors")
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load(path).net(x), m.net(x))


def test_save_refuses_to_overwrite_when_asked(tmp_path, make_model):
    path = save(make_model(seed=0), tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save(make_model(seed=1), path, overwrite=False)
    assert path.read_bytes() == before
    save(make_model(seed=1), path, overwrite=True)
    assert path.read_bytes() != before


def test_corrupt_file_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a model" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        load(bad)


def test_truncated_file_is_a_model_error(tmp_path, make_model):
    path = save(make_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        load(path)


def test_plain_safetensors_file_is_not_a_model(tmp_path, make_model):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelError, match="not a napari-unet-loop model"):
        load(path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")
    with pytest.raises(ModelError, match="does not exist"):
        load(str(tmp_path / "sub" / "nothing"))
    with pytest.raises(ModelError, match="no model named"):
        load("no-such-model-name")
    with pytest.raises(ModelError, match="folder"):
        load(tmp_path)


def test_weights_not_matching_the_card(tmp_path, make_model):
    m = make_model()
    m.card.architecture = UNetConfig(depth=2, base_width=8)  # card says wider than the weights
    path = save(m, tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="do not match"):
        load(path)


def _write_with_card(path: Path, card: dict):
    state = {k: v.contiguous() for k, v in new_model(TINY).net.state_dict().items()}
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    return path


def test_invalid_cards_are_model_errors(tmp_path, make_model):
    good = make_model().card.to_dict()
    unknown_key = {**good, "architecture": {**good["architecture"], "heads": 2}}
    with pytest.raises(ModelError, match="invalid"):
        load(_write_with_card(tmp_path / "a.safetensors", unknown_key))
    no_name = {k: v for k, v in good.items() if k != "name"}
    with pytest.raises(ModelError, match="invalid"):
        load(_write_with_card(tmp_path / "b.safetensors", no_name))
    newer = {**good, "format_version": FORMAT_VERSION + 1}
    with pytest.raises(ModelError, match="newer"):
        load(_write_with_card(tmp_path / "c.safetensors", newer))
    p = tmp_path / "d.safetensors"
    save_file({"w": torch.zeros(1)}, str(p), metadata={CARD_KEY: "{not json"})
    with pytest.raises(ModelError, match="invalid"):
        load(p)


def test_a_card_naming_weights_the_file_lacks_is_a_model_error(tmp_path, make_model):
    card = {**make_model().card.to_dict(), "weights_by_kind": {"he": {}}}
    with pytest.raises(ModelError, match="do not match"):
        load(_write_with_card(tmp_path / "a.safetensors", card))
    for bad, words in (({"phase": {}}, "unknown imaging kind"), ({"he": 3}, "JSON object"), ([1], "JSON object")):
        card = {**make_model().card.to_dict(), "weights_by_kind": bad}
        with pytest.raises(ModelError, match=words):
            load(_write_with_card(tmp_path / "b.safetensors", card))


def test_the_shipped_model_enlarges_small_objects():
    assert load("default").card.upscale_small is True  # measured in docs/model.md


def test_user_dir_respects_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_LOOP_MODELS", str(tmp_path / "elsewhere"))
    assert user_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("NAPARI_UNET_LOOP_MODELS")
    default = user_dir()
    assert default.name == "models" and "napari-unet-loop" in str(default)


def test_save_user_model_and_list(user_models, make_model):
    path = save_user_model(make_model(name="whatever"), "my-model")
    assert path == user_models / "my-model.safetensors"
    assert list_models()["my-model"] == path
    assert resolve("my-model") == path
    assert load("my-model").name == "my-model"  # the card takes the new name
    with pytest.raises(FileExistsError):
        save_user_model(make_model(), "my-model")
    save_user_model(make_model(seed=3), "my-model", overwrite=True)


def test_user_models_shadow_shipped_ones(tmp_path, monkeypatch, user_models, make_model):
    shipped = tmp_path / "shipped"
    save(make_model(name=DEFAULT_MODEL), shipped / f"{DEFAULT_MODEL}.safetensors")
    save(make_model(name="only-shipped"), shipped / "only-shipped.safetensors")
    monkeypatch.setattr(model_files, "shipped_dir", lambda: shipped)
    assert resolve("default") == shipped / f"{DEFAULT_MODEL}.safetensors"
    assert resolve(None) == shipped / f"{DEFAULT_MODEL}.safetensors"
    # a shipped model's name is refused for a model of the user's, in any case, and "default" too
    for name in (DEFAULT_MODEL, DEFAULT_MODEL.upper(), "default"):
        with pytest.raises(ModelError, match="shipped default model's name, and a model of yours by that name"):
            save_user_model(make_model(seed=5), name)
    with pytest.raises(ModelError, match="'only-shipped' is a shipped model's name"):
        import_model(shipped / "only-shipped.safetensors")
    save_user_model(make_model(seed=5), "mine")
    with pytest.raises(ModelError, match="shipped model's name"):
        rename_user_model("mine", "only-shipped")
    assert list(user_models.glob("*.safetensors")) == [user_models / "mine.safetensors"]
    # one put there by hand (or by an older version) still shadows the shipped one
    user = save(make_model(seed=5, name=DEFAULT_MODEL), user_models / f"{DEFAULT_MODEL}.safetensors")
    found = list_models()
    assert found[DEFAULT_MODEL] == user
    assert found["only-shipped"] == shipped / "only-shipped.safetensors"
    assert resolve("default") == user


def test_import_model(tmp_path, user_models, make_model, same_weights):
    src = save(make_model(name="orig"), tmp_path / "downloaded.safetensors")
    p = import_model(src)
    assert p == user_models / "downloaded.safetensors"
    assert same_weights(load(p).net, load(src).net)
    p2 = import_model(src, name="renamed")
    assert load("renamed").name == "renamed"
    assert p2.is_file()
    with pytest.raises(FileExistsError):
        import_model(src, name="renamed")
    with pytest.raises(ModelError, match="invalid model name"):
        import_model(src, name="../escape")


def test_import_of_a_broken_file_writes_nothing(tmp_path, user_models, make_model):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError):
        import_model(bad)
    assert not (user_models / "broken.safetensors").exists()


def test_export_model(tmp_path, make_model):
    save_user_model(make_model(), "to-share")
    target = tmp_path / "out" / "shared.safetensors"
    assert export_model("to-share", target) == target
    assert target.read_bytes() == resolve("to-share").read_bytes()
    with pytest.raises(FileExistsError):
        export_model("to-share", target)
    with pytest.raises(ModelError):
        export_model("not-there", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_delete_user_model(user_models, make_model):
    path = save_user_model(make_model(), "gone")
    assert path.with_suffix(".json").exists()
    delete_user_model("gone")
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert "gone" not in list_models()
    with pytest.raises(ModelError, match="no user model"):
        delete_user_model("gone")
    with pytest.raises(ModelError, match="invalid model name"):
        delete_user_model("../gone")


@pytest.mark.parametrize("name", ["a", "model-1.2_b", "X" * 100])
def test_check_name_accepts(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a/b", "a b", "X" * 101, "é"])
def test_check_name_rejects(name):
    with pytest.raises(ModelError):
        check_name(name)


def test_new_model_is_seeded(same_weights):
    a, b, c = new_model(TINY, seed=1), new_model(TINY, seed=1), new_model(TINY, seed=2)
    assert same_weights(a.net, b.net)
    assert not same_weights(a.net, c.net)
    assert a.card.architecture == TINY and a.name == "untrained"
    assert isinstance(a, Model)


@pytest.mark.parametrize("card", ["[]", "1", "null"])
def test_card_that_is_not_a_json_object_is_a_model_error(tmp_path, card, make_model):
    p = tmp_path / "odd.safetensors"
    state = {k: v.contiguous() for k, v in make_model().net.state_dict().items()}
    save_file(state, str(p), metadata={CARD_KEY: card})
    with pytest.raises(ModelError):
        load(p)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"architecture": {"base_width": 4096}}, "larger than any real model"),
        ({"architecture": {"in_channels": 10**9}}, "larger than any real model"),
        ({"architecture": {"depth": 4.5}}, "whole number"),
        ({"architecture": {"base_width": 16.0}}, "whole number"),
        ({"architecture": {"n_dist": True}}, "whole number"),
        ({"training": [1, 2]}, "training must be a JSON object"),
        ({"metrics": "good"}, "metrics must be a JSON object"),
        ({"postprocess": [0.5]}, "postprocess must be a JSON object"),
        ({"modality": 3}, "modality must be a string"),
        ({"modality": "phase"}, "unknown imaging modality"),
        ({"upscale_small": "yes"}, "upscale_small must be true or false"),
        ({"kind_in_doubt": "he"}, "kind_in_doubt must be one of fluorescence, brightfield"),
        ({"postprocess_by_kind": [1]}, "postprocess_by_kind must be a JSON object"),
        ({"postprocess_by_kind": {"phase": {}}}, "unknown imaging kind 'phase'"),
        ({"postprocess_by_kind": {"he": 0.5}}, r"postprocess_by_kind\['he'\] must be a JSON object"),
        ({"postprocess_by_kind": {"he": {"fg_threshold": 2}}}, "strictly between 0 and 1"),
        ({"weights_by_kind": {"he": {"in_channels": 10**9}}}, r"in_channels must be 1 \(grey\) or 3 \(colour\)"),
        ({"weights_by_kind": {"he": {"in_channels": True}}}, r"in_channels must be 1 \(grey\) or 3"),
        ({"weights_by_kind": {"he": {"in_channels": 3}}}, "do not match its architecture"),  # no such tensors
    ],
)
def test_hostile_cards_are_refused_before_anything_is_built(tmp_path, change, words, make_model):
    """A card is checked (types, bounds) before any network is built or memory allocated."""
    card = make_model().card.to_dict()
    for key, value in change.items():
        card[key] = {**card[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ModelError, match=words):
        load(_write_with_card(tmp_path / "h.safetensors", card))


def test_tensor_shapes_are_checked_from_the_header_before_loading(tmp_path, monkeypatch, make_model):
    m = make_model()
    m.card.architecture = UNetConfig(depth=m.card.architecture.depth, base_width=m.card.architecture.base_width + 4)
    path = save(m, tmp_path / "m.safetensors")
    # the weights are never read for a card that does not fit them
    monkeypatch.setattr(model_files, "load_file", lambda *a, **k: pytest.fail("weights read before the shape check"))
    with pytest.raises(ModelError, match="do not match its architecture"):
        load(path)


def test_a_saved_model_is_readable_as_other_files_are_and_keeps_the_mode_it_replaces(tmp_path):
    """Models on a shared folder: the umask's mode, not safetensors' private 0600; a re-save keeps the file's."""
    import os

    from napari_unet_loop.core import model_files
    from napari_unet_loop.core.unet import UNetConfig

    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="m")
    old = os.umask(0o022)
    try:
        path = model_files.save(model, tmp_path / "m.safetensors")
        assert path.stat().st_mode & 0o777 == 0o644 == path.with_suffix(".json").stat().st_mode & 0o777
        os.chmod(path, 0o640)
        model_files.save(model, path, overwrite=True)
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert model_files.load(path).card.name == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temporary file left


def test_a_model_never_writes_its_card_over_a_users_json(tmp_path, make_model):
    """``cells.json`` of an experiment beside a new ``cells`` model: refused, nothing written; a card is replaced."""
    mine = tmp_path / "cells.json"
    mine.write_text('{"plate": 7}')
    with pytest.raises(ModelError, match="cells.json is not a model card"):
        save(make_model(), tmp_path / "cells.safetensors")
    assert mine.read_text() == '{"plate": 7}' and sorted(p.name for p in tmp_path.iterdir()) == ["cells.json"]
    path = save(make_model(), tmp_path / "other.safetensors")
    path.unlink()  # a model file gone, its card left: the next model of that name replaces the card
    save(make_model(), tmp_path / "other.safetensors")
