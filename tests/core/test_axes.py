import numpy as np
import pytest

from napari_unet_loop.core.axes import guess_axes, to_stack
from napari_unet_loop.core.image import InputError


@pytest.mark.parametrize(
    "shape, rgb, axes",
    [
        ((64, 80), None, "YX"),
        ((64, 80, 3), None, "YXS"),
        ((64, 80, 4), None, "YXS"),
        ((64, 80, 3), False, "ZYX"),
        ((5, 64, 80), None, "ZYX"),
        ((3, 64, 80), None, "ZYX"),
        ((64, 80, 7), True, "YXS"),
        ((5, 64, 80, 3), True, "ZYXS"),
        ((64, 80, 2), None, "YXS"),  # grey + alpha
        ((64, 80, 1), None, "YXS"),
        ((64, 80, 2), False, "ZYX"),
        ((2, 64, 80), None, "ZYX"),
    ],
)
def test_guess_axes(shape, rgb, axes):
    assert guess_axes(shape, rgb=rgb) == axes


@pytest.mark.parametrize(
    "shape, rgb",
    [((2, 5, 64, 80), None), ((5, 64, 80, 3), None), ((2, 5, 64, 80), False), ((2, 3, 5, 64, 80), None)],
)
def test_guess_axes_refuses_ambiguous_shapes(shape, rgb):
    with pytest.raises(InputError, match="give them explicitly"):
        guess_axes(shape, rgb=rgb)


def test_to_stack_single_plane():
    data = np.arange(12).reshape(3, 4)
    stack, shape = to_stack(data, "YX")
    assert stack.shape == (1, 3, 4) and shape == ()
    np.testing.assert_array_equal(stack[0], data)
    stack_t, _ = to_stack(data, "XY")
    np.testing.assert_array_equal(stack_t[0], data.T)


def test_to_stack_of_stacks_keeps_the_order():
    rng = np.random.default_rng(0)
    data = rng.random((2, 3, 5, 6))  # T, Z, Y, X
    stack, shape = to_stack(data, "TZYX")
    assert stack.shape == (6, 5, 6) and shape == (2, 3)
    for t in range(2):
        for z in range(3):
            np.testing.assert_array_equal(stack[t * 3 + z], data[t, z])
    np.testing.assert_array_equal(stack.reshape(*shape, 5, 6), data)


def test_to_stack_moves_channels_last():
    rng = np.random.default_rng(1)
    data = rng.random((4, 2, 5, 6))  # Z, C, Y, X
    stack, shape = to_stack(data, "zcyx")
    assert stack.shape == (4, 5, 6, 2) and shape == (4,)
    np.testing.assert_array_equal(stack[1, :, :, 0], data[1, 0])
    np.testing.assert_array_equal(stack[3, :, :, 1], data[3, 1])
    rgb = rng.random((5, 6, 3))
    s2, sh2 = to_stack(rgb, "YXS")
    assert s2.shape == (1, 5, 6, 3) and sh2 == ()
    cyx, _ = to_stack(np.moveaxis(rgb, -1, 0), "CYX")
    np.testing.assert_array_equal(cyx, s2)


def test_to_stack_with_axes_between_the_plane():
    data = np.random.default_rng(2).random((5, 3, 6))  # Y, Z, X
    stack, shape = to_stack(data, "YZX")
    assert shape == (3,)
    np.testing.assert_array_equal(stack[2], data[:, 2, :])


@pytest.mark.parametrize(
    "shape, axes, match",
    [
        ((4, 5), "ZYX", "name 3 axes"),
        ((4, 5, 6), "YYX", "invalid axes"),
        ((4, 5, 6), "QYX", "invalid axes"),
        ((4, 5, 6), "TZY", "must contain Y and X"),
        ((2, 3, 4, 5), "CSYX", "one channel axis"),
    ],
)
def test_to_stack_errors(shape, axes, match):
    with pytest.raises(InputError, match=match):
        to_stack(np.zeros(shape), axes)


def test_z_stack_of_groups_the_planes_of_one_z_stack():
    from napari_unet_loop.core.axes import z_stack_of

    assert z_stack_of((3, 4), None) is None
    of = z_stack_of((3, 4), 1)  # (T, Z): the planes of one time point
    assert of((2, 1)) == [(2, 0), (2, 1), (2, 2), (2, 3)]
    of = z_stack_of((3, 4), 0)  # (Z, T)
    assert of((1, 3)) == [(0, 3), (1, 3), (2, 3)]


def test_planes_of_an_array_by_stack_position():
    from napari_unet_loop.core.axes import Planes

    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # T, Z, Y, X
    planes = Planes.of(data, "tzyx")
    assert planes.shape == (2, 3) and planes.axes == "TZ" and len(planes.indices) == 6
    np.testing.assert_array_equal(planes.read((1, 2)), data[1, 2])
    assert planes.stack_of()((1, 0)) == [(1, 0), (1, 1), (1, 2)]  # the Z stack of time point 1
    single = Planes.of(data[0, 0], "YX")
    assert single.indices == [()] and single.stack_of() is None
    np.testing.assert_array_equal(single.read(()), data[0, 0])
    assert Planes.of(data[0], "TYX").stack_of() is None  # time points stand alone
