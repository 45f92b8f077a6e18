"""Label TIFFs: OME-TIFF when the name says so, its pixel sizes read back as ImageJ's are."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet_loop.io.labels import read_tiff_scale, write_tiff
from napari_unet_loop.io.readers import read_labels


@pytest.mark.parametrize("top", [7, 70_000])  # uint16 and uint32 ids
def test_an_ome_tif_name_gets_an_ome_tiff_with_its_pixel_sizes(tmp_path, top):
    labels = np.zeros((3, 20, 30), np.int64)
    labels[1, 5:9, 5:12] = top
    path = write_tiff(tmp_path / "cells.ome.tif", labels, scale=(2.0, 0.5, 0.25), unit="um")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_imagej  # OME-XML, as the name promises (it was an ImageJ TIFF)
        assert tif.series[0].axes == "ZYX"
        assert read_tiff_scale(tif, 3, "ZYX") == ([2.0, 0.5, 0.25], "um")
    (data, kwargs, kind), *_ = read_labels(path)
    assert kind == "labels" and np.array_equal(data, labels)
    assert list(kwargs["scale"]) == [2.0, 0.5, 0.25]


def test_a_microscopes_ome_tiff_gives_its_pixel_size_and_unit(tmp_path):
    """An OME-TIFF as acquisition software writes it (nanometres, time steps): sizes per axis."""
    path = tmp_path / "movie.ome.tif"
    image = np.zeros((4, 16, 16), np.uint16)
    meta = {"axes": "TYX", "PhysicalSizeX": 65.0, "PhysicalSizeY": 65.0, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(path, image, ome=True, metadata={**meta, "PhysicalSizeYUnit": "nm", "TimeIncrement": 30.0})
    with tifffile.TiffFile(path) as tif:
        assert read_tiff_scale(tif, 3, "TYX") == ([30.0, 65.0, 65.0], "nm")


def test_an_ome_tiff_without_sizes_has_no_scale(tmp_path):
    path = write_tiff(tmp_path / "plain.ome.tiff", np.eye(8, dtype=np.uint16))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and read_tiff_scale(tif, 2, "YX") == (None, None)


def test_an_uncalibrated_ome_tiff_keeps_its_z_spacing_and_time_step(tmp_path):
    """Pixels as the unit (no pixel size): the z spacing and time step are still written, as ImageJ's are."""
    for axes, scale in (("ZYX", (2.0, 1.0, 1.0)), ("TYX", (5.0, 1.0, 1.0))):
        path = write_tiff(tmp_path / f"{axes}.ome.tif", np.zeros((3, 8, 8), np.uint16), scale=scale, axes=axes)
        with tifffile.TiffFile(path) as tif:
            assert read_tiff_scale(tif, 3, axes) == (list(scale), None)


def test_an_ome_z_spacing_in_another_unit_is_given_in_the_pixel_sizes_unit(tmp_path):
    path = tmp_path / "stack.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": 100.0, "PhysicalSizeY": 100.0, "PhysicalSizeZ": 0.5}
    units = {"PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm", "PhysicalSizeZUnit": "\u00b5m"}
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint16), ome=True, metadata={**meta, **units})
    with tifffile.TiffFile(path) as tif:
        scale, unit = read_tiff_scale(tif, 3, "ZYX")
    assert scale == pytest.approx([500.0, 100.0, 100.0]) and unit == "nm"


@pytest.mark.parametrize(("step", "unit", "seconds"), [(2.0, "min", 120.0), (250.0, "ms", 0.25), (30.0, None, 30.0)])
def test_an_ome_time_step_is_read_in_seconds(tmp_path, step, unit, seconds):
    """A time step in minutes or milliseconds reads as seconds, the unit ImageJ's frame interval is in."""
    path = tmp_path / "movie.ome.tif"
    meta = {"axes": "TYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "TimeIncrement": step}
    if unit is not None:
        meta["TimeIncrementUnit"] = unit
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), ome=True, metadata=meta)
    with tifffile.TiffFile(path) as tif:
        scale, _ = read_tiff_scale(tif, 3, "TYX")
    assert scale == pytest.approx([seconds, 0.5, 0.5])
    back = write_tiff(tmp_path / "labels.ome.tif", np.zeros((3, 8, 8), np.uint16), scale=scale, unit="um", axes="TYX")
    with tifffile.TiffFile(back) as tif:
        assert read_tiff_scale(tif, 3, "TYX")[0] == pytest.approx([seconds, 0.5, 0.5])


def test_a_colour_tiffs_pixel_size_is_along_y_and_x(tmp_path):
    """A colour TIFF (axes YXS) opens at its pixel size: it was set on X and the samples, not Y and X."""
    from napari_unet_loop.io.readers import read_tiff

    rgb = np.zeros((30, 20, 3), np.uint8)
    tifffile.imwrite(tmp_path / "he.tif", rgb, photometric="rgb", resolution=(2e4, 4e4), resolutionunit="CENTIMETER")
    with tifffile.TiffFile(tmp_path / "he.tif") as tif:
        assert read_tiff_scale(tif, 3, "YXS") == (pytest.approx([0.25, 0.5, 1.0]), "um")
    (_, kwargs, kind), *_ = read_tiff(tmp_path / "he.tif")
    assert kind == "image" and kwargs["rgb"] and list(kwargs["scale"]) == pytest.approx([0.25, 0.5])
