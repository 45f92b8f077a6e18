"""Export of label masks and measurements: round trips, bad input, atomic writes."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet_loop.io import export as ex
from napari_unet_loop.io.export import ExportError, export_labels, outline_polygons
from napari_unet_loop.io.labels import write_tiff
from napari_unet_loop.io.readers import read_labels, rois_to_labels


def blobs(shape=(64, 80), seed=0) -> np.ndarray:
    """Hole-free objects: rectangles, discs, a diagonal (8-connected) pair, touching objects."""
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab[2:10, 3:15] = 1
    lab[10:18, 3:15] = 2  # touches 1
    lab[((yy - 30) ** 2 + (xx - 40) ** 2) <= 49] = 3
    lab[40, 5] = 4
    lab[41, 6] = 4  # diagonal neighbours: one 8-connected object
    lab[50:60, 60:62] = 5
    lab[45:47, 20:70] = 7  # id 6 unused
    rng = np.random.default_rng(seed)
    lab[rng.integers(20, 40), 70] = 9
    return lab


def stack(n=3, shape=(64, 80)) -> np.ndarray:
    """A Z stack of shifted blobs."""
    base = blobs(shape)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def read_one(path):
    layers = read_labels(path)
    labels = [layer for layer in layers if layer[2] == "labels"]
    assert len(labels) == 1
    return labels[0]


# --------------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------------


def test_tif_roundtrip_imagej_pixel_size(tmp_path):
    lab = blobs()
    res = export_labels(lab, tmp_path, "tif", name="cells", scale=(0.5, 0.25), units="um")
    path = tmp_path / "cells.tif"
    assert res.paths == [path] and res.sidecar == tmp_path / "cells.tif.json"
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.pages[0].dtype == np.uint16
        assert tif.imagej_metadata["unit"] == "um"
        x_num, x_den = tif.pages[0].tags["XResolution"].value
        y_num, y_den = tif.pages[0].tags["YResolution"].value
        assert x_num / x_den == pytest.approx(4.0) and y_num / y_den == pytest.approx(2.0)
    data, kwargs, kind = read_one(path)
    assert kind == "labels"
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [0.5, 0.25]
    assert kwargs["metadata"]["units"] == ["micrometer", "micrometer"]


def test_tif_pixel_size_without_sidecar(tmp_path):
    lab = blobs()
    export_labels(lab, tmp_path, "tif", scale=(0.3, 0.3), units="um", sidecar=False)
    assert listing(tmp_path) == ["labels.tif"]
    data, kwargs, _ = read_one(tmp_path / "labels.tif")
    np.testing.assert_array_equal(data, lab)
    np.testing.assert_allclose(kwargs["scale"], [0.3, 0.3], rtol=1e-7)


def test_tif_stacks_keep_spacing_and_interval(tmp_path):
    zyx = stack()
    export_labels(zyx, tmp_path, "tif", name="z", axes="ZYX", scale=(2.0, 0.5, 0.5), units="um")
    with tifffile.TiffFile(tmp_path / "z.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert tif.imagej_metadata["spacing"] == 2.0
    data, kwargs, _ = read_one(tmp_path / "z.tif")
    np.testing.assert_array_equal(data, zyx)
    assert kwargs["scale"] == [2.0, 0.5, 0.5] and kwargs["metadata"]["axes"] == "ZYX"

    tzyx = np.stack([zyx, zyx[::-1]])
    export_labels(tzyx, tmp_path, "tif", name="tz", axes="TZYX", scale=(5.0, 2.0, 0.5, 0.5), units="um")
    with tifffile.TiffFile(tmp_path / "tz.tif") as tif:
        assert tif.imagej_metadata["finterval"] == 5.0
    data, kwargs, _ = read_one(tmp_path / "tz.tif")
    np.testing.assert_array_equal(data, tzyx)
    assert kwargs["scale"] == [5.0, 2.0, 0.5, 0.5] and kwargs["metadata"]["axes"] == "TZYX"


def test_tif_uint32_above_65535_labels(tmp_path):
    lab = blobs().astype(np.int64)
    lab[lab == 9] = 70_000
    res = export_labels(lab, tmp_path, "tif", scale=(0.5, 0.5), units="um", sidecar=False)
    assert any("uint32" in n for n in res.notes)
    with tifffile.TiffFile(res.paths[0]) as tif:
        assert not tif.is_imagej
        assert tif.pages[0].dtype == np.uint32
        assert tif.pages[0].tags["ResolutionUnit"].value == 3  # centimetre
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(2e4)  # 0.5 um pixels = 20,000 per cm
    data, kwargs, _ = read_one(res.paths[0])
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [0.5, 0.5]


def test_write_tiff_keeps_its_signature(tmp_path):
    lab = blobs()
    out = write_tiff(tmp_path / "a.tif", lab, (0.5, 0.5), "YX", False)
    assert out == tmp_path / "a.tif"
    with pytest.raises(FileExistsError):
        write_tiff(tmp_path / "a.tif", lab)
    write_tiff(tmp_path / "a.tif", lab, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), lab)
    mode = os.stat(out).st_mode & 0o777
    assert mode & 0o044, "exports are readable by others (not the 0600 of a temp file)"


# --------------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------------


def test_png_roundtrip_2d_scale_from_sidecar(tmp_path):
    lab = blobs()
    res = export_labels(lab, tmp_path, "png", name="cells", scale=(0.5, 0.5), units="um")
    assert listing(tmp_path) == ["cells.png", "cells.png.json"]
    assert any("sidecar" in n for n in res.notes)
    data, kwargs, kind = read_one(tmp_path / "cells.png")
    assert kind == "labels" and data.dtype == np.uint16
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [0.5, 0.5]


def test_png_stack_writes_one_file_per_plane(tmp_path):
    zyx = stack()
    res = export_labels(zyx, tmp_path, "png", name="s", axes="ZYX", scale=(2, 0.5, 0.5))
    assert [p.name for p in res.paths] == ["s_z000.png", "s_z001.png", "s_z002.png"]
    for z, p in enumerate(res.paths):
        data, kwargs, _ = read_one(p)
        np.testing.assert_array_equal(data, zyx[z])
        assert kwargs["scale"] == [0.5, 0.5]
    tzyx = np.stack([zyx[:2], zyx[1:]])
    res = export_labels(tzyx, tmp_path, "png", name="tz", axes="TZYX")
    names = ["tz_t000_z000.png", "tz_t000_z001.png", "tz_t001_z000.png", "tz_t001_z001.png"]
    assert [p.name for p in res.paths] == names
    np.testing.assert_array_equal(read_one(res.paths[2])[0], tzyx[1, 0])


def test_png_refuses_3d_data(tmp_path):
    with pytest.raises(ExportError, match="PNG holds one 2D plane"):
        export_labels(stack(), tmp_path, "png")
    with pytest.raises(ExportError, match="2D"):
        ex.write_png(tmp_path / "x.png", stack())
    assert listing(tmp_path) == []


def test_png_refuses_more_than_65535_labels(tmp_path):
    lab = blobs().astype(np.int64)
    lab[lab == 9] = 65_536
    with pytest.raises(ExportError, match="65,535"):
        export_labels(lab, tmp_path, "png")
    with pytest.raises(ExportError, match="65,535"):
        ex.write_png(tmp_path / "x.png", lab)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# OME-Zarr
# --------------------------------------------------------------------------------------------------


def test_zarr_roundtrip_image_and_labels_validated_by_ome_zarr(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    lab = np.zeros((256, 200), np.int32)
    lab[: blobs().shape[0], : blobs().shape[1]] = blobs()
    lab[200:230, 150:190] = 11
    img = np.random.default_rng(0).random(lab.shape).astype(np.float32)
    res = export_labels(lab, tmp_path, "zarr", name="nuclei", image=img, scale=(0.5, 0.5), units="um")
    path = tmp_path / "nuclei.zarr"
    assert res.paths == [path] and listing(tmp_path) == ["nuclei.zarr", "nuclei.zarr.json"]

    nodes = list(Reader(parse_url(str(path)))())
    images = [n for n in nodes if n.load(Multiscales) and not n.load(Label)]
    labels = [n for n in nodes if n.load(Label)]
    assert len(images) == 1 and len(labels) == 1
    assert len(images[0].data) > 1 and len(labels[0].data) > 1, "multiscale pyramids"
    np.testing.assert_array_equal(np.asarray(images[0].data[0]), img)
    np.testing.assert_array_equal(np.asarray(labels[0].data[0]), lab)
    assert labels[0].metadata["name"] == "nuclei"

    layers = read_labels(path)
    assert [k for _, _, k in layers] == ["image", "labels"]
    (idata, ikw, _), (ldata, lkw, _) = layers
    assert ikw["multiscale"] and ikw["scale"] == [0.5, 0.5]
    np.testing.assert_array_equal(np.asarray(idata[0]), img)
    assert isinstance(ldata, np.ndarray)
    np.testing.assert_array_equal(ldata, lab)
    assert lkw["scale"] == [0.5, 0.5] and lkw["name"] == "nuclei"


def test_zarr_without_image_uses_placeholder(tmp_path):
    zyx = stack()
    res = export_labels(zyx, tmp_path, "zarr", axes="ZYX", scale=(2.0, 0.5, 0.5), units="um")
    assert any("no image given" in n for n in res.notes)
    layers = read_labels(res.paths[0])
    assert [k for _, _, k in layers] == ["labels"], "the placeholder image is not reopened"
    data, kwargs, _ = layers[0]
    np.testing.assert_array_equal(data, zyx)
    assert kwargs["scale"] == [2.0, 0.5, 0.5] and kwargs["metadata"]["axes"] == "ZYX"


def test_zarr_ngff_05_and_rgb_image(tmp_path):
    lab = blobs()
    rgb = np.random.default_rng(1).integers(0, 255, (*lab.shape, 3), dtype=np.uint8)
    res = ex.write_ome_zarr(tmp_path / "v5.zarr", lab, rgb, ngff_version="0.5")
    assert (res.paths[0] / "zarr.json").is_file()
    layers = read_labels(res.paths[0])
    (idata, ikw, _), (ldata, _, _) = layers
    assert ikw.get("rgb") is True
    np.testing.assert_array_equal(np.asarray(idata), rgb)
    np.testing.assert_array_equal(ldata, lab)


def test_zarr_refuses_mismatched_image(tmp_path):
    with pytest.raises(ExportError, match="does not match"):
        export_labels(blobs(), tmp_path, "zarr", image=np.zeros((10, 10)))
    assert listing(tmp_path) == []


def test_zarr_overwrite_replaces_only_when_asked(tmp_path):
    a, b = blobs(), blobs()[::-1].copy()
    export_labels(a, tmp_path, "zarr", name="x")
    with pytest.raises(FileExistsError, match="already exist"):
        export_labels(b, tmp_path, "zarr", name="x")
    np.testing.assert_array_equal(read_one(tmp_path / "x.zarr")[0], a)
    export_labels(b, tmp_path, "zarr", name="x", overwrite=True)
    np.testing.assert_array_equal(read_one(tmp_path / "x.zarr")[0], b)
    assert listing(tmp_path) == ["x.zarr", "x.zarr.json"], "no temporary or old folders left"


def test_a_zarr_store_this_plugin_did_not_write_is_never_replaced(tmp_path):
    """The user's own OME-Zarr image chosen as the target (or as the export folder): refused, left as it was."""
    import zarr

    image = tmp_path / "sample.ome.zarr"
    zarr.open_group(str(image), mode="w").attrs["multiscales"] = [{"name": "mine"}]
    before = sorted(p.name for p in image.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="did not write .* never replaced"):
            export_labels(blobs(), image, "zarr", name="cells", overwrite=overwrite)
    assert sorted(p.name for p in image.rglob("*")) == before
    assert dict(zarr.open_group(str(image), mode="r").attrs) == {"multiscales": [{"name": "mine"}]}
    export_labels(blobs(), tmp_path / "mine.zarr", "zarr")  # one of its own is replaced when asked
    export_labels(blobs()[::-1].copy(), tmp_path / "mine.zarr", "zarr", overwrite=True)
    np.testing.assert_array_equal(read_one(tmp_path / "mine.zarr")[0], blobs()[::-1])


def test_a_folder_named_zarr_that_is_no_store_is_written_into(tmp_path):
    """A folder of files that happens to end in .zarr is a folder: the store goes inside, its files stay."""
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for fmt in ("tif", "zarr"):
        export_labels(blobs(), folder, fmt, name="cells", overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(read_one(folder / "cells.zarr")[0], blobs())
    assert (folder / "cells.tif").is_file()


# --------------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------------


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_columns_calibrated_with_intensities(tmp_path):
    lab = np.zeros((20, 30), np.int32)
    lab[2:6, 3:11] = 1  # 4 x 8 pixels
    lab[10:15, 20:25] = 2
    img = np.zeros(lab.shape, np.float32)
    img[2:6, 3:11] = 10.0
    img[3, 4] = 50.0
    res = export_labels(lab, tmp_path, "csv", image=img, scale=(0.5, 0.25), units="um")
    assert not res.notes
    rows = read_csv(res.paths[0])
    assert list(rows[0]) == [
        "label",
        "area",
        "centroid_y",
        "centroid_x",
        "bbox_y0",
        "bbox_x0",
        "bbox_y1",
        "bbox_x1",
        "equivalent_diameter",
        "eccentricity",
        "solidity",
        "mean_intensity",
        "max_intensity",
    ]
    r = rows[0]
    assert int(r["label"]) == 1
    assert float(r["area"]) == pytest.approx(32 * 0.5 * 0.25)
    assert float(r["centroid_y"]) == pytest.approx(3.5 * 0.5)
    assert float(r["centroid_x"]) == pytest.approx(6.5 * 0.25)
    assert (int(r["bbox_y0"]), int(r["bbox_x0"]), int(r["bbox_y1"]), int(r["bbox_x1"])) == (2, 3, 6, 11)
    assert float(r["equivalent_diameter"]) == pytest.approx(2 * np.sqrt(4.0 / np.pi))
    # 2 x 2 um, but pixel-centre moments differ:
    # var_y = (4**2 - 1) / 12 * 0.5**2, var_x = (8**2 - 1) / 12 * 0.25**2
    assert float(r["eccentricity"]) == pytest.approx(np.sqrt(1 - (15 / 12 * 0.25) / (63 / 12 * 0.0625)))
    assert float(r["solidity"]) == pytest.approx(1.0)
    assert float(r["mean_intensity"]) == pytest.approx((31 * 10 + 50) / 32)
    assert float(r["max_intensity"]) == 50.0
    side = json.loads(res.sidecar.read_text())
    assert side["columns"]["area"] == "um^2" and side["columns"]["centroid_x"] == "um"
    assert side["columns"]["bbox_x0"] == "px"


def test_csv_without_image_leaves_out_intensities_and_says_so(tmp_path):
    res = export_labels(blobs(), tmp_path, "csv")
    assert any("no image given" in n and "intensity" in n for n in res.notes)
    rows = read_csv(res.paths[0])
    assert "mean_intensity" not in rows[0] and "max_intensity" not in rows[0]
    assert {int(r["label"]) for r in rows} == {1, 2, 3, 4, 5, 7, 9}
    assert "no image given" in " ".join(json.loads(res.sidecar.read_text())["notes"])
    table = ex.measure_table(blobs())
    assert any("intensity" in n for n in table.notes)


def test_csv_stack_has_plane_index_columns(tmp_path):
    zyx = stack(3)
    tzyx = np.stack([zyx, zyx])
    img = np.ones(tzyx.shape, np.float32)
    res = export_labels(tzyx, tmp_path, "csv", axes="TZYX", image=img)
    rows = read_csv(res.paths[0])
    assert list(rows[0])[:3] == ["label", "t", "z"]
    n_per_plane = len(np.unique(zyx[0])) - 1
    assert len(rows) == 6 * n_per_plane
    assert {(int(r["t"]), int(r["z"])) for r in rows} == {(t, z) for t in range(2) for z in range(3)}
    assert all(float(r["mean_intensity"]) == 1.0 for r in rows)


def test_csv_refuses_mismatched_image(tmp_path):
    with pytest.raises(ExportError, match="does not match"):
        export_labels(blobs(), tmp_path, "csv", image=np.zeros((5, 5)))
    assert listing(tmp_path) == []


def test_csv_of_empty_labels_has_header_only(tmp_path):
    res = export_labels(np.zeros((10, 10), np.uint16), tmp_path, "csv")
    assert read_csv(res.paths[0]) == []
    assert any("no objects" in n for n in res.notes)


# --------------------------------------------------------------------------------------------------
# ImageJ ROIs
# --------------------------------------------------------------------------------------------------


def test_roi_zip_reads_back_with_roifile(tmp_path):
    from roifile import ROI_TYPE, roiread

    lab = blobs()
    res = export_labels(lab, tmp_path, "roi", name="cells", scale=(0.5, 0.5))
    rois = roiread(res.paths[0])
    assert sorted(r.name for r in rois) == sorted(str(i) for i in (1, 2, 3, 4, 5, 7, 9))
    assert all(r.roitype == ROI_TYPE.TRACED for r in rois)
    assert {r.properties["label"] for r in rois} == {1, 2, 3, 4, 5, 7, 9}
    rect = next(r for r in rois if r.name == "1")
    assert (rect.left, rect.top, rect.right, rect.bottom) == (3, 2, 15, 10)
    filled, skipped = rois_to_labels(rois, lab.shape)
    assert skipped == 0
    np.testing.assert_array_equal(filled, lab)
    data, kwargs, _ = read_one(res.paths[0])
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [0.5, 0.5]


def test_roi_stack_positions(tmp_path):
    from roifile import roiread

    zyx = stack(3)
    res = export_labels(zyx, tmp_path, "roi", name="z", axes="ZYX")
    rois = roiread(res.paths[0])
    assert {r.position for r in rois} == {1, 2, 3}
    assert "1-z2" in {r.name for r in rois}
    np.testing.assert_array_equal(read_one(res.paths[0])[0], zyx)

    tzyx = np.stack([zyx, zyx[::-1]])
    res = export_labels(tzyx, tmp_path, "roi", name="tz", axes="TZYX")
    rois = roiread(res.paths[0])
    assert {(r.t_position, r.z_position) for r in rois} == {(t, z) for t in (1, 2) for z in (1, 2, 3)}
    np.testing.assert_array_equal(read_one(res.paths[0])[0], tzyx)


def test_roi_objects_with_holes_are_noted(tmp_path):
    lab = np.zeros((20, 20), np.uint16)
    lab[2:12, 2:12] = 1
    lab[5:8, 5:8] = 0  # a hole
    lab[15:18, 2:4] = 2
    lab[15:18, 8:10] = 2  # two pieces
    res = export_labels(lab, tmp_path, "roi")
    assert any("2 object outline(s) have holes or several pieces" in n for n in res.notes)
    data = read_one(res.paths[0])[0]
    assert (data[5:8, 5:8] == 1).all(), "the hole is filled"
    assert (data == 2).sum() == 6, "the larger piece only (both are 6 px; one is kept)"


def test_outline_polygons_are_exact_for_random_shapes():
    from scipy import ndimage as ndi
    from skimage.draw import polygon

    rng = np.random.default_rng(3)
    for _ in range(40):
        mask = ndi.binary_opening(rng.random((16, 16)) > 0.4)
        comps, n = ndi.label(mask, structure=np.ones((3, 3)))
        for i in range(1, n + 1):
            obj = comps == i
            loops = outline_polygons(obj)
            outers = [v for outer, v in loops if outer]
            assert len(outers) == 1
            rr, cc = polygon(outers[0][:, 0] - 0.5, outers[0][:, 1] - 0.5, obj.shape)
            filled = np.zeros_like(obj)
            filled[rr, cc] = True
            np.testing.assert_array_equal(filled, ndi.binary_fill_holes(obj))


def test_roi_of_empty_labels_reopens_from_sidecar(tmp_path):
    res = export_labels(np.zeros((12, 14), np.uint16), tmp_path, "roi")
    assert any("empty" in n for n in res.notes)
    data, _, _ = read_one(res.paths[0])
    assert data.shape == (12, 14) and not data.any()


# --------------------------------------------------------------------------------------------------
# bad input, existing files, permissions, full disk
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_negative_labels_refused(tmp_path, fmt):
    lab = blobs()
    lab[0, 0] = -1
    with pytest.raises(ExportError, match="negative"):
        export_labels(lab, tmp_path, fmt)
    assert listing(tmp_path) == []


def test_non_integer_labels_refused(tmp_path):
    with pytest.raises(ExportError, match="non-integer"):
        export_labels(np.full((4, 4), 0.5), tmp_path, "tif")
    with pytest.raises(ExportError, match="axes"):
        export_labels(blobs(), tmp_path, "tif", axes="ZYX")
    with pytest.raises(ExportError, match="unknown export format"):
        export_labels(blobs(), tmp_path, "jpeg")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_existing_target_not_overwritten_unless_asked(tmp_path, fmt):
    a, b = blobs(), blobs()[:, ::-1].copy()
    first = export_labels(a, tmp_path, fmt, name="x")
    before = {p: (p.stat().st_mtime_ns, p.is_file() and p.read_bytes()) for p in first.all_paths}
    with pytest.raises(FileExistsError, match="overwrit"):
        export_labels(b, tmp_path, fmt, name="x")
    assert {p: (p.stat().st_mtime_ns, p.is_file() and p.read_bytes()) for p in first.all_paths} == before
    second = export_labels(b, tmp_path, fmt, name="x", overwrite=True)
    assert second.paths == first.paths
    if fmt != "csv":
        np.testing.assert_array_equal(read_one(second.paths[0])[0], b)
    assert not [n for n in listing(tmp_path) if n.startswith(".")], "no temporary files left"


def test_existing_sidecar_alone_blocks_the_export(tmp_path):
    (tmp_path / "labels.tif.json").write_text("{}")
    with pytest.raises(FileExistsError, match="labels.tif.json"):
        export_labels(blobs(), tmp_path, "tif")
    assert listing(tmp_path) == ["labels.tif.json"]


def test_the_record_of_files_deleted_to_be_written_again_is_replaced(tmp_path):
    """A user deleted an export to have it written again (segment --resume): its record alone blocked the write."""
    first = export_labels(blobs(), tmp_path, "tif")
    first.paths[0].unlink()
    again = export_labels(blobs() * 2, tmp_path, "tif")
    assert listing(tmp_path) == ["labels.tif", "labels.tif.json"]
    assert ex.sidecar_matches(again.paths[0]) is True
    (tmp_path / "other.tif.json").write_text('{"files": ["other.tif", "other_z001.tif"]}')
    (tmp_path / "other_z001.tif").write_bytes(b"kept")  # one of its files is still there: not an orphan
    with pytest.raises(FileExistsError, match="other.tif.json"):
        export_labels(blobs(), tmp_path, "tif", name="other")


def test_folder_not_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    for fmt in ex.FORMATS:
        with pytest.raises(PermissionError, match="not writable"):
            export_labels(blobs(), locked, fmt)
    with pytest.raises(PermissionError, match="cannot create folder"):
        export_labels(blobs(), locked / "new" / "deeper", "tif")
    assert listing(locked) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_folder_not_writable_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            export_labels(blobs(), locked, "tif")
    finally:
        locked.chmod(0o700)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_tif_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    real = tifffile.imwrite

    def half_write(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00" + b"\x00" * 100)  # a truncated TIFF
        _disk_full()

    export_labels(blobs(), tmp_path, "tif", name="old")
    old_bytes = (tmp_path / "old.tif").read_bytes()
    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(OSError) as info:
        export_labels(blobs()[::-1], tmp_path, "tif", name="new")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        export_labels(blobs()[::-1], tmp_path, "tif", name="old", overwrite=True)
    assert listing(tmp_path) == ["old.tif", "old.tif.json"]
    assert (tmp_path / "old.tif").read_bytes() == old_bytes
    monkeypatch.setattr(tifffile, "imwrite", real)


def test_disk_full_png_stack_leaves_no_plane(tmp_path, monkeypatch):
    import imageio.v3 as iio

    real = iio.imwrite
    calls = []

    def fail_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"\x89PNG")
            _disk_full()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(iio, "imwrite", fail_second)
    with pytest.raises(OSError):
        export_labels(stack(), tmp_path, "png", axes="ZYX")
    assert listing(tmp_path) == []


def test_a_png_stack_replaced_on_a_disk_that_fills_at_a_flush_keeps_every_old_plane(tmp_path, monkeypatch):
    """The disk fills when the second plane is flushed (as on network and quota file systems): no plane is
    renamed, so the stack is not a mix of old and new planes."""
    import imageio.v3 as iio

    from napari_unet_loop.core import atomic

    old = stack()
    export_labels(old, tmp_path, "png", name="c", axes="ZYX")
    real, flushes = atomic._fsync_file, []

    def fail_second(path):
        flushes.append(path)
        if len(flushes) == 2:
            _disk_full()
        return real(path)

    monkeypatch.setattr(atomic, "_fsync_file", fail_second)
    with pytest.raises(OSError):
        export_labels(old[::-1].copy() + 1, tmp_path, "png", name="c", axes="ZYX", overwrite=True)
    planes = sorted(tmp_path.glob("c_z*.png"))
    assert len(planes) == old.shape[0]
    for z, f in enumerate(planes):
        np.testing.assert_array_equal(iio.imread(f), old[z])


def test_disk_full_zarr_leaves_no_folder_and_keeps_the_old_store(tmp_path, monkeypatch):
    from ome_zarr import writer as oz_writer

    export_labels(blobs(), tmp_path, "zarr", name="old")

    def image_then_full(*args, **kwargs):
        _disk_full()

    monkeypatch.setattr(oz_writer, "write_labels", image_then_full)
    with pytest.raises(OSError):
        export_labels(blobs(), tmp_path, "zarr", name="new")
    with pytest.raises(OSError):
        export_labels(blobs()[::-1], tmp_path, "zarr", name="old", overwrite=True)
    assert listing(tmp_path) == ["old.zarr", "old.zarr.json"]
    monkeypatch.undo()
    np.testing.assert_array_equal(read_one(tmp_path / "old.zarr")[0], blobs())


@pytest.mark.parametrize(("fmt", "target"), [("csv", "csv.writer"), ("roi", "roifile.roiwrite")])
def test_disk_full_csv_and_roi(tmp_path, monkeypatch, fmt, target):
    module, attr = target.split(".")
    mod = __import__(module)

    def partial(*args, **kwargs):
        _disk_full()

    monkeypatch.setattr(mod, attr, partial)
    with pytest.raises(OSError):
        export_labels(blobs(), tmp_path, fmt)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# sidecar, targets
# --------------------------------------------------------------------------------------------------


def test_sidecar_holds_provenance(tmp_path):
    prov = {
        "model_name": "dsb2018-nuclei",
        "model_card": {"description": "U-Net", "trained_on": "DSB2018"},
        "thresholds": {"foreground": 0.5, "seed": 0.8},
        "tile_size": (256, 256),
        "array": np.float32(0.25),
    }
    res = export_labels(blobs(), tmp_path, "tif", name="c", scale=(0.5, 0.5), units="µm", provenance=prov)
    side = json.loads(res.sidecar.read_text())
    assert side["plugin"] == "napari-unet-loop" and side["plugin_version"]
    assert side["date"].endswith("+00:00")
    assert side["files"] == ["c.tif"] and side["export_format"] == "tif"
    assert side["labels"]["n_objects"] == 7 and side["labels"]["max_label"] == 9
    assert side["scale"] == [0.5, 0.5] and side["units"] == ["micrometer", "micrometer"]
    p = side["provenance"]
    assert p["model_name"] == "dsb2018-nuclei" and p["thresholds"]["seed"] == 0.8
    assert p["tile_size"] == [256, 256] and p["model_card"]["trained_on"] == "DSB2018" and p["array"] == 0.25


def test_write_provenance_alone(tmp_path):
    out = ex.write_provenance(tmp_path / "p.json", {"model_name": "m"})
    rec = json.loads(out.read_text())
    assert rec["model_name"] == "m" and "date" in rec and "plugin_version" in rec


def test_export_target_paths(tmp_path):
    assert ex.export_target(tmp_path, "tif", "a b") == tmp_path / "a b.tif"
    assert ex.export_target(tmp_path / "x.tiff", "tif") == tmp_path / "x.tiff"
    assert ex.export_target(tmp_path / "x.zarr", None) == tmp_path / "x.zarr"
    assert ex.export_target(tmp_path / "out", "roi", "a/b") == tmp_path / "out" / "a_b.zip"
    with pytest.raises(ExportError, match="suffix"):
        ex.export_target(tmp_path / "x.csv", "tif")
    res = export_labels(blobs(), tmp_path / "sub" / "given.tif", None)
    assert res.paths == [tmp_path / "sub" / "given.tif"]


def test_scale_without_unit_is_taken_as_micrometres(tmp_path):
    res = export_labels(blobs(), tmp_path, "tif", scale=(0.5, 0.5))
    assert any("micrometres" in n for n in res.notes)
    with tifffile.TiffFile(res.paths[0]) as tif:
        assert tif.imagej_metadata["unit"] == "um"


@pytest.mark.parametrize(
    "name, plain",
    [
        ("cells labels [1]", "cells_labels_1"),
        ("cells labels (fine-tuned)", "cells_labels_fine-tuned"),
        ("a/b: c?", "a_b_c"),
        ("run.v2", "run.v2"),
        (" [] ", "labels"),
    ],
)
def test_plain_name_for_layer_names(name, plain):
    assert ex.plain_name(name) == plain


def test_existing_target_message_names_no_front_end(tmp_path):
    """The message is neutral: the command line and the dock each name their own way to allow overwriting."""
    export_labels(blobs(), tmp_path, "tif", name="x")
    with pytest.raises(ex.TargetExistsError) as info:
        export_labels(blobs(), tmp_path, "tif", name="x")
    text = str(info.value)
    assert "allow overwriting" in text and "--overwrite" not in text and "overwrite=True" not in text
    assert sorted(p.name for p in info.value.paths) == ["x.tif", "x.tif.json"]
    assert isinstance(info.value, FileExistsError)


def test_edit_summary_counts_objects_by_overlap():
    before = np.zeros((60, 90), np.int32)
    before[5:15, 5:15] = 1  # deleted
    before[5:15, 30:40] = 2  # grown
    before[30:50, 5:25] = 3  # split unevenly
    before[30:40, 50:60] = 4  # renumbered: not an edit of the object
    before[45:55, 70:80] = 5  # untouched
    after = before.copy()
    after[before == 1] = 0
    after[5:18, 30:40] = 2
    after[30:36, 5:25] = 8
    after[before == 4] = 9
    after[20:25, 70:80] = 10  # painted
    s = ex.edit_summary(before, after)
    assert (s["objects_added"], s["objects_removed"], s["objects_reshaped"]) == (2, 1, 2)
    assert s["pixels_changed"] == int((before != after).sum())
    y0, x0, y1, x1 = s["reviewed_box"]
    assert s["reviewed_pixels"] > s["pixels_changed"] and (y0, x0) == (0, 0) and y1 <= 60 and x1 <= 90
    same = ex.edit_summary(before, before)
    assert same["pixels_changed"] == 0 and same["reviewed_box"] is None
    with pytest.raises(ValueError, match="shapes differ"):
        ex.edit_summary(before, before[:10])


@pytest.mark.parametrize("fmt", ["csv", "roi"])
def test_a_huge_valid_id_is_measured_and_traced_without_per_id_tables(tmp_path, fmt):
    """uint32 ids up to 4e9 are valid; find_objects/regionprops would allocate per id up to 3e9 (gigabytes)."""
    import resource

    labels = np.zeros((3, 40, 40), np.uint32)
    labels[:, 5:15, 5:15] = 3_000_000_000
    labels[1:, 20:30, 20:30] = 7
    image = np.full((3, 40, 40), 9, np.uint8)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, hard))  # 3e9 ids of 8-byte slots could not fit
    try:
        res = export_labels(labels, tmp_path, fmt, name="big", image=image, axes="ZYX")
        whole = export_labels(labels, tmp_path / "3d", fmt, name="big", image=image, axes="ZYX", objects_3d=True)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if fmt == "csv":
        rows = list(csv.DictReader(open(res.paths[0])))
        assert [(r["z"], r["label"]) for r in rows] == [("0", "3000000000"), ("1", "7"), ("1", "3000000000")] + [
            ("2", "7"),
            ("2", "3000000000"),
        ]
        assert {r["area"] for r in rows} == {"100.0"}
        rows = list(csv.DictReader(open(whole.paths[0])))
        assert [(r["label"], r["volume"]) for r in rows] == [("7", "200.0"), ("3000000000", "300.0")]
    else:
        from roifile import roiread

        back, _ = rois_to_labels(roiread(res.paths[0]), labels.shape, "ZYX")
        assert sorted(np.unique(back).tolist()) == [0, 7, 3_000_000_000]
        np.testing.assert_array_equal(back, labels)


def test_3d_objects_of_a_colour_stack_are_measured_per_channel(tmp_path):
    labels = np.zeros((2, 20, 20), np.int32)
    labels[:, 5:10, 5:10] = 1
    image = np.zeros((2, 20, 20, 3), np.uint8)
    image[..., 0], image[..., 2] = 90, 30
    res = export_labels(labels, tmp_path, "csv", image=image, axes="ZYX", objects_3d=True)
    (row,) = list(csv.DictReader(open(res.paths[0])))
    assert [float(row[f"mean_intensity_c{c}"]) for c in range(3)] == [90.0, 0.0, 30.0]  # not their mean, 40


def test_replacing_a_png_stack_with_fewer_planes_removes_the_old_extra_planes(tmp_path):
    """Left behind, cells_z003.png of the old stack would be read as a plane of the new one."""
    labels = np.zeros((4, 20, 20), np.int32)
    labels[:, 5:10, 5:10] = 1
    export_labels(labels, tmp_path, "png", name="cells", axes="ZYX")
    (tmp_path / "notes.png").write_bytes(b"the user's own file")
    res = export_labels(labels[:2], tmp_path, "png", name="cells", axes="ZYX", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cells.png.json",
        "cells_z000.png",
        "cells_z001.png",
        "notes.png",
    ]
    assert any("2 file(s)" in n for n in res.notes)
    res = export_labels(labels[0], tmp_path, "png", name="cells", overwrite=True)  # a stack replaced by one plane
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.png", "cells.png.json", "notes.png"]


def test_a_mask_as_the_image_of_an_ome_zarr_is_stored_as_uint8(tmp_path):
    """A boolean image beside the labels stopped the export with skimage's raw 'anti_aliasing must be False'."""
    import zarr

    labels = np.zeros((200, 300), np.int32)
    labels[20:60, 30:90] = 1
    mask = labels > 0
    res = export_labels(labels, tmp_path, "zarr", name="cells", image=mask)
    group = zarr.open_group(str(res.paths[0]), mode="r")
    level0 = np.asarray(group[min(k for k in group.array_keys())])  # s0 or 0, by the OME-Zarr version
    assert level0.dtype == np.uint8 and np.array_equal(level0.astype(bool), mask)


def test_labels_written_as_they_are_are_remembered(tmp_path, monkeypatch):
    """TIFF, PNG and OME-Zarr keep the labels, by the dock's Export or File > Save: a clean quit of napari keeps no
    autosave of labels on disk as they are. A CSV or ROI set does not keep them; a failed write is not remembered."""
    from napari_unet_loop.io import export as export_mod
    from napari_unet_loop.io.writers import write_labels_tif

    monkeypatch.setattr(export_mod, "_WRITTEN", type(export_mod._WRITTEN)())
    labels = [np.zeros((16, 16), np.int32) for _ in range(6)]
    for i, lab in enumerate(labels):
        lab[2:6, 2:6] = i + 1
    for lab, fmt in zip(labels, ["tif", "png", "zarr", "csv", "roi"]):
        export_labels(lab, tmp_path, fmt, name=f"l{fmt}")
    assert [export_mod.written_as_they_are(lab) for lab in labels[:5]] == [True, True, True, False, False]
    (tmp_path / "taken.tif").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        export_labels(labels[5], tmp_path, "tif", name="taken")
    assert not export_mod.written_as_they_are(labels[5])
    write_labels_tif(str(tmp_path / "saved.tif"), labels[5], {"name": "saved", "scale": (1, 1), "metadata": {}})
    assert export_mod.written_as_they_are(labels[5])
    labels[5][0, 0] = 9  # edited after: not on disk as it is
    assert not export_mod.written_as_they_are(labels[5])


def test_labels_count_as_written_only_while_their_file_holds_them(tmp_path, monkeypatch):
    """Exported, edited, exported again over the same file, then undone: the first state is on disk nowhere. A
    deleted file, or one another layer was saved over, no longer counts either."""
    from napari_unet_loop.io import export as export_mod

    monkeypatch.setattr(export_mod, "_WRITTEN", type(export_mod._WRITTEN)())
    first = np.zeros((16, 16), np.int32)
    first[2:6, 2:6] = 1
    second = first.copy()
    second[8:12, 8:12] = 2
    export_labels(first, tmp_path, "tif", name="cells")
    assert export_mod.written_as_they_are(first)
    export_labels(second, tmp_path, "tif", name="cells", overwrite=True)
    assert export_mod.written_as_they_are(second) and not export_mod.written_as_they_are(first)
    store = export_labels(first, tmp_path, "zarr", name="store").paths[0]
    assert export_mod.written_as_they_are(first)
    import shutil

    shutil.rmtree(store)
    assert not export_mod.written_as_they_are(first)
    (tmp_path / "cells.tif").unlink()
    assert not export_mod.written_as_they_are(second)
