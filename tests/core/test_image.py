import numpy as np
import pytest

from napari_unet_loop.core.image import (
    MIN_SIDE,
    InputError,
    Normalization,
    input_limits,
    normalize,
    prepare_input,
    to_grey,
)


def _ramp(shape=(50, 60), dtype=np.float32):
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def test_normalize_maps_percentiles_to_zero_and_one():
    img = _ramp().astype(np.uint16)
    out = normalize(img, Normalization(1.0, 99.0))
    assert out.dtype == np.float32 and out.shape == img.shape
    lo, hi = np.percentile(img, [1.0, 99.0])
    np.testing.assert_allclose(out, (img - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert np.mean(out < 0) == pytest.approx(0.01, abs=0.002)
    assert np.mean(out > 1) == pytest.approx(0.01, abs=0.002)


def test_normalize_falls_back_to_min_max_for_sparse_images():
    img = np.zeros((40, 40), np.float32)
    img[3, 4] = 7.0  # percentiles are both 0
    out = normalize(img)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalize_rejects_non_finite_values(bad):
    img = _ramp()
    img[5, 5] = bad
    img[6, 6] = bad
    with pytest.raises(InputError, match="2 NaN or infinite"):
        normalize(img)


def test_finite_values_beyond_32_bit_floats_are_not_called_nan():
    img = _ramp().astype(np.float64)
    img[5, 5] = 1e300
    with pytest.raises(InputError, match="values up to 1e\\+300, beyond what 32-bit floats hold"):
        normalize(img)
    with pytest.raises(InputError, match="beyond what 32-bit floats hold"):
        normalize(img, limits=(0.0, 1.0))


def test_64_bit_images_with_a_large_offset_or_range_keep_their_detail():
    """1e7 + a ramp of 0..1 in float32 is a few grey levels; normalised in 64 bits it is the ramp."""
    ramp = _ramp().astype(np.float64) / _ramp().max()
    for img in (1e7 + ramp, ramp * 1e300):
        out = normalize(img, Normalization(0.0, 100.0))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ramp, atol=1e-5)
    assert to_grey(1e7 + ramp).dtype == np.float64  # kept until it is normalised
    assert prepare_input(np.stack([1e7 + ramp] * 3, -1), 3, Normalization(0.0, 100.0)).std() > 0.2


def test_wide_integer_images_with_a_large_offset_and_tiny_float_values_are_not_constant():
    """int64 1e9 + 0..255 collapsed to a few grey levels in float32; a float32 image of values near 1e-8 was
    called constant by an absolute floor of 1e-6 (both came out as blank planes, no objects)."""
    ramp = _ramp().astype(np.float64) / _ramp().max()
    wide = (1_000_000_000 + np.round(ramp * 255)).astype(np.int64)
    out = normalize(wide, Normalization(0.0, 100.0))
    np.testing.assert_allclose(out, np.round(ramp * 255) / 255, atol=1e-5)
    assert to_grey(wide).dtype == np.float64 and to_grey(wide.astype(np.uint32) - 999_990_000).dtype == np.float64
    tiny = (ramp * 1e-8 + 1e-8).astype(np.float32)
    np.testing.assert_allclose(normalize(tiny, Normalization(0.0, 100.0)), ramp, atol=1e-3)


@pytest.mark.parametrize("value", [0.0, 3.5, -1e6])
def test_normalize_rejects_constant_images(value):
    with pytest.raises(InputError, match="constant"):
        normalize(np.full((20, 20), value, np.float32))


@pytest.mark.parametrize("shape", [(MIN_SIDE - 1, 100), (100, 3), (1, 1)])
def test_normalize_rejects_tiny_images(shape):
    with pytest.raises(InputError, match="too small"):
        normalize(np.random.default_rng(0).random(shape))


def test_normalize_rejects_non_2d():
    with pytest.raises(InputError, match="2D"):
        normalize(np.random.default_rng(0).random((3, 20, 20)))


def test_normalize_accepts_the_minimum_size():
    out = normalize(np.random.default_rng(0).random((MIN_SIDE, MIN_SIDE)))
    assert out.shape == (MIN_SIDE, MIN_SIDE)


def test_to_grey_rgb_and_rgba():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    grey = to_grey(rgb)
    assert grey.dtype == np.float32 and grey.shape == (10, 12)
    np.testing.assert_allclose(grey, rgb.astype(np.float32).mean(-1), rtol=1e-6)
    rgba = np.concatenate([rgb, rng.integers(0, 255, (10, 12, 1), dtype=np.uint8)], -1)
    np.testing.assert_allclose(to_grey(rgba), grey)  # alpha ignored
    np.testing.assert_array_equal(to_grey(rgb, channel=1), rgb[..., 1])


def test_to_grey_multichannel_needs_a_channel():
    img = np.random.default_rng(0).random((10, 12, 5))
    with pytest.raises(InputError, match="choose the channel"):
        to_grey(img)
    np.testing.assert_allclose(to_grey(img, channel=2), img[..., 2].astype(np.float32))
    np.testing.assert_allclose(to_grey(img, channel=-1), img[..., 4].astype(np.float32))
    with pytest.raises(InputError, match="channel 5 does not exist"):
        to_grey(img, channel=5)
    with pytest.raises(InputError, match="does not exist"):
        to_grey(img, channel=-6)
    # a last axis of 3 that is not colour
    three = img[..., :3]
    with pytest.raises(InputError, match="choose the channel"):
        to_grey(three, rgb=False)


def test_to_grey_grey_with_alpha():
    grey = np.random.default_rng(0).integers(0, 255, (10, 12)).astype(np.uint8)
    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    np.testing.assert_array_equal(to_grey(la), grey.astype(np.float32))
    np.testing.assert_array_equal(to_grey(grey[..., None]), grey.astype(np.float32))
    two_channels = np.stack([grey, grey[::-1]], axis=-1)  # second channel is not an opacity channel
    with pytest.raises(InputError, match="choose the channel"):
        to_grey(two_channels)


def test_to_grey_plain_and_invalid():
    img = np.arange(20, dtype=np.int16).reshape(4, 5)
    out = to_grey(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img)
    with pytest.raises(InputError, match="2D"):
        to_grey(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="not a number type"):
        to_grey(np.zeros((4, 5), bool))
    with pytest.raises(InputError, match="not a number type"):
        to_grey(np.zeros((4, 5), complex))


def test_prepare_input_grey_and_rgb():
    rng = np.random.default_rng(0)
    grey = rng.random((20, 30))
    x = prepare_input(grey)
    assert x.shape == (1, 20, 30) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], normalize(grey), rtol=1e-6)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert prepare_input(rgb).shape == (1, 20, 30)
    np.testing.assert_allclose(prepare_input(rgb, channel=0)[0], normalize(rgb[..., 0]), rtol=1e-6)


def test_prepare_input_multichannel_model():
    rng = np.random.default_rng(1)
    img = np.stack([rng.random((20, 30)), 100 * rng.random((20, 30))], -1)
    x = prepare_input(img, in_channels=2)
    assert x.shape == (2, 20, 30)
    for c in range(2):  # each channel normalised on its own
        np.testing.assert_allclose(x[c], normalize(img[..., c]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, in_channels, have", [((20, 30, 3), 2, 3), ((20, 30), 3, 1), ((20, 30, 4), 3, 4)])
def test_prepare_input_channel_count_mismatch(shape, in_channels, have):
    with pytest.raises(InputError, match=f"expects {in_channels} channels.*has {have}"):
        prepare_input(np.random.default_rng(0).random(shape), in_channels=in_channels, rgb=False)


def test_an_rgb_model_reads_an_rgba_image_as_its_rgb():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], -1)  # an RGBA PNG
    np.testing.assert_array_equal(prepare_input(rgba, in_channels=3), prepare_input(rgb, in_channels=3))
    assert input_limits(rgba, in_channels=3) == input_limits(rgb, in_channels=3)


def test_prepare_input_passes_errors_on():
    img = np.random.default_rng(0).random((20, 30))
    img[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prepare_input(img)
    with pytest.raises(InputError, match="constant"):
        prepare_input(np.ones((20, 30, 2)), in_channels=2)


@pytest.mark.parametrize("low, high", [(50, 50), (60, 40), (-1, 99), (1, 101)])
def test_normalization_validation(low, high):
    with pytest.raises(ValueError):
        Normalization(low, high)


def test_normalization_dict_round_trip():
    n = Normalization(0.5, 99.5)
    assert Normalization.from_dict(n.to_dict()) == n
    assert Normalization.from_dict({}) == Normalization()
    with pytest.raises(ValueError, match="unknown"):
        Normalization.from_dict({"clip": True})
