"""npe2 writer functions: plain layer data in, files (and a provenance sidecar) out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_unet_loop.io import writers
from napari_unet_loop.io.export import ExportError
from napari_unet_loop.io.readers import read_labels


def labels3d() -> np.ndarray:
    lab = np.zeros((2, 30, 40), np.int32)
    lab[:, 2:8, 3:10] = 1
    lab[1, 12:20, 15:30] = 2
    return lab


def attributes(ndim=2, **extra) -> dict:
    """What napari hands a writer for a Labels layer (its ``_get_state()``), as far as we use it."""
    attrs = {
        "name": "nuclei labels",
        "scale": [1.0] * (ndim - 2) + [0.5, 0.5],
        "translate": [0.0] * ndim,
        "metadata": {
            "napari_unet_loop": {
                "model_name": "dsb2018-nuclei",
                "thresholds": {"probability": 0.5},
                "tile_size": [256, 256],
            }
        },
        "axis_labels": tuple(str(i) for i in range(-ndim, 0)),
        "units": ("micrometer",) * ndim,
        "opacity": 0.7,
    }
    attrs.update(extra)
    return attrs


@pytest.mark.parametrize(
    ("func", "suffix"),
    [
        (writers.write_labels_tif, ".tif"),
        (writers.write_labels_png, ".png"),
        (writers.write_labels_zarr, ".zarr"),
        (writers.write_labels_roi, ".zip"),
    ],
)
def test_single_layer_writers_roundtrip(tmp_path, func, suffix):
    lab = labels3d()[1]
    path = str(tmp_path / f"out{suffix}")
    with pytest.warns(UserWarning) if suffix in (".png", ".zarr", ".zip") else _no_warning():
        written = func(path, lab, attributes())
    assert written == [path, path + ".json"]
    side = json.loads(Path(path + ".json").read_text())
    assert side["provenance"]["model_name"] == "dsb2018-nuclei"
    assert side["provenance"]["thresholds"] == {"probability": 0.5}
    assert side["provenance"]["layer_name"] == "nuclei labels"
    assert side["labels"]["name"] == "nuclei labels"
    data, kwargs, kind = [layer for layer in read_labels(path) if layer[2] == "labels"][0]
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [0.5, 0.5]
    assert kwargs["metadata"]["napari_unet_loop"]["model_name"] == "dsb2018-nuclei"


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error", UserWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_writers_overwrite_after_the_save_dialog_asked(tmp_path):
    path = str(tmp_path / "out.tif")
    lab = labels3d()[1]
    writers.write_labels_tif(path, lab, attributes())
    writers.write_labels_tif(path, lab[::-1].copy(), attributes())
    np.testing.assert_array_equal(read_labels(path)[0][0], lab[::-1])


def test_tif_writer_keeps_stacks_with_axis_labels(tmp_path):
    lab = labels3d()
    attrs = attributes(3, axis_labels=("z", "y", "x"), scale=[2.0, 0.5, 0.5])
    writers.write_labels_tif(str(tmp_path / "s.tif"), lab, attrs)
    data, kwargs, _ = read_labels(tmp_path / "s.tif")[0]
    np.testing.assert_array_equal(data, lab)
    assert kwargs["scale"] == [2.0, 0.5, 0.5] and kwargs["metadata"]["axes"] == "ZYX"


def test_png_writer_slices_a_stack_as_the_dock_does(tmp_path):
    """A 3D layer with napari's default axis labels is a Z stack (the dock's Export does the same)."""
    lab = labels3d()
    with pytest.warns(UserWarning, match="sidecar"):
        written = writers.write_labels_png(str(tmp_path / "z.png"), lab, attributes(3))
    assert [Path(p).name for p in written][:2] == ["z_z000.png", "z_z001.png"]
    with pytest.warns(UserWarning, match="sidecar"):
        attrs = attributes(3, axis_labels=("t", "y", "x"))
        written = writers.write_labels_png(str(tmp_path / "s.png"), lab, attrs)
    assert [Path(p).name for p in written] == ["s_t000.png", "s_t001.png", "s.png.json"]
    np.testing.assert_array_equal(read_labels(written[1])[0][0], lab[1])
    with pytest.warns(UserWarning, match="sidecar"):
        writers.write_labels_png(str(tmp_path / "m.png"), lab, attributes(3, metadata={"axes": "ZYX"}))
    assert (tmp_path / "m_z001.png").is_file()


def test_file_save_never_replaces_the_plane_files_of_a_png_stack_it_did_not_ask_about(tmp_path):
    """napari's dialog asks about z.png, which a stack never writes: its plane files and sidecar are kept."""
    from napari_unet_loop.io.export import TargetExistsError

    lab = labels3d()
    with pytest.warns(UserWarning, match="sidecar"):
        writers.write_labels_png(str(tmp_path / "z.png"), lab, attributes(3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TargetExistsError, match="File > Save asked only about z.png"):
        writers.write_labels_png(str(tmp_path / "z.png"), lab * 2, attributes(3))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.warns(UserWarning, match="sidecar"):  # a 2D layer: the file asked about (and its record) replaced
        writers.write_labels_png(str(tmp_path / "flat.png"), lab[1], attributes())
        writers.write_labels_png(str(tmp_path / "flat.png"), lab[1] * 2, attributes())
    assert read_labels(tmp_path / "flat.png")[0][0].max() == 4


def test_file_save_of_a_plane_never_takes_the_record_of_a_png_stack_of_the_same_name(tmp_path):
    """A 2D layer saved as cells.png beside a stack cells_z000.png...: nothing asked about the planes, so their
    record stays and they stay (the planes were removed as stale, with a warning)."""
    from napari_unet_loop.io.export import TargetExistsError

    lab = labels3d()
    with pytest.warns(UserWarning, match="sidecar"):
        writers.write_labels_png(str(tmp_path / "cells.png"), lab, attributes(3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TargetExistsError, match="cells.png.json in .* is the record of cells_z000.png"):
        writers.write_labels_png(str(tmp_path / "cells.png"), lab[1], attributes())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_multiscale_layers_are_written_at_full_resolution(tmp_path):
    """napari hands a multiscale layer's data as MultiScaleData, whose numpy array is the coarsest level: the
    writers took that (a 256 x 256 layer saved as 64 x 64) and refused its image beside full-size labels."""
    layers = pytest.importorskip("napari.layers")
    full = np.zeros((256, 256), np.uint16)
    full[10:100, 10:100] = 1
    layer = layers.Labels([full, full[::2, ::2], full[::4, ::4]], multiscale=True, name="cells")
    data, attrs, _ = layer.as_layer_data_tuple()
    out = writers.write_labels_tif(str(tmp_path / "cells.tif"), data, attrs)
    np.testing.assert_array_equal(read_labels(out[0])[0][0], full)
    img = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    image = layers.Image([img, img[::2, ::2]], multiscale=True)
    path = writers.write_layers_csv(str(tmp_path / "m.csv"), [(data, attrs, "labels"), image.as_layer_data_tuple()])
    (row,) = list(csv.DictReader(open(path[0])))
    assert float(row["area"]) == 90 * 90


def test_png_writer_refuses_too_many_labels(tmp_path):
    lab = labels3d()[1].astype(np.int64)
    lab[lab == 2] = 100_000
    with pytest.raises(ExportError, match="65,535"):
        writers.write_labels_png(str(tmp_path / "x.png"), lab, attributes())


def test_csv_writers_with_and_without_image(tmp_path):
    lab = labels3d()[1]
    with pytest.warns(UserWarning, match="no image given"):
        writers.write_labels_csv(str(tmp_path / "a.csv"), lab, attributes())
    with open(tmp_path / "a.csv", newline="") as fh:
        assert "mean_intensity" not in next(csv.reader(fh))

    img = np.full(lab.shape, 3.0, np.float32)
    layer_data = [(lab, attributes(), "labels"), (img, {"name": "nuclei", "rgb": False}, "image")]
    written = writers.write_layers_csv(str(tmp_path / "b.csv"), layer_data)
    with open(written[0], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["mean_intensity"]) for r in rows] == [3.0, 3.0]
    assert float(rows[0]["area"]) == pytest.approx(42 * 0.25)


def test_zarr_multi_layer_writer_stores_the_image(tmp_path):
    lab = labels3d()[1]
    img = np.random.default_rng(0).random(lab.shape).astype(np.float32)
    written = writers.write_layers_zarr(
        str(tmp_path / "c.zarr"), [(img, {"name": "img"}, "image"), (lab, attributes(), "labels")]
    )
    layers = read_labels(written[0])
    assert [k for _, _, k in layers] == ["image", "labels"]
    np.testing.assert_array_equal(np.asarray(layers[0][0]), img)
    np.testing.assert_array_equal(layers[1][0], lab)
    assert layers[1][1]["name"] == "nuclei_labels"
    with pytest.raises(ExportError, match="exactly one Labels layer"):
        writers.write_layers_zarr(str(tmp_path / "d.zarr"), [(img, {}, "image")])


def test_through_real_napari_layers(tmp_path):
    """The layer tuple napari gives a writer works, and reader kwargs build napari layers."""
    layers = pytest.importorskip("napari.layers")
    lab = labels3d()
    layer = layers.Labels(
        lab,
        name="cells",
        scale=(2.0, 0.5, 0.5),
        axis_labels=("z", "y", "x"),
        units=("um", "um", "um"),
        metadata={"napari_unet_loop": {"model_name": "m"}},
    )
    data, attrs, kind = layer.as_layer_data_tuple()
    assert kind == "labels"
    out = writers.write_labels_tif(str(tmp_path / "cells.tif"), data, attrs)
    for d, kwargs, k in read_labels(out[0]):
        reopened = layers.Labels(d, **kwargs) if k == "labels" else layers.Image(d, **kwargs)
        np.testing.assert_array_equal(reopened.data, lab)
        np.testing.assert_allclose(reopened.scale, [2.0, 0.5, 0.5])
        assert reopened.metadata["napari_unet_loop"]["model_name"] == "m"
    img = layers.Image(np.ones((30, 40, 3), np.uint8), rgb=True)
    path = writers.write_layers_zarr(
        str(tmp_path / "c.zarr"), [layers.Labels(lab[1]).as_layer_data_tuple(), img.as_layer_data_tuple()]
    )[0]
    for d, kwargs, k in read_labels(path):
        (layers.Labels if k == "labels" else layers.Image)(d, **kwargs)


def test_npe2_contributions_when_declared(tmp_path):
    """Once napari.yaml declares the reader/writers, save and open go through npe2 end to end."""
    npe2 = pytest.importorskip("npe2")
    from npe2.io_utils import _read, _write

    pm = npe2.PluginManager.instance()
    pm.discover()
    try:
        manifest = pm.get_manifest("napari-unet-loop")
    except KeyError:
        pytest.skip("the plugin is not installed")
    if not manifest.contributions.writers or not manifest.contributions.readers:
        pytest.skip("napari.yaml declares no reader/writers yet")
    pm.activate("napari-unet-loop")
    lab = labels3d()[1]
    for ext in ("tif", "png", "zarr", "csv", "zip"):
        with pytest.warns(UserWarning) if ext != "tif" else _no_warning():
            out = _write(str(tmp_path / f"x.{ext}"), [(lab, attributes(), "labels")], plugin_name="napari-unet-loop")
        assert out[-1].endswith(".json")
        if ext == "csv":
            continue
        layers = _read([str(tmp_path / f"x.{ext}")], plugin_name="napari-unet-loop", stack=False)
        np.testing.assert_array_equal(np.asarray(layers[-1][0]), lab)


def test_io_modules_do_not_import_napari_or_qt():
    import subprocess
    import sys

    code = (
        "import sys; import napari_unet_loop.io.export, napari_unet_loop.io.readers, "
        "napari_unet_loop.io.writers; "
        "bad = [m for m in ('napari', 'qtpy', 'PySide6', 'PyQt5', 'PyQt6') if m in sys.modules]; "
        "print(', '.join(bad), file=sys.stderr); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_the_layers_offset_is_kept_in_ome_zarr_and_recorded_by_the_other_formats(tmp_path, version):
    """Labels of a region sit where the layer sat: OME-Zarr stores the translate, TIFF's sidecar records it."""
    from napari_unet_loop.io import export as ex

    lab = labels3d()
    attrs = attributes(3, translate=[4.0, 10.0, 20.5])
    img = np.random.default_rng(0).random((*lab.shape, 2)).astype(np.float32)  # with a channel axis
    path = ex.write_ome_zarr(
        tmp_path / f"c{version}.zarr", lab, img, scale=[2.0, 0.5, 0.5], translation=[4.0, 10.0, 20.5],
        ngff_version=version,
    ).paths[0]  # fmt: skip
    (_, ikw, _), (ldata, lkw, _) = read_labels(path)
    np.testing.assert_array_equal(ldata, lab)
    np.testing.assert_allclose(lkw["translate"], [4.0, 10.0, 20.5])
    np.testing.assert_allclose(ikw["translate"][-3:], [4.0, 10.0, 20.5])  # the image under the labels
    written = writers.write_labels_zarr(str(tmp_path / "w.zarr"), lab, attrs)
    (ldata, lkw, _) = read_labels(written[0])[-1]
    np.testing.assert_allclose(lkw["translate"], [4.0, 10.0, 20.5])
    with pytest.warns(UserWarning, match=r"offset \(Z 4, Y 10, X 20.5\) is in the sidecar only: a TIF file"):
        written = writers.write_labels_tif(str(tmp_path / "c.tif"), lab, attrs)
    record = json.loads(Path(written[-1]).read_text())
    assert record["translate"] == [4.0, 10.0, 20.5] and "sidecar only" in record["notes"][-1]
    (_, kwargs, _) = read_labels(written[0])[0]  # the plugin's reader puts the labels back where they were
    np.testing.assert_allclose(kwargs["translate"], [4.0, 10.0, 20.5])
    plain = writers.write_labels_tif(str(tmp_path / "d.tif"), lab, attributes(3))  # no offset: none recorded
    assert "translate" not in json.loads(Path(plain[-1]).read_text())


def test_a_pixel_of_exactly_one_micrometre_keeps_its_unit(tmp_path):
    """Scale 1 with a unit is a calibration (1 um per pixel), not the absence of one; scale 1 in pixels is none."""
    lab = labels3d()[1]
    out = writers.write_labels_tif(str(tmp_path / "um.tif"), lab, attributes(scale=[1.0, 1.0], units=["um", "um"]))
    meta = read_labels(out[0])[0][1]
    assert list(meta["scale"]) == [1.0, 1.0] and list(meta["metadata"]["units"]) == ["micrometer", "micrometer"]
    out = writers.write_labels_tif(str(tmp_path / "px.tif"), lab, attributes(scale=[1.0, 1.0], units="pixel"))
    meta = read_labels(out[0])[0][1]
    assert meta.get("scale") is None or list(meta["scale"]) == [1.0, 1.0]
    assert not any(meta["metadata"].get("units") or [])
