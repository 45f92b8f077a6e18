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


def test_a_job_writing_many_planes_makes_one_undo_step_and_keeps_the_users_edits():
    """napari keeps 100 undo steps: a step per plane would push the user's edits out of a 120-plane stack."""
    from napari.layers import Labels

    from napari_unet_loop.gui.layers import write_plane_into_step

    layer = Labels(np.zeros((120, 8, 8), np.int32))
    layer.paint((0, 4, 4), 7)  # the user's own edit, one step
    edited = layer.data.copy()
    step = None
    for z in range(120):
        step = write_plane_into_step(layer, (z,), np.full((8, 8), z + 1, np.int32), step)
    assert (layer.data[:, 0, 0] == np.arange(1, 121)).all()
    layer.undo()  # the whole job
    np.testing.assert_array_equal(layer.data, edited)
    layer.undo()  # and the user's edit before it
    assert layer.data.max() == 0
    layer.redo()
    layer.redo()
    assert (layer.data[:, 0, 0] == np.arange(1, 121)).all()


def test_a_plane_job_starts_a_step_of_its_own_after_the_user_paints_and_drops_none_from_a_full_history():
    from napari.layers import Labels

    from napari_unet_loop.gui.layers import write_plane_into_step

    layer = Labels(np.zeros((3, 8, 8), np.int32))
    for i in range(layer._history_limit):  # a full history: its oldest step must survive the job
        layer.paint((0, 0, i % 8), i + 1)
    before = layer.data.copy()
    step = write_plane_into_step(layer, (0,), np.full((8, 8), 50, np.int32), None)  # the job's step takes a slot
    oldest = layer._undo_history[0]
    step = write_plane_into_step(layer, (1,), np.full((8, 8), 51, np.int32), step)
    assert layer._undo_history[0] is oldest
    layer.paint((2, 4, 4), 9)  # the user paints while the job runs: the job's next plane is a new step
    write_plane_into_step(layer, (2,), np.full((8, 8), 52, np.int32), step)
    layer.undo()
    assert layer.data[2].max() == 9 and layer.data[1].max() == 51  # only the last plane undone
    layer.undo()
    assert layer.data[2].max() == 0 and layer.data[1].max() == 51  # the user's stroke
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)  # the job's first two planes together
