"""Lazy images: OME-Zarr (NGFF 0.4 and 0.5) and TIFF described without reading pixels, read a window at a time."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet_loop.io.images import ReadError, expand_inputs, is_zarr_dir
from napari_unet_loop.io.lazy import LazySource, PlaneView, open_lazy, source_record


def ramp(shape, dtype=np.uint16) -> np.ndarray:
    """Every pixel different, so a wrong window or a transposition shows."""
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)


def write_ome(path, data, axes: str, version: str, scale=None, unit=None, levels: int = 1):
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt, zarr_format = {"0.4": (FormatV04(), 2), "0.5": (FormatV05(), 3)}[version]
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    spatial = [a for a in axes if a in "zyx"]
    write_image(
        data,
        root,
        axes=axes,
        fmt=fmt,
        scale_factors=tuple(2**k for k in range(1, levels)),
        scale=dict(zip("yx", scale)) if scale else None,
        axes_units={a: unit for a in spatial} if unit else None,
    )
    return path


def level0(path) -> str:
    """The first dataset path the multiscales metadata lists (ome-zarr-py names levels s0, s1, ...)."""
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    ms = attrs["multiscales"] if "multiscales" in attrs else attrs["ome"]["multiscales"]
    return ms[0]["datasets"][0]["path"]


class Recording:
    """A numpy array that records the keys it is sliced with."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.keys: list = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


# ------------------------------------------------------------------------------------------ OME-Zarr


@pytest.mark.parametrize("kind", ["tiff", "0.4", "0.5"])
def test_an_input_rewritten_in_place_changes_its_record(tmp_path, kind):
    """A resume compares the records: an input rewritten since the run began (same name, shape and type) is
    another input (its old blocks would be mixed with new ones)."""
    import time

    img = ramp((300, 260))
    if kind == "tiff":
        path = tmp_path / "cells.tif"
        tifffile.imwrite(path, img, tile=(64, 64))
    else:
        path = write_ome(tmp_path / "cells.ome.zarr", img, "yx", kind)
    before = source_record(open_lazy(path))
    assert source_record(open_lazy(path)) == before  # read again, unchanged: the same record
    time.sleep(0.05)  # past the file system's timestamp granularity
    if kind == "tiff":
        tifffile.imwrite(path, img[::-1].copy(), tile=(64, 64))
    else:
        arr = zarr.open_array(str(path / level0(path)), mode="r+")
        arr[100:200, 100:200] = 7  # one chunk rewritten
    after = source_record(open_lazy(path))
    assert after != before and {k for k in after if after[k] != before[k]} == {"written"}


@pytest.mark.parametrize("version, marker", [("0.4", ".zattrs"), ("0.5", "zarr.json")])
def test_ome_zarr_yx_with_scale_and_unit(tmp_path, version, marker):
    img = ramp((100, 120))
    path = write_ome(tmp_path / "cells.ome.zarr", img, "yx", version, scale=(0.5, 0.25), unit="micrometer", levels=2)
    assert (path / marker).is_file()  # really the zarr format of that NGFF version
    src = open_lazy(path)
    assert src.kind == "zarr" and src.axes == "YX"
    assert src.array == level0(path)  # the highest resolution, not a downsampled level
    assert src.shape == (100, 120) and src.plane_shape == (100, 120) and src.channels == 1
    assert src.dtype == "uint16"
    assert src.scale == pytest.approx([0.5, 0.25])  # Y then X, not swapped
    assert src.unit == "micrometer"
    view = src.open()
    assert view.shape == (100, 120) and view.ndim == 2 and view.dtype == np.uint16
    np.testing.assert_array_equal(view[13:71, 40:117], img[13:71, 40:117])
    np.testing.assert_array_equal(np.asarray(view), img)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_scale_of_all_levels_is_applied(tmp_path, version):
    """NGFF lets the multiscales hold a scale (and shift) for all its levels: the pixel size is both
    composed, in the lazy path and in the napari reader (it read 1, the level's alone)."""
    import json

    from napari_unet_loop.io.readers import read_ome_zarr

    path = write_ome(tmp_path / "cells.ome.zarr", ramp((64, 80)), "yx", version, scale=(2.0, 1.0), unit="micrometer")
    meta = path / (".zattrs" if version == "0.4" else "zarr.json")
    doc = json.loads(meta.read_text())
    ms = (doc["multiscales"] if version == "0.4" else doc["attributes"]["ome"]["multiscales"])[0]
    ms["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [2.0, 1.0]},
        {"type": "translation", "translation": [4.0, 0.0]},
    ]
    ms["coordinateTransformations"] = [
        {"type": "scale", "scale": [0.5, 0.65]},
        {"type": "translation", "translation": [0.0, 10.0]},
    ]
    meta.write_text(json.dumps(doc))
    assert open_lazy(path).scale == pytest.approx([1.0, 0.65])
    (_, kwargs, _), *_ = read_ome_zarr(path)
    assert list(kwargs["scale"]) == pytest.approx([1.0, 0.65])
    assert list(kwargs["translate"]) == pytest.approx([2.0, 10.0])  # the level's shift scaled, then the common one


def test_ome_zarr_without_scale_reads_unit_none(tmp_path):
    path = write_ome(tmp_path / "plain.zarr", ramp((64, 80)), "yx", "0.4")
    src = open_lazy(path)
    assert src.unit is None
    assert src.scale in (None, [1.0, 1.0])


def test_source_is_small_picklable_and_recorded(tmp_path):
    path = write_ome(tmp_path / "a.zarr", ramp((64, 80)), "yx", "0.5", scale=(2.0, 2.0), unit="micrometer")
    src = open_lazy(path)
    again = pickle.loads(pickle.dumps(src))
    assert again == src
    np.testing.assert_array_equal(again.open()[:, :], ramp((64, 80)))
    rec = source_record(src)
    assert rec == {
        "path": str(path.resolve()),
        "kind": "zarr",
        "array": src.array,
        "axes": "YX",
        "shape": [64, 80],
        "dtype": "uint16",
        "written": rec["written"],  # when (see test_an_input_rewritten_in_place_changes_its_record)
    }
    assert isinstance(rec["written"][0], int)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_multichannel_cyx_is_seen_as_yxc(tmp_path, version):
    img = ramp((3, 90, 110))
    path = write_ome(tmp_path / "rgbish.zarr", img, "cyx", version)
    src = open_lazy(path)
    assert src.axes == "CYX" and src.channels == 3 and src.plane_shape == (90, 110)
    view = src.open()
    assert view.shape == (90, 110, 3) and view.ndim == 3
    yxc = np.transpose(img, (1, 2, 0))
    for win in [(slice(None), slice(None)), (slice(5, 60), slice(17, 101)), (slice(0, 90, 7), slice(3, 110, 5))]:
        np.testing.assert_array_equal(view[win], yxc[win])
    np.testing.assert_array_equal(view[10:20, 30:40, 1], img[1, 10:20, 30:40])  # one channel
    np.testing.assert_array_equal(view[10:20, 30:40, 1:], yxc[10:20, 30:40, 1:])


def test_singleton_t_c_z_axes_are_dropped(tmp_path):
    img = ramp((1, 1, 1, 70, 50))
    path = write_ome(tmp_path / "tczyx.zarr", img, "tczyx", "0.4")
    src = open_lazy(path)
    assert src.axes == "TCZYX" and src.plane_shape == (70, 50) and src.channels == 1
    view = src.open()
    assert view.shape == (70, 50, 1)  # the channel axis of length 1 is kept, T and Z go
    np.testing.assert_array_equal(view[4:30, 9:41][..., 0], img[0, 0, 0, 4:30, 9:41])


# ------------------------------------------------------------------------------------------ TIFF


def test_tiled_tiff_with_resolution(tmp_path):
    img = ramp((300, 200))
    # tifffile's resolution is (X, Y) in pixels per centimetre: X 0.5 um, Y 0.25 um
    tifffile.imwrite(tmp_path / "big.tif", img, tile=(64, 64), resolution=(2e4, 4e4), resolutionunit="CENTIMETER")
    src = open_lazy(tmp_path / "big.tif")
    assert src.kind == "tiff" and src.axes == "YX" and src.shape == (300, 200) and src.dtype == "uint16"
    assert src.scale == pytest.approx([0.25, 0.5]) and src.unit in ("um", "micrometer")
    view = src.open()
    assert view.shape == (300, 200)
    np.testing.assert_array_equal(view[70:150, 10:190], img[70:150, 10:190])
    np.testing.assert_array_equal(view[::3, ::5], img[::3, ::5])  # a strided subsample, as plan_blocks reads


def test_tiff_stack_gives_its_z_spacing(tmp_path):
    """An ImageJ stack's plane spacing reaches the block-wise path (it was 1, so its OME-Zarr had none)."""
    meta = {"unit": "um", "spacing": 3.0, "axes": "ZYX"}
    tifffile.imwrite(tmp_path / "st.tif", ramp((3, 40, 50)), imagej=True, resolution=(2.0, 4.0), metadata=meta)
    src = open_lazy(tmp_path / "st.tif", stack=True)
    assert src.depth == 3 and src.z_scale == pytest.approx(3.0)
    assert src.scale == pytest.approx([0.25, 0.5]) and src.unit == "um"


def test_rgb_tiff_is_yxs(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (100, 90, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "he.tif", rgb, photometric="rgb", tile=(32, 32))
    src = open_lazy(tmp_path / "he.tif")
    assert src.axes == "YXS" and src.channels == 3 and src.plane_shape == (100, 90)
    assert src.scale is None and src.unit is None
    view = src.open()
    assert view.shape == (100, 90, 3)
    np.testing.assert_array_equal(view[5:50, 3:40], rgb[5:50, 3:40])
    np.testing.assert_array_equal(view[5:50, 3:40, 2], rgb[5:50, 3:40, 2])


# ------------------------------------------------------------------------------------------ errors


def test_plain_zarr_array_is_refused(tmp_path):
    arr = zarr.open_array(str(tmp_path / "raw.zarr"), mode="w", shape=(40, 40), dtype="uint8", zarr_format=2)
    arr[:] = 1
    with pytest.raises(ReadError, match="plain zarr array, not an OME-Zarr image"):
        open_lazy(tmp_path / "raw.zarr")


def test_zarr_group_without_multiscales_is_refused(tmp_path):
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    root.create_array("data", shape=(40, 40), dtype="uint8")
    with pytest.raises(ReadError, match="zarr group but not an OME-Zarr image.*no 'multiscales'"):
        open_lazy(tmp_path / "g.zarr")


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_listed_but_missing_level_is_refused(tmp_path, version):
    path = write_ome(tmp_path / "cut.zarr", ramp((64, 64)), "yx", version, levels=2)
    first = level0(path)
    shutil.rmtree(path / first)
    with pytest.raises(ReadError, match=f"resolution level '{first}' is listed .* but missing"):
        open_lazy(path)


def test_z_stack_is_refused(tmp_path):
    path = write_ome(tmp_path / "stack.zarr", ramp((3, 40, 40)), "zyx", "0.4")
    with pytest.raises(ReadError, match="3 along Z; .*one 2D plane at a time"):
        open_lazy(path)
    tifffile.imwrite(tmp_path / "stack.tif", ramp((4, 40, 40)), metadata={"axes": "ZYX"})
    with pytest.raises(ReadError, match="4 along Z"):
        open_lazy(tmp_path / "stack.tif")


def test_single_plane_z_stack_is_accepted(tmp_path):
    img = ramp((1, 40, 50))
    path = write_ome(tmp_path / "one.zarr", img, "zyx", "0.4")
    view = open_lazy(path).open()
    assert view.shape == (40, 50)
    np.testing.assert_array_equal(view[:, :], img[0])


def test_folder_that_is_not_zarr_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    tifffile.imwrite(tmp_path / "folder" / "a.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(ReadError, match="is a folder, not a zarr store"):
        open_lazy(tmp_path / "folder")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ReadError, match="does not exist"):
        open_lazy(tmp_path / "nothing.tif")
    with pytest.raises(ReadError, match="does not exist"):
        open_lazy(tmp_path / "nothing.ome.zarr")


def test_file_that_is_not_a_tiff_is_refused(tmp_path):
    (tmp_path / "fake.tif").write_bytes(b"not a tiff at all" * 10)
    with pytest.raises(ReadError, match="cannot read .* as a TIFF image"):
        open_lazy(tmp_path / "fake.tif")


# ------------------------------------------------------------------------------------------ PlaneView reads


def _elements(key, shape) -> int:
    """How many array elements an index of slices and integers selects."""
    n = 1
    for k, size in zip(key, shape):
        if not isinstance(k, int):
            n *= len(range(*k.indices(size)))
    return n


def test_plane_view_reads_only_the_requested_window_yx():
    img = ramp((200, 300))
    rec = Recording(img)
    view = PlaneView(rec, "YX")
    assert rec.keys == []  # nothing is read when the view is made
    out = view[50:70, 100:130]
    assert rec.keys == [(slice(50, 70), slice(100, 130))]
    assert _elements(rec.keys[0], img.shape) == 20 * 30
    np.testing.assert_array_equal(out, img[50:70, 100:130])


def test_plane_view_reads_only_the_requested_window_with_channels_and_singletons():
    img = ramp((1, 3, 1, 200, 300))
    rec = Recording(img)
    view = PlaneView(rec, "TCZYX")
    assert view.shape == (200, 300, 3)
    out = view[10:40, 200:260]
    assert len(rec.keys) == 1
    key = rec.keys[0]
    assert key[0] == 0 and key[2] == 0 and key[3] == slice(10, 40) and key[4] == slice(200, 260)
    assert _elements(key, img.shape) == 30 * 60 * 3
    np.testing.assert_array_equal(out, np.transpose(img[0, :, 0, 10:40, 200:260], (1, 2, 0)))
    rec.keys.clear()
    view[10:40, 200:260, 2]
    assert _elements(rec.keys[0], img.shape) == 30 * 60  # one channel read, not three


def test_plane_view_reads_only_the_requested_window_yxs():
    img = ramp((120, 80, 4), np.uint8)
    rec = Recording(img)
    view = PlaneView(rec, "YXS")
    np.testing.assert_array_equal(view[::4, 7:9], img[::4, 7:9])
    assert rec.keys == [(slice(None, None, 4), slice(7, 9), slice(None))]


def test_lazy_source_open_reads_only_the_window(tmp_path, monkeypatch):
    """The real zarr array behind a view: a window touches only the chunks under it."""
    img = ramp((256, 256))
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=2)
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    write_image(img, root, axes="yx", fmt=FormatV04(), scale_factors=(), storage_options={"chunks": (64, 64)})
    src = open_lazy(tmp_path / "c.zarr")
    view = src.open()
    assert view.array.chunks == (64, 64)
    keys = []
    original = type(view.array).__getitem__

    def spy(self, key):
        keys.append(key)
        return original(self, key)

    monkeypatch.setattr(type(view.array), "__getitem__", spy)
    np.testing.assert_array_equal(view[70:80, 130:140], img[70:80, 130:140])
    assert keys == [(slice(70, 80), slice(130, 140))]


def test_plane_view_takes_numpy_integer_indices():
    img = ramp((20, 30))
    view = PlaneView(img, "YX")
    np.testing.assert_array_equal(view[np.int64(3), 2:5], img[3, 2:5])


def test_lazy_source_properties_without_reading():
    src = LazySource("x.zarr", "zarr", "0", "CYX", (4, 1000, 2000), "uint8")
    assert src.plane_shape == (1000, 2000) and src.channels == 4
    assert LazySource("x.tif", "tiff", "", "YX", (10, 20), "uint8").channels == 1


# ------------------------------------------------------------------------------------------ zarr folders as inputs


def test_zarr_folders_are_one_image_input(tmp_path):
    write_ome(tmp_path / "a.ome.zarr", ramp((32, 32)), "yx", "0.4")
    write_ome(tmp_path / "c.zarr", ramp((32, 32)), "yx", "0.5")
    tifffile.imwrite(tmp_path / "b.tif", ramp((8, 8)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.tif").write_bytes(b"")
    assert is_zarr_dir(tmp_path / "a.ome.zarr") and is_zarr_dir(tmp_path / "c.zarr")
    assert not is_zarr_dir(tmp_path / "notes") and not is_zarr_dir(tmp_path / "b.tif")
    assert not is_zarr_dir(tmp_path / "missing.zarr")
    # a folder: its zarr stores are images (not descended into), other sub-folders are not
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.ome.zarr", "b.tif", "c.zarr"]
    # a store named itself is one input, not a folder of images
    assert expand_inputs([tmp_path / "a.ome.zarr"]) == [tmp_path / "a.ome.zarr"]


def _hand_written_ngff(path, axes, shape=(1, 40, 50), datasets=None):
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", shape=shape, chunks=shape, dtype="uint8", fill_value=0)
    if datasets is None:
        datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return path


def test_axes_named_otherwise_are_read_by_their_type(tmp_path):
    axes = [{"name": "ch", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    src = open_lazy(_hand_written_ngff(tmp_path / "a.zarr", axes))
    assert src.axes == "CYX" and src.plane_shape == (40, 50) and src.scale == [0.5, 0.5]


@pytest.mark.parametrize(
    ("axes", "datasets", "match"),
    [
        ([{"name": "q", "type": "space"}, {"name": "y"}, {"name": "x"}], None, "malformed: axis 'q'"),
        ([{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}], [{"no path": 1}], "malformed"),
        ([{"name": "y"}, {"name": "x"}], None, "names 2 axes but level '0' has 3"),
    ],
)
def test_malformed_ngff_metadata_is_a_read_error(tmp_path, axes, datasets, match):
    with pytest.raises(ReadError, match=match):
        open_lazy(_hand_written_ngff(tmp_path / "b.zarr", axes, datasets=datasets))


def test_an_uncompressed_single_strip_tiff_is_read_a_window_at_a_time(tmp_path):
    """ImageJ writes a plane as one strip: through its chunks every block would read the whole plane."""
    import tracemalloc

    img = np.random.default_rng(0).integers(0, 255, (2000, 2000), np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img, imagej=True)
    view = open_lazy(tmp_path / "a.tif").open()
    tracemalloc.start()
    window = np.asarray(view[1000:1100, 1000:1100])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(window, img[1000:1100, 1000:1100])
    assert peak < 100_000  # the window, not the 4 MB plane
    tifffile.imwrite(tmp_path / "z.tif", img[:300, :300], compression="zlib")  # compressed: through its chunks
    np.testing.assert_array_equal(np.asarray(open_lazy(tmp_path / "z.tif").open()[10:20, 5:9]), img[10:20, 5:9])
