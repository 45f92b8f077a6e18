"""The model card: its dict form and the thresholds it gives per imaging kind."""

import pytest

from napari_unet_loop.core.model_card import ModelCard
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.unet import UNetConfig

TINY = UNetConfig(depth=2, base_width=4)


def test_card_dict_round_trip():
    card = ModelCard(name="x", architecture=TINY, description="d", parent="p", metrics={"seg": 0.5})
    again = ModelCard.from_dict(card.to_dict())
    assert again == card
    card.upscale_small = True
    assert ModelCard.from_dict(card.to_dict()).upscale_small is True
    older = {k: v for k, v in card.to_dict().items() if k != "upscale_small"}  # a card from before the setting
    assert ModelCard.from_dict(older).upscale_small is False
    card.kind_in_doubt = "brightfield"
    assert ModelCard.from_dict(card.to_dict()).kind_in_doubt == "brightfield"
    older = {k: v for k, v in card.to_dict().items() if k != "kind_in_doubt"}
    assert ModelCard.from_dict(older).kind_in_doubt is None


def test_thresholds_per_imaging_kind():
    general = PostprocessConfig(0.5, 0.5, 8, 1.0)
    card = ModelCard(name="x", architecture=TINY, postprocess=general)
    card.postprocess_by_kind = {"brightfield": PostprocessConfig(0.85, 0.5, 24, 1.0)}
    assert card.thresholds("brightfield") == PostprocessConfig(0.85, 0.5, 24, 1.0)
    assert card.thresholds("fluorescence") == card.thresholds(None) == card.thresholds("none") == general
    # a mapping replaces those settings in the kind's thresholds; a full set is used as it is
    assert card.thresholds("brightfield", {"min_size": 3}) == PostprocessConfig(0.85, 0.5, 3, 1.0)
    assert card.thresholds("he", {"min_size": 3}) == PostprocessConfig(0.5, 0.5, 3, 1.0)
    mine = PostprocessConfig(0.3, 0.3, 0, 0.0)
    assert card.thresholds("brightfield", mine) is mine
    with pytest.raises(ValueError, match="between 0 and 1"):
        card.thresholds("brightfield", {"fg_threshold": 1.5})
    again = ModelCard.from_dict(card.to_dict())
    assert again.postprocess_by_kind == card.postprocess_by_kind
    # a kind's entry names only what differs from the general thresholds; older cards have none
    data = {**card.to_dict(), "postprocess_by_kind": {"he": {"min_size": 40}}}
    assert ModelCard.from_dict(data).thresholds("he") == PostprocessConfig(0.5, 0.5, 40, 1.0)
    older = {k: v for k, v in card.to_dict().items() if k != "postprocess_by_kind"}
    assert ModelCard.from_dict(older).postprocess_by_kind == {}
