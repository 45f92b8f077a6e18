"""Which stacked axis of an image layer is Z (planes normalised together)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image

from napari_unet_loop.gui.layers import layout, z_position

pytestmark = pytest.mark.gui


@pytest.mark.parametrize(
    ("shape", "names", "channel_axis", "expected"),
    [
        ((16, 16), None, None, None),  # one plane
        ((3, 16, 16), None, None, 0),  # unnamed: the axis before the plane is Z
        ((3, 16, 16), ("t", "y", "x"), None, None),  # time points
        ((3, 16, 16), ("Time", "y", "x"), None, None),
        ((2, 3, 16, 16), None, None, 1),
        ((2, 3, 16, 16), ("t", "z", "y", "x"), None, 1),
        ((3, 2, 16, 16), ("z", "t", "y", "x"), None, 0),  # named Z wins over the position
        ((2, 3, 4, 16, 16), ("c", "t", "z", "y", "x"), 0, 1),  # stack axes (t, z) once the channel is out
    ],
)
def test_z_position(shape, names, channel_axis, expected):
    kw = {} if names is None else {"axis_labels": names}
    layer = Image(np.zeros(shape, np.float32), **kw)
    assert z_position(layer, layout(layer, channel_axis)) == expected
    if names is not None and len(names[0]) == 1:  # the same axes noted by a reader in the metadata
        noted = Image(np.zeros(shape, np.float32), metadata={"axes": "".join(names).upper()})
        assert z_position(noted, layout(noted, channel_axis)) == expected


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("window", [None, (slice(10, 90), slice(5, 61))])
def test_sample_plane_is_the_strided_plane(lazy, window):
    import dask.array as da

    from napari_unet_loop.core.channels import sample_step
    from napari_unet_loop.gui.layers import read_plane, sample_plane

    data = np.random.default_rng(0).random((3, 100, 70)).astype(np.float32)
    layer = Image(da.from_array(data, chunks=(1, 32, 32)) if lazy else data)
    lay = layout(layer)
    plane = read_plane(layer, lay, (1,), window)
    step = sample_step(plane.shape, 500)
    assert step > 1
    np.testing.assert_array_equal(sample_plane(layer, lay, (1,), 500, window), plane[::step, ::step])
