import numpy as np
import pytest

from napari_unet_loop.core.stitch import stitch_planes, stitch_stack


def _blobs(shape=(24, 64, 64)):
    """Separated spheres and ellipsoids, labelled 1..k in 3D."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int32)
    blobs = [((12, 16, 16), (8, 8, 8)), ((10, 16, 46), (6, 10, 7)), ((14, 46, 30), (9, 6, 12))]
    for i, (c, r) in enumerate(blobs, 1):
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
        truth[inside] = i
    return truth


def _per_plane_ids(truth, seed=0):
    """What a 2D segmentation gives: the same objects, numbered anew and shuffled in every plane."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(truth)
    for z in range(truth.shape[0]):
        ids = np.unique(truth[z][truth[z] > 0])
        new = rng.permutation(len(ids)) + 1
        for i, n in zip(ids, new, strict=True):
            out[z][truth[z] == i] = n
    return out


def test_spheres_and_ellipsoids_each_become_one_object():
    truth = _blobs()
    stitched = stitch_planes(_per_plane_ids(truth), 0.5)
    assert len(np.unique(stitched[stitched > 0])) == 3
    for i in range(1, 4):  # one id per blob, the whole blob
        ids = np.unique(stitched[truth == i])
        assert ids.size == 1 and ids[0] > 0
        assert ((stitched == ids[0]) == (truth == i)).all()
    assert set(np.unique(stitched)) == {0, 1, 2, 3}  # ids 1..N


def test_touching_objects_in_a_plane_stay_apart_and_ids_are_unique():
    stack = np.zeros((4, 20, 40), np.int32)
    stack[:, 5:15, 5:19] = 1
    stack[:, 5:15, 19:33] = 2  # touching neighbour
    stack[2] = np.where(stack[2] == 1, 5, np.where(stack[2] == 2, 4, 0))  # swapped ids in one plane
    out = stitch_planes(stack, 0.5)
    assert len(np.unique(out[out > 0])) == 2
    assert (out[:, 10, 10] == out[0, 10, 10]).all() and (out[:, 10, 25] == out[0, 10, 25]).all()


def test_little_overlap_starts_a_new_object():
    stack = np.zeros((2, 20, 40), np.int32)
    stack[0, 5:15, 5:15] = 1
    stack[1, 5:15, 12:22] = 1  # IoU 30/170
    assert len(np.unique(stitch_planes(stack, 0.5))) == 3
    assert len(np.unique(stitch_planes(stack, 0.1))) == 2


def test_one_object_continues_only_one():
    """A nucleus splitting into two in the next plane: the larger overlap continues it, the other is new."""
    stack = np.zeros((2, 20, 40), np.int32)
    stack[0, 5:15, 5:35] = 1
    stack[1, 5:15, 5:22] = 1
    stack[1, 5:15, 22:35] = 2
    out = stitch_planes(stack, 0.3)
    assert out[1, 10, 10] == out[0, 10, 10] and out[1, 10, 30] != out[0, 10, 10]


@pytest.mark.parametrize("bad", [0.0, -1, 1.5])
def test_threshold_and_shape_are_checked(bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        stitch_planes(np.zeros((2, 4, 4), np.int32), bad)
    with pytest.raises(ValueError, match="3D labels"):
        stitch_planes(np.zeros((4, 4), np.int32))


def test_negative_values_are_not_objects_and_huge_ids_need_no_table_up_to_them():
    stack = np.zeros((3, 8, 8), np.int64)
    stack[:, 2:6, 2:6] = [[[1]], [[7]], [[2]]]
    stack[:, 0, 0] = -1  # e.g. an 'ignore' mark: stays as it is, never joined to an object
    out = stitch_planes(stack)
    assert out[:, 0, 0].tolist() == [-1, -1, -1] and np.unique(out[:, 2:6, 2:6]).tolist() == [1]
    huge = np.where(stack > 0, stack + 4_000_000_000, 0).astype(np.uint32)  # ids of another tool
    out = stitch_planes(huge)
    assert out.dtype == np.int32 and np.unique(out).tolist() == [0, 1]


def test_stitching_a_stack_holds_about_one_copy_of_it_in_memory():
    import tracemalloc

    rng = np.random.default_rng(0)
    stack = np.zeros((20, 256, 256), np.int32)
    for z in range(20):
        for k in range(40):
            y, x = rng.integers(0, 240, 2)
            stack[z, y : y + 12, x : x + 12] = k + 1
    tracemalloc.start()
    out = stitch_stack(stack[None])  # T, Z, Y, X
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.dtype == np.int32 and out.shape == (1, 20, 256, 256)
    assert peak < 2.5 * stack.nbytes  # the output, and a few planes of work (a 64-bit stack was 2 more copies)
