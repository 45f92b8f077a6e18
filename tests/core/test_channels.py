import numpy as np
import pytest

from napari_unet_loop.core import axes, channels, modality
from napari_unet_loop.core.errors import InputError


@pytest.mark.parametrize(
    ("shape", "rgb", "colour"),
    [
        ((64, 80, 3), None, True),
        ((64, 80, 4), None, True),
        ((64, 80, 3), True, True),
        ((64, 80, 3), False, False),
        ((64, 80, 2), None, False),
        ((64, 80, 5), True, False),  # napari's flag on an axis of five channels: channels, not colour
        ((64, 80), True, False),
        ((5, 64, 80, 3), None, False),
    ],
)
def test_one_rule_says_which_images_are_colour(shape, rgb, colour):
    image = np.zeros(shape, np.uint8)
    assert channels.is_colour(shape, rgb) is colour
    if len(shape) == 3 and shape[-1] >= 3:  # the grey plane and the axes follow the same rule
        if colour:
            assert channels.to_grey(image, rgb=rgb).shape == shape[:2]
        else:
            with pytest.raises(InputError, match="choose the channel"):
                channels.to_grey(image, rgb=rgb)
    if len(shape) == 3 and rgb is None:
        assert (axes.guess_axes(shape) == "YXS") is (colour or shape[-1] < 3)


def test_detection_reads_colour_of_a_colour_image_and_not_of_one_of_its_channels():
    rng = np.random.default_rng(0)
    stained = (np.array([230, 190, 215]) + rng.normal(0, 40, (64, 64, 1)) * np.array([1, 1.4, 0.7])).clip(0, 255)
    stained = stained.astype(np.uint8)
    assert modality.detect(stained).modality == "he"
    as_channels = modality.detect(stained, rgb=False, channel=0)  # one channel of it: grey, no colour to read
    assert as_channels.modality != "he" and as_channels.colour == 0
