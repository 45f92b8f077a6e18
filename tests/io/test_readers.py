"""Readers: exported files reopen as layers; foreign files of the same formats too."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile

from napari_unet_loop.io.export import export_labels
from napari_unet_loop.io.images import ReadError
from napari_unet_loop.io.readers import napari_get_reader, read_labels, rois_to_labels


def labels2d() -> np.ndarray:
    lab = np.zeros((30, 40), np.uint16)
    lab[2:8, 3:10] = 1
    lab[12:20, 15:30] = 2
    lab[22:28, 30:38] = 3
    return lab


def test_get_reader_claims_only_our_files(tmp_path):
    lab = labels2d()
    for fmt in ("tif", "png", "zarr", "roi"):
        export_labels(lab, tmp_path, fmt, name="a")
    for name in ("a.tif", "a.png", "a.zarr", "a.zip"):
        assert napari_get_reader(str(tmp_path / name)) is read_labels
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "a.png")]) is read_labels
    (tmp_path / "notes.txt").write_text("hi")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "not ROIs")
    (tmp_path / "plain.zarr").write_text("a file, not a store")
    for name in ("notes.txt", "other.zip", "missing.tif", "plain.zarr", "a.csv"):
        assert napari_get_reader(str(tmp_path / name)) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "notes.txt")]) is None


def test_read_several_paths_and_errors(tmp_path):
    lab = labels2d()
    export_labels(lab, tmp_path, "tif", name="a")
    export_labels(lab, tmp_path, "png", name="b")
    layers = read_labels([tmp_path / "a.tif", tmp_path / "b.png"])
    assert [k["name"] for _, k, _ in layers] == ["a", "b"]
    with pytest.raises(ReadError, match="does not exist"):
        read_labels(tmp_path / "nope.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(ReadError, match="cannot read"):
        read_labels(tmp_path / "broken.tif")


def test_palette_and_grey_alpha_pngs(tmp_path):
    """Label masks saved in indexed colour are their indices (they opened as an RGB image, and evaluate
    refused them); a grey PNG with alpha is its grey plane (it opened as a volume of 2-pixel-wide planes)."""
    from PIL import Image

    from napari_unet_loop.io.images import read_label_file

    lab = labels2d().astype(np.uint8)
    pal = Image.fromarray(lab, mode="P")
    pal.putpalette([(i * 37) % 256 for i in range(768)])
    pal.save(tmp_path / "mask.png")
    data, _, kind = read_labels(tmp_path / "mask.png")[0]
    assert kind == "labels"
    np.testing.assert_array_equal(data, lab)
    np.testing.assert_array_equal(read_label_file(tmp_path / "mask.png"), lab)
    photo = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    picture = Image.fromarray(photo, mode="P")  # noise in indexed colour: a picture
    picture.putpalette([v for i in range(256) for v in (i, i, i)])
    picture.save(tmp_path / "photo.png")
    data, kwargs, kind = read_labels(tmp_path / "photo.png")[0]
    assert kind == "image" and data.shape == (30, 40, 3) and kwargs["rgb"] is True
    grey = np.zeros((20, 30, 2), np.uint8)
    grey[..., 1] = 255
    grey[5:10, 5:10, 0] = 200
    Image.fromarray(grey, mode="LA").save(tmp_path / "la.png")
    data, kwargs, kind = read_labels(tmp_path / "la.png")[0]
    assert data.shape == (20, 30) and data[6, 6] == 200


def test_a_damaged_png_and_a_multi_series_tiff_are_said_plainly(tmp_path):
    (tmp_path / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ReadError) as info:
        read_labels(tmp_path / "damaged.png")
    assert "pip install" not in str(info.value) and "damaged" in str(info.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ReadError, match="empty"):
        read_labels(tmp_path / "empty.png")
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(np.zeros((40, 50), np.float32))
        tif.write(np.zeros((60, 70), np.float32))
    with pytest.warns(UserWarning, match="holds 2 image series; only the first"):
        read_labels(tmp_path / "two.tif")


def test_non_integer_tiff_and_rgb_png_open_as_images(tmp_path):
    import imageio.v3 as iio

    tifffile.imwrite(tmp_path / "float.tif", np.random.default_rng(0).random((10, 12)).astype(np.float32))
    data, kwargs, kind = read_labels(tmp_path / "float.tif")[0]
    assert kind == "image" and data.dtype == np.float32
    iio.imwrite(tmp_path / "rgb.png", np.zeros((10, 12, 3), np.uint8))
    data, kwargs, kind = read_labels(tmp_path / "rgb.png")[0]
    assert kind == "image" and kwargs["rgb"] is True


def test_planar_rgb_tiff_opens_in_colour_and_a_yx1_mask_as_2d_labels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (3, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate", metadata=None)
    data, kwargs, kind = read_labels(tmp_path / "planar.tif")[0]
    assert kind == "image" and kwargs["rgb"] is True and data.shape == (16, 20, 3)
    assert np.array_equal(data, np.moveaxis(rgb, 0, -1))
    tifffile.imwrite(tmp_path / "mask.tif", labels2d()[..., None])  # (Y, X, 1): tifffile says YXQ
    data, kwargs, kind = read_labels(tmp_path / "mask.tif")[0]
    assert kind == "labels" and np.array_equal(data, labels2d())


@pytest.mark.parametrize("planes", [3, 4])
def test_a_stack_of_three_or_four_label_planes_opens_as_zyx_labels(tmp_path, planes):
    """tifffile stores a (3 | 4, Y, X) array unnamed as planar samples (SYX): it opened as an image, even forced."""
    from skimage.io import imsave

    lab = np.stack([labels2d()] * planes).astype(np.uint16)
    lab[-1, :4, :4] = 9
    tifffile.imwrite(tmp_path / "tf.tif", lab)
    imsave(tmp_path / "sk.tif", lab, check_contrast=False)
    for name in ("tf.tif", "sk.tif"):
        for force in (False, True):
            data, kwargs, kind = read_labels(tmp_path / name, force=force)[0]
            assert kind == "labels" and kwargs["metadata"]["axes"] == "ZYX"
            assert np.array_equal(data, lab)


def test_foreign_imagej_tiff_gets_its_pixel_size(tmp_path):
    lab = labels2d()
    tifffile.imwrite(
        tmp_path / "fiji.tif",
        lab,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"axes": "YX", "unit": "micron"},
    )
    data, kwargs, kind = read_labels(tmp_path / "fiji.tif")[0]
    assert kind == "labels"
    np.testing.assert_array_equal(data, lab)
    np.testing.assert_allclose(kwargs["scale"], [0.65, 0.65], rtol=1e-6)
    assert kwargs["metadata"]["units"] == ["micrometer", "micrometer"]
    assert kwargs["name"] == "fiji"


def test_foreign_ome_zarr_labels(tmp_path):
    import zarr
    from ome_zarr.writer import write_image, write_labels

    img = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    lab = labels2d()
    root = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    write_image(img, root, axes="yx", scale_factors=())
    write_labels(lab, root, name="cells", axes="yx", scaler=None, scale_factors=())
    layers = read_labels(tmp_path / "foreign.zarr")
    assert [k for _, _, k in layers] == ["image", "labels"]
    np.testing.assert_array_equal(np.asarray(layers[0][0]), img)
    np.testing.assert_array_equal(layers[1][0], lab)
    assert layers[1][1]["name"] == "cells"


def test_fiji_made_rois_without_sidecar(tmp_path):
    from roifile import ROI_TYPE, ImagejRoi, roiwrite

    rect = ImagejRoi.frompoints(np.array([[3, 2], [10, 2], [10, 8], [3, 8]]), name="first")
    rect.roitype = ROI_TYPE.RECT
    rect.left, rect.top, rect.right, rect.bottom = 3, 2, 10, 8
    rect.integer_coordinates = None
    rect.n_coordinates = 0
    free = ImagejRoi.frompoints(np.array([[20.0, 20.0], [30.0, 20.0], [30.0, 26.0], [20.0, 26.0]]), name="x")
    line = ImagejRoi.frompoints(np.array([[0, 0], [5, 5]]), name="a line")
    line.roitype = ROI_TYPE.LINE
    roiwrite(tmp_path / "fiji.zip", [rect, free, line], mode="w")
    assert napari_get_reader(str(tmp_path / "fiji.zip")) is read_labels
    data, kwargs, kind = read_labels(tmp_path / "fiji.zip")[0]
    assert kind == "labels" and "scale" not in kwargs
    assert data.shape == (27, 31)  # extent of the ROIs (bottom, right) when there is no sidecar
    assert (data == 1).sum() == 7 * 6 and (data[2:8, 3:10] == 1).all()
    assert (data == 2).sum() == 10 * 6 and (data[20:26, 20:30] == 2).all()
    notes = " ".join(kwargs["metadata"]["notes"])
    assert "ROI extents" in notes and "1 ROI(s) without an area" in notes


def test_nested_rois_keep_the_inner_object(tmp_path):
    from roifile import ImagejRoi

    outer = ImagejRoi.frompoints(np.array([[0, 0], [20, 0], [20, 20], [0, 20]]), name="1")
    inner = ImagejRoi.frompoints(np.array([[5, 5], [10, 5], [10, 10], [5, 10]]), name="2")
    labels, skipped = rois_to_labels([inner, outer], (20, 20))
    assert skipped == 0
    assert (labels == 2).sum() == 25 and (labels == 1).sum() == 400 - 25


def test_empty_roi_zip_without_sidecar_is_refused(tmp_path):
    from roifile import roiwrite

    roiwrite(tmp_path / "empty.zip", [], mode="w")
    assert napari_get_reader(str(tmp_path / "empty.zip")) is None
    with pytest.raises(ReadError, match="no ROIs"):
        read_labels(tmp_path / "empty.zip")


def test_reader_kwargs_carry_provenance_for_reexport(tmp_path):
    lab = labels2d()
    prov = {"model_name": "m1", "tile_size": [256, 256]}
    export_labels(lab, tmp_path, "tif", name="cells", provenance=prov)
    _, kwargs, _ = read_labels(tmp_path / "cells.tif")[0]
    assert kwargs["metadata"]["napari_unet_loop"]["model_name"] == "m1"
    assert kwargs["metadata"]["axes"] == "YX"


def test_composite_roi_with_a_hole(tmp_path):
    from roifile import ROI_TYPE, ImagejRoi, roiread, roiwrite

    path = [0, 2, 2, 1, 22, 2, 1, 22, 22, 1, 2, 22, 4, 0, 7, 7, 1, 12, 7, 1, 12, 12, 1, 7, 12, 4]
    roi = ImagejRoi()
    roi.roitype = ROI_TYPE.RECT
    roi.name = "5"
    roi.left, roi.top, roi.right, roi.bottom = 2, 2, 22, 22
    roi.multi_coordinates = np.array(path, np.float32)
    roi.shape_roi_size = len(path)
    roiwrite(tmp_path / "shape.zip", [roi], mode="w")
    assert roiread(tmp_path / "shape.zip")[0].composite
    data = read_labels(tmp_path / "shape.zip")[0][0]
    assert data.shape == (22, 22)
    assert (data == 5).sum() == 400 - 25
    assert not data[7:12, 7:12].any() and (data[2:7, 2:22] == 5).all()


def test_integer_microscopy_images_open_as_images_not_labels(tmp_path):
    import imageio.v3 as iio

    from napari_unet_loop.sample_data import SAMPLES, sample_path

    for name in SAMPLES:
        image = iio.imread(sample_path(name))
        grey = image[..., :3].mean(-1) if image.ndim == 3 else image.astype(float)
        tifffile.imwrite(tmp_path / f"{name}.tif", (grey * 200).astype(np.uint16))
        iio.imwrite(tmp_path / f"{name}.png", grey.astype(np.uint8))
        tifffile.imwrite(tmp_path / f"{name}_masks.tif", iio.imread(sample_path(name, labels=True)))
        for suffix in (".tif", ".png"):
            assert read_labels(tmp_path / f"{name}{suffix}")[0][2] == "image", (name, suffix)
        data, _, kind = read_labels(tmp_path / f"{name}_masks.tif")[0]
        assert kind == "labels" and data.max() > 10
    binary = (labels2d() > 0).astype(np.uint8) * 255
    iio.imwrite(tmp_path / "mask.png", binary)
    assert read_labels(tmp_path / "mask.png")[0][2] == "labels"


def test_tiling_of_small_cells_opens_as_labels_and_blank_first_planes_are_skipped(tmp_path):
    yy, xx = np.mgrid[:64, :64]
    tiles = ((yy // 8) * 8 + xx // 8 + 1).astype(np.uint16)  # 64 touching cells of 8 x 8
    tifffile.imwrite(tmp_path / "tiles.tif", tiles)
    assert read_labels(tmp_path / "tiles.tif")[0][2] == "labels"
    noisy = np.random.default_rng(0).integers(1, 4000, (5, 64, 64)).astype(np.uint16)
    noisy[0] = 0  # an intensity stack that starts with a blank plane
    tifffile.imwrite(tmp_path / "stack.tif", noisy)
    assert read_labels(tmp_path / "stack.tif")[0][2] == "image"
    assert read_labels(tmp_path / "stack.tif", force=True)[0][2] == "labels"  # the export command insists


@pytest.mark.parametrize("shape", [(120, 160), (7, 120, 160)])
def test_lazy_labels_of_one_level_open_as_two_for_napari(tmp_path, monkeypatch, shape):
    """napari takes a list of one array for that array's levels: a store of one level gets a lazy second."""
    from napari.layers import Labels

    from napari_unet_loop.io import readers
    from napari_unet_loop.io.chunked import LabelsStore

    full = np.zeros(shape, np.uint32)
    full[..., 20:50, 30:70] = 1
    store = LabelsStore.create(tmp_path / "one.zarr", job={"input": "x"}, shape=shape, block=64, region=0, n_blocks=0)
    if len(shape) == 3:
        for z, plane in enumerate(full):
            store.write_plane(z, plane, final=True, record={})
    else:
        store.write_core((0, 0), full, 0)
    monkeypatch.setattr(readers, "LAZY_LABELS_BYTES", 0)
    ((data, kwargs, kind),) = readers.read_ome_zarr(store.finish({}))
    assert kind == "labels" and kwargs["multiscale"] and len(data) == 2
    layer = Labels(data, **kwargs)
    assert layer.ndim == len(shape) and layer.level_shapes[1].tolist() == [*shape[:-2], 60, 80]
    np.testing.assert_array_equal(np.asarray(layer.data[0]), full)
