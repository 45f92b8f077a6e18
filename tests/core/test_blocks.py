"""Block-wise segmentation: the grid, which blocks reach a core, the merge rules and what a block task reads."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet_loop.core import model_files
from napari_unet_loop.core.blocks import (
    MIN_BLOCK,
    BlockGrid,
    id_offsets,
    merge_core,
    paste,
    plan_blocks,
    segment_block,
)
from napari_unet_loop.core.image import InputError
from napari_unet_loop.core.predict import model_halo
from napari_unet_loop.core.unet import UNetConfig

GRIDS = [
    BlockGrid((300, 520), 128, 48, 24, 4),
    BlockGrid((64, 64), 64, 0, 0, 1),  # one block, no margin
    BlockGrid((130, 257), 64, 150, 10, 8),  # margin larger than two blocks
    BlockGrid((1, 1000), 64, 10, 5, 1),  # one row of pixels
    BlockGrid((200, 200), 64, 64, 3, 1),  # margin exactly one block: regions end where cores begin
    BlockGrid((256, 193), 64, 65, 7, 16),  # margin just over one block
]


def _ids(grid: BlockGrid) -> list[str]:
    return [f"{g.shape}-b{g.block}-m{g.margin}" for g in grid]


@pytest.fixture(scope="module")
def tiny_model():
    return model_files.new_model(UNetConfig(depth=2, base_width=4), name="tiny", seed=0)


class Recording:
    """A numpy image that records the keys it is sliced with."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def disc_plane(discs, shape=(200, 230), n=40, seed=1):
    """Non-touching discs (radius 5-9) as a two-level ``uint8`` image, and their labels."""
    labels = discs(shape, n, radius=(5, 9), seed=seed, gap=2)
    return np.where(labels > 0, 200, 20).astype(np.uint8), labels


# ------------------------------------------------------------------------------------------ the grid


@pytest.mark.parametrize("grid", GRIDS, ids=_ids(GRIDS))
def test_cores_tile_the_plane_exactly_once(grid):
    assert grid.rows == math.ceil(grid.shape[0] / grid.block) and grid.cols == math.ceil(grid.shape[1] / grid.block)
    assert len(grid) == grid.rows * grid.cols
    count = np.zeros(grid.shape, np.int32)
    for i in range(len(grid)):
        y0, x0, y1, x1 = grid.core(i)
        assert 0 <= y0 < y1 <= grid.shape[0] and 0 <= x0 < x1 <= grid.shape[1]
        assert y1 - y0 <= grid.block and x1 - x0 <= grid.block
        count[y0:y1, x0:x1] += 1
    assert (count == 1).all()
    # row-major numbering
    assert grid.core(0)[:2] == (0, 0)
    if grid.cols > 1:
        assert grid.core(1)[:2] == (0, grid.block)
    if grid.rows > 1:
        assert grid.core(grid.cols)[:2] == (grid.block, 0)


@pytest.mark.parametrize("grid", GRIDS, ids=_ids(GRIDS))
def test_region_and_window_are_clipped_to_the_plane(grid):
    h, w = grid.shape
    m, halo, mult = grid.margin, grid.halo, grid.multiple
    for i in range(len(grid)):
        y0, x0, y1, x1 = grid.core(i)
        assert grid.region(i) == (max(y0 - m, 0), max(x0 - m, 0), min(y1 + m, h), min(x1 + m, w))
        ry0, rx0, ry1, rx1 = grid.region(i)
        wy0, wx0, wy1, wx1 = grid.window(i)
        assert wy0 % mult == 0 and wx0 % mult == 0  # on the whole image's pooling grid
        assert max(ry0 - halo, 0) - mult < wy0 <= max(ry0 - halo, 0)  # at least the halo, less than one step more
        assert max(rx0 - halo, 0) - mult < wx0 <= max(rx0 - halo, 0)
        assert (wy1, wx1) == (min(ry1 + halo, h), min(rx1 + halo, w))


def test_region_example():
    grid = BlockGrid((300, 520), 128, 48, 24, 4)
    assert grid.core(7) == (128, 256, 256, 384)
    assert grid.region(7) == (80, 208, 300, 432)
    assert grid.window(7) == (56, 184, 300, 456)
    assert grid.core(9) == (128, 512, 256, 520)  # the last column is cut by the plane's edge
    assert grid.core(14) == (256, 512, 300, 520)
    assert grid.region(0) == (0, 0, 176, 176)
    assert grid.window(14) == (184, 440, 300, 520)


@pytest.mark.parametrize("grid", GRIDS, ids=_ids(GRIDS))
def test_sources_are_every_block_whose_region_reaches_the_core(grid):
    for i in range(len(grid)):
        y0, x0, y1, x1 = grid.core(i)
        brute = []
        for j in range(len(grid)):
            ry0, rx0, ry1, rx1 = grid.region(j)
            if ry0 < y1 and ry1 > y0 and rx0 < x1 and rx1 > x0:
                brute.append(j)
        assert grid.sources(i) == brute  # all of them, ascending
        assert i in grid.sources(i)


def test_sources_examples():
    assert BlockGrid((64, 64), 64, 0, 0).sources(0) == [0]
    grid = BlockGrid((192, 192), 64, 16, 0)  # 3 x 3: the centre is reached by all nine
    assert grid.sources(4) == list(range(9)) and grid.sources(0) == [0, 1, 3, 4]
    assert BlockGrid((192, 192), 64, 0, 0).sources(4) == [4]


# ------------------------------------------------------------------------------------------ ids and merge


def test_id_offsets():
    offsets = id_offsets([3, 0, 5, 2])
    assert offsets.dtype == np.int64
    assert offsets.tolist() == [0, 3, 3, 8]
    assert id_offsets([7]).tolist() == [0]
    assert id_offsets([]).tolist() == []
    assert id_offsets([2**31, 2**31, 1]).tolist() == [0, 2**31, 2**32]  # no 32-bit overflow


def _random_results(grid: BlockGrid, seed: int) -> tuple[dict[int, np.ndarray], list[int]]:
    """Per block, labels over its region with ids 1..k (random rectangles, overlapping the neighbours' margins)."""
    rng = np.random.default_rng(seed)
    results, counts = {}, []
    for j in range(len(grid)):
        ry0, rx0, ry1, rx1 = grid.region(j)
        local = np.zeros((ry1 - ry0, rx1 - rx0), np.uint32)
        k = int(rng.integers(0, 6))
        for n in range(1, k + 1):
            ya, xa = rng.integers(0, local.shape[0]), rng.integers(0, local.shape[1])
            local[ya : ya + rng.integers(1, 40), xa : xa + rng.integers(1, 40)] = n
        results[j] = local
        counts.append(int(local.max()))
    return results, counts


def _reference(grid: BlockGrid, results, offsets) -> np.ndarray:
    """Paste every block into one plane in row-major order; a pixel keeps the first id it gets."""
    full = np.zeros(grid.shape, np.int64)
    for j in range(len(grid)):
        ry0, rx0, ry1, rx1 = grid.region(j)
        dst = full[ry0:ry1, rx0:rx1]
        write = (results[j] > 0) & (dst == 0)
        dst[write] = results[j][write].astype(np.int64) + offsets[j]
    return full


MERGE_GRIDS = [g for g in GRIDS if g.shape[0] > 1] + [BlockGrid((150, 170), 64, 20, 0)]


@pytest.mark.parametrize("grid", MERGE_GRIDS, ids=_ids(MERGE_GRIDS))
def test_merge_core_equals_one_row_major_paste(grid):
    results, counts = _random_results(grid, seed=len(grid))
    offsets = [int(o) for o in id_offsets(counts)]
    full = _reference(grid, results, offsets)
    assert full.any()
    shuffled = list(results.items())
    random.Random(0).shuffle(shuffled)
    shuffled = dict(shuffled)
    for i in range(len(grid)):
        y0, x0, y1, x1 = grid.core(i)
        want = full[y0:y1, x0:x1]
        got = merge_core(grid, i, results, offsets, np.uint32)
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(merge_core(grid, i, shuffled, offsets, np.uint32), want)
        only = {j: results[j] for j in reversed(grid.sources(i))}  # just the sources, in another order
        np.testing.assert_array_equal(merge_core(grid, i, only, offsets, np.int64), want)


def test_merge_core_gives_an_overlap_to_the_first_block():
    grid = BlockGrid((128, 64), 64, 16, 0)  # two blocks, one above the other
    top = np.zeros((80, 64), np.uint32)
    top[50:80, 10:20] = 1  # reaches 16 rows into the lower core
    bottom = np.zeros((80, 64), np.uint32)  # region rows 48..128
    bottom[0:40, 15:30] = 1  # rows 48..88, overlapping the top block's object at rows 50..80, cols 15..20
    bottom[60:70, 40:50] = 2
    offsets = [int(o) for o in id_offsets([1, 2])]
    lower = merge_core(grid, 1, {0: top, 1: bottom}, offsets, np.uint32)  # rows 64..128
    assert (lower[0:16, 10:20] == 1).all()  # the top block came first: its object keeps the overlap
    assert (lower[0:24, 20:30] == 2).all() and (lower[0:16, 15:20] == 1).all()
    assert (lower[44:54, 40:50] == 3).all()
    upper = merge_core(grid, 0, {0: top, 1: bottom}, offsets, np.uint32)  # rows 0..64
    assert (upper[50:64, 10:20] == 1).all() and (upper[48:50, 15:30] == 2).all()
    assert (upper[50:64, 20:30] == 2).all()


def test_merge_core_reads_only_the_part_of_each_block_over_the_core():
    grid = BlockGrid((300, 520), 128, 48, 0)
    results, counts = _random_results(grid, seed=3)
    offsets = [int(o) for o in id_offsets(counts)]
    i = 7
    y0, x0, y1, x1 = grid.core(i)
    recorded = {j: Recording(results[j]) for j in grid.sources(i)}
    got = merge_core(grid, i, recorded, offsets, np.uint32)
    np.testing.assert_array_equal(got, merge_core(grid, i, results, offsets, np.uint32))
    for j, rec in recorded.items():
        ry0, rx0, ry1, rx1 = grid.region(j)
        overlap = (slice(max(y0, ry0) - ry0, min(y1, ry1) - ry0), slice(max(x0, rx0) - rx0, min(x1, rx1) - rx0))
        assert rec.keys == [overlap], j


def test_paste_touches_only_the_overlap_and_zeros():
    target = np.zeros((10, 10), np.uint32)
    target[0, 0] = 9
    local = np.ones((6, 6), np.uint32)
    paste(target, (100, 200), local, (97, 197), 4)  # local covers target rows 0..3, cols 0..3
    assert target[0, 0] == 9 and (target[:3, :3][target[:3, :3] != 9] == 5).all()
    assert not target[3:].any() and not target[:, 3:].any()
    paste(target, (100, 200), local, (0, 0), 4)  # no overlap: nothing happens
    assert int(target.sum()) == 9 + 5 * 8


# ------------------------------------------------------------------------------------------ plan and block task


def test_plan_blocks_refuses_small_blocks(tiny_model):
    image = np.arange(300 * 300).reshape(300, 300).astype(np.uint8)
    with pytest.raises(InputError, match=f"block size {MIN_BLOCK - 1} is too small: use at least {MIN_BLOCK}"):
        plan_blocks(tiny_model, image, block=MIN_BLOCK - 1)
    job = plan_blocks(tiny_model, image, block=MIN_BLOCK)
    assert job.grid.block == MIN_BLOCK


def test_plan_blocks_fixes_the_grid(tiny_model):
    image = np.zeros((150, 170), np.uint8)
    image[40:60, 40:60] = 200
    job = plan_blocks(tiny_model, image, block=64, margin=20)
    halo = model_halo(tiny_model.net)
    assert job.grid == BlockGrid((150, 170), 64, 20, halo, tiny_model.card.architecture.size_multiple)
    assert job.postprocess == tiny_model.card.postprocess and job.factor == 1.0
    half = plan_blocks(tiny_model, image, block=64, margin=20, factor=0.5)  # objects twice the network's size
    assert half.grid.margin == 40 and half.grid.halo == 2 * halo + 2


def test_segment_block_reads_only_its_window(tiny_model, discs):
    image, _ = disc_plane(discs)
    rec = Recording(image)
    job = plan_blocks(tiny_model, rec, block=64, margin=16)  # a strided subsample read here is fine
    grid = job.grid
    for i in (0, 5, len(grid) - 1):
        rec.keys.clear()
        out = segment_block(tiny_model, rec, job, i)
        wy0, wx0, wy1, wx1 = grid.window(i)
        assert rec.keys, "the block read nothing"
        read = 0
        for key in rec.keys:  # every read lies inside the window, and no pixel is read twice
            (ya, yb, ys), (xa, xb, xs) = key[0].indices(image.shape[0]), key[1].indices(image.shape[1])
            assert wy0 <= ya and yb <= wy1 and wx0 <= xa and xb <= wx1, (key, grid.window(i))
            read += len(range(ya, yb, ys)) * len(range(xa, xb, xs))
        assert read <= (wy1 - wy0) * (wx1 - wx0)
        ry0, rx0, ry1, rx1 = grid.region(i)
        assert out.shape == (ry1 - ry0, rx1 - rx0) and out.dtype == np.uint32
        assert np.unique(out[out > 0]).tolist() == list(range(1, int(out.max()) + 1))  # 1..k, no gaps
        np.testing.assert_array_equal(out, segment_block(tiny_model, image, job, i))  # same as on numpy


def _ideal_predict(net, x, **kwargs):
    """A stand-in network: foreground where the input is bright, each object's distance 1 at its centre."""
    fg = x[0] > 0.5
    comp, n = ndi.label(fg)
    dist = ndi.distance_transform_edt(fg).astype(np.float32)
    if n:
        peak = np.asarray(ndi.maximum(dist, comp, np.arange(1, n + 1)), np.float32)
        dist = np.where(comp > 0, dist / peak[np.maximum(comp - 1, 0)], 0).astype(np.float32)
    probs = np.zeros((net.config.n_classes + 1, *fg.shape), np.float32)
    probs[0] = 1.0 - fg
    probs[net.config.n_classes] = dist
    return probs


def test_blocks_keep_objects_centred_in_their_core_and_merge_into_the_whole_plane(tiny_model, discs, monkeypatch):
    """With a network that finds every disc, the merged blocks hold each disc once, whole, with its own id."""
    monkeypatch.setattr("napari_unet_loop.core.predict.predict", _ideal_predict)
    image, truth = disc_plane(discs)
    assert truth.max() >= 30
    job = plan_blocks(tiny_model, image, block=64, margin=20)  # margin over the largest diameter (19 px)
    grid = job.grid
    results = {}
    for i in reversed(range(len(grid))):  # the order the tasks run in does not matter
        local = segment_block(tiny_model, image, job, i)
        y0, x0, y1, x1 = grid.core(i)
        ry0, rx0, _, _ = grid.region(i)
        for k in range(1, int(local.max()) + 1):
            cy, cx = np.argwhere(local == k).mean(axis=0) + (ry0, rx0)
            assert y0 <= cy < y1 and x0 <= cx < x1  # kept: centred in the core
        results[i] = local
    counts = [int(results[i].max()) for i in range(len(grid))]
    assert sum(counts) == truth.max()  # each disc kept by exactly one block
    offsets = id_offsets(counts)
    merged = np.zeros(grid.shape, np.uint32)
    for i in range(len(grid)):
        y0, x0, y1, x1 = grid.core(i)
        merged[y0:y1, x0:x1] = merge_core(grid, i, results, offsets, np.uint32)
    np.testing.assert_array_equal(merged > 0, truth > 0)
    for k in range(1, truth.max() + 1):  # one id per disc, over the whole disc
        assert len(np.unique(merged[truth == k])) == 1
    assert len(np.unique(merged[merged > 0])) == truth.max()
