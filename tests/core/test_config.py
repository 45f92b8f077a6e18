import json

import pytest

from napari_unet_loop.core.augment import AugmentConfig
from napari_unet_loop.core.config import Settings
from napari_unet_loop.core.image import Normalization
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.core.train import TrainConfig
from napari_unet_loop.core.unet import UNetConfig

ALL = (Normalization(), PostprocessConfig(0.6, 0.3, 12, 1.5), UNetConfig(depth=3), AugmentConfig(zoom=(0.9, 1.1)),
       TrainConfig(minutes=2, augment=AugmentConfig(blur=1.0)))  # fmt: skip


@pytest.mark.parametrize("settings", ALL, ids=lambda s: type(s).__name__)
def test_every_settings_class_round_trips_through_json(settings):
    assert isinstance(settings, Settings)
    back = type(settings).from_dict(json.loads(json.dumps(settings.to_dict())))
    assert back == settings  # nested settings and tuples come back as they were


@pytest.mark.parametrize("settings", ALL, ids=lambda s: type(s).__name__)
def test_unknown_keys_and_non_objects_are_refused(settings):
    with pytest.raises(ValueError, match=f"unknown {type(settings)._what} keys: \\['typo'\\]"):
        type(settings).from_dict({**settings.to_dict(), "typo": 1})
    with pytest.raises(TypeError, match="JSON object"):
        type(settings).from_dict([1, 2])


def test_nested_settings_are_checked_too():
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        TrainConfig.from_dict({"minutes": 1, "augment": {"flipp": True}})
