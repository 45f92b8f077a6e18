import numpy as np
import pytest

from napari_unet_loop.core.tiling import Tile, TileGrid, halo_for, reflect_indices, round_up


def test_round_up():
    assert round_up(0, 16) == 0
    assert round_up(1, 16) == 16
    assert round_up(16, 16) == 16
    assert round_up(17, 16) == 32
    assert round_up(203, 8) == 208


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("reach", [0, 1, 5, 40])
def test_reflect_indices_match_numpy_pad(n, reach):
    a = np.arange(n)
    expected = np.pad(a, reach, mode="reflect") if n > 1 else np.zeros(n + 2 * reach, int)
    got = reflect_indices(-reach, n + reach, n)
    np.testing.assert_array_equal(a[got], expected)


def test_reflect_indices_inside_are_identity():
    np.testing.assert_array_equal(reflect_indices(3, 9, 20), np.arange(3, 9))


@pytest.mark.parametrize(
    "shape, core", [((203, 317), 128), ((97, 401), 256), ((16, 16), 16), ((5, 300), 32), ((64, 64), 512)]
)
def test_tiles_cover_the_image_exactly_once(shape, core):
    grid = TileGrid(shape, core, 32, 16)
    cover = np.zeros(shape, int)
    for t in grid.tiles():
        assert t.h > 0 and t.w > 0
        assert t.y % 16 == 0 and t.x % 16 == 0
        cover[t.y : t.y + t.h, t.x : t.x + t.w] += 1
    np.testing.assert_array_equal(cover, 1)
    assert len(grid) == len(grid.tiles()) == grid.counts[0] * grid.counts[1]


def test_grid_geometry():
    grid = TileGrid((203, 317), 128, 112, 16)
    assert grid.core_shape == (128, 128)
    assert grid.tile_shape == (352, 352)
    assert grid.counts == (2, 3)
    # a core larger than the image shrinks to the image, rounded up to the multiple
    big = TileGrid((203, 317), 1024, 112, 16)
    assert big.core_shape == (208, 320)
    assert big.counts == (1, 1)
    assert big.tiles() == [Tile(0, 0, 203, 317)]
    # the last tile in each row and column is clipped to the image
    last = grid.tiles()[-1]
    assert (last.y, last.x, last.h, last.w) == (128, 256, 75, 61)


@pytest.mark.parametrize("core, halo", [(100, 16), (128, 24), (0, 16), (-16, 16)])
def test_grid_rejects_bad_sizes(core, halo):
    with pytest.raises(ValueError):
        TileGrid((100, 100), core, halo, 16)


@pytest.mark.parametrize("shape, core, halo", [((203, 317), 64, 48), ((40, 70), 32, 96), ((9, 33), 16, 16)])
def test_read_matches_mirror_padded_image(shape, core, halo):
    rng = np.random.default_rng(0)
    image = rng.random((2, *shape)).astype(np.float32)
    grid = TileGrid(shape, core, halo, 16)
    th, tw = grid.tile_shape
    reach = max(th, tw) + halo  # np.pad mirrors repeatedly when the reach exceeds the image
    padded = np.pad(image, ((0, 0), (halo, reach), (halo, reach)), mode="reflect")
    for t in grid.tiles():
        tile = grid.read(image, t)
        assert tile.shape == (2, th, tw)
        np.testing.assert_array_equal(tile, padded[:, t.y : t.y + th, t.x : t.x + tw])


def test_read_then_core_of_reassembles_the_image():
    rng = np.random.default_rng(1)
    image = rng.random((3, 203, 317))
    grid = TileGrid(image.shape[1:], 64, 32, 16)
    out = np.full_like(image, np.nan)
    for t in grid.tiles():
        out[:, t.y : t.y + t.h, t.x : t.x + t.w] = grid.core_of(grid.read(image, t), t)
    np.testing.assert_array_equal(out, image)


def test_halo_for():
    assert halo_for(215, 16) == 112
    assert halo_for(47, 4) == 24
    assert halo_for(33, 16) == 32
    for rf in range(1, 300, 7):
        h = halo_for(rf, 16)
        assert h % 16 == 0 and h >= rf / 2 and h - 16 < rf / 2
