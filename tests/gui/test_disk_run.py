"""GUI tests: a whole image file segmented into an OME-Zarr in the background, opened as a labels layer."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_unet_loop.core import model_files
from napari_unet_loop.core.image import InputError
from napari_unet_loop.core.postprocess import PostprocessConfig
from napari_unet_loop.gui import disk_run
from napari_unet_loop.gui.disk_run import DiskRun, source_file
from napari_unet_loop.gui.session import DockCalls, Session
from napari_unet_loop.gui.store_edit import store_window, write_back
from napari_unet_loop.io.images import output_stem
from napari_unet_loop.io.lazy import open_lazy
from napari_unet_loop.parallel import segment_to_zarr

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _ome_zarr(path, img):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    write_image(img, root, scale_factors=(), fmt=FormatV04(), axes=["y", "x"], storage_options={"chunks": (128, 128)})
    return path


def _discs(shape=(300, 260), n=25, seed=2):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx, r = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10), rng.integers(6, 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return (img * 180 + rng.normal(20, 5, shape)).clip(0, 255).astype(np.uint8)


def _session(viewer, image, model, pp):
    calls = {name: (lambda *a, **k: None) for name in DockCalls.__dataclass_fields__}
    calls.update(
        image_layer=lambda: image,
        image_channel=lambda _img: None,
        modality_choice=lambda: None,
        diameter_choice=lambda: None,
        current_model=lambda: model,
        device_choice=lambda: "cpu",
        postprocess_config=lambda: pp,
        tile_size=lambda: None,
    )
    session = Session(viewer)
    session.register(DockCalls(**calls))
    return session


@pytest.fixture
def errors(monkeypatch):
    seen = []
    monkeypatch.setattr(disk_run, "show_error", lambda m: seen.append(str(m)))
    monkeypatch.setattr(disk_run, "show_info", lambda m: None)
    return seen


def test_whole_file_to_ome_zarr_opens_as_labels_equal_to_the_command(
    make_napari_viewer_proxy, qtbot, tmp_path, tiny_model_path, errors, monkeypatch
):
    monkeypatch.setattr(disk_run, "BLOCK", 128)  # several blocks on a small image
    viewer = make_napari_viewer_proxy()
    img = _discs()
    src = _ome_zarr(tmp_path / "slide.ome.zarr", img)
    image = viewer.add_image(img, name="slide", metadata={"source": str(src)}, scale=(0.5, 0.5))
    model = model_files.load(tiny_model_path)
    pp = PostprocessConfig(fg_threshold=0.5, seed_threshold=0.5, min_size=8)
    row = DiskRun(_session(viewer, image, model, pp))
    qtbot.addWidget(row)
    worker = row.start(tmp_path / "out")
    assert worker is not None, errors
    qtbot.waitUntil(lambda: row.worker is None, timeout=TIMEOUT)
    assert not errors
    assert row.status.text().startswith("Done"), row.status.text()
    layer = viewer.layers[-1]
    assert layer.name == "slide labels (OME-Zarr)" and list(layer.scale) == [0.5, 0.5]
    expected_store = segment_to_zarr(open_lazy(src), model, tmp_path / "cli" / "slide.zarr", block=128, postprocess=pp)
    group = zarr.open_group(str(expected_store.path), mode="r")["labels"]
    expected = np.asarray(group[next(iter(group.group_keys()))]["0"])
    assert expected.max() > 0
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    # small enough to hold: the layer is a window over the whole store, and corrections go back into it
    assert store_window(layer) is not None and layer.editable
    layer.paint((150, 130), layer.selected_label)
    assert write_back(layer).pixels > 0
    written = zarr.open_group(str(tmp_path / "out" / "slide.zarr"), mode="r")["labels"]
    on_disk = np.asarray(written[next(iter(written.group_keys()))]["0"])
    np.testing.assert_array_equal(
        on_disk[140:160, 120:140] > expected.max(), layer.data[140:160, 120:140] > expected.max()
    )
    assert (on_disk > expected.max()).any()


def test_a_layer_without_a_file_is_refused_with_a_hint(make_napari_viewer_proxy, qtbot, tiny_model_path, errors):
    viewer = make_napari_viewer_proxy()
    image = viewer.add_image(_discs(), name="made in memory")
    row = DiskRun(_session(viewer, image, model_files.load(tiny_model_path), PostprocessConfig()))
    qtbot.addWidget(row)
    assert row.start("/tmp") is None
    assert errors and "open the image from an OME-Zarr folder or a TIFF file" in errors[0]
    assert "Visible region" in errors[0]


def test_source_and_store_names(tmp_path):
    src = _ome_zarr(tmp_path / "cells.ome.zarr", _discs((70, 80), n=3))

    class Layer:
        metadata = {"source": str(src)}
        source = None

    assert source_file(Layer()) == src
    assert output_stem(src) == "cells"
    assert output_stem(tmp_path / "b.tif") == "b"


def test_the_dock_runs_it_with_its_own_choices(
    make_napari_viewer_proxy, qtbot, tmp_path, tiny_model_path, errors, monkeypatch
):
    from napari_unet_loop.gui.widget import UNetLoopWidget

    seen, real = {}, disk_run.segment_to_zarr
    monkeypatch.setattr(disk_run, "segment_to_zarr", lambda *a, **k: seen.update(k) or real(*a, **k))

    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    assert w.add_model_file(tiny_model_path) is not None
    img = _discs()
    src = _ome_zarr(tmp_path / "plate.ome.zarr", img)
    viewer.add_image(img, name="plate", metadata={"source": str(src)})
    w.fg_spin.value = 0.6  # the dock's threshold reaches the run
    w.tta_combo.value = False  # and its test-time augmentation (it always ran with the default)
    assert w.disk_run.start(tmp_path / "out") is not None, errors
    qtbot.waitUntil(lambda: w.disk_run.worker is None, timeout=TIMEOUT)
    assert not errors and w.disk_run.status.text().startswith("Done")
    attrs = dict(zarr.open_group(str(tmp_path / "out" / "plate.zarr"), mode="r").attrs)["napari_unet_loop"]
    assert attrs["provenance"]["model_name"] == "tiny"
    assert viewer.layers[-1].name == "plate labels (OME-Zarr)"
    store = tmp_path / "out" / "plate.zarr" / "labels" / "plate" / "0"
    assert store.is_dir() and seen["tta"] is False and seen["postprocess"].fg_threshold == 0.6


def test_cancel_keeps_what_was_written_and_a_new_run_continues_it(
    make_napari_viewer_proxy, qtbot, tmp_path, tiny_model_path, errors, monkeypatch
):
    monkeypatch.setattr(disk_run, "BLOCK", 64)  # 25 blocks: the run is still going when Cancel is clicked
    viewer = make_napari_viewer_proxy()
    img = _discs()
    src = _ome_zarr(tmp_path / "slide.ome.zarr", img)
    image = viewer.add_image(img, name="slide", metadata={"source": str(src)})
    model = model_files.load(tiny_model_path)
    pp = PostprocessConfig(fg_threshold=0.5, seed_threshold=0.5, min_size=8)
    row = DiskRun(_session(viewer, image, model, pp))
    qtbot.addWidget(row)
    assert row.start(tmp_path / "out") is not None, errors
    assert row.button.text() == "Cancel"
    markers = tmp_path / "out" / "slide.zarr.partial" / "_progress" / "blocks"
    qtbot.waitUntil(lambda: markers.is_dir() and any(markers.glob("*.json")), timeout=TIMEOUT)
    row.button.click()  # Cancel once a block is written: the run stops after the block under way
    qtbot.waitUntil(lambda: row.worker is None, timeout=TIMEOUT)
    assert row.status.text().startswith("Cancelled"), row.status.text()
    assert row.button.text() == disk_run.START_TEXT and row.button.isEnabled()
    target = tmp_path / "out" / "slide.zarr"
    kept = len(list(markers.glob("*.json")))
    assert not target.exists() and 1 <= kept < 25
    assert len(viewer.layers) == 1  # nothing opened
    lines: list[str] = []
    worker = row.start(tmp_path / "out")  # the same folder: the partial run is continued
    worker.yielded.connect(lines.append)
    qtbot.waitUntil(lambda: row.worker is None, timeout=TIMEOUT)
    assert row.status.text().startswith("Done"), row.status.text()
    assert f"resuming: {kept} of 25 block(s) already done" in lines
    expected_store = segment_to_zarr(open_lazy(src), model, tmp_path / "cli" / "slide.zarr", block=64, postprocess=pp)
    group = zarr.open_group(str(expected_store.path), mode="r")["labels"]
    expected = np.asarray(group[next(iter(group.group_keys()))]["0"])
    np.testing.assert_array_equal(np.asarray(viewer.layers[-1].data), expected)
    assert not errors


def test_a_z_stack_goes_a_plane_at_a_time_joined_into_3d_objects(
    make_napari_viewer_proxy, qtbot, tmp_path, tiny_model_path, errors
):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_unet_loop.core.planes import SegmentSettings
    from napari_unet_loop.parallel import segment_volume_to_zarr

    viewer = make_napari_viewer_proxy()
    stack = np.stack([_discs(seed=3)] * 3)
    src = tmp_path / "stack.ome.zarr"
    root = zarr.open_group(str(src), mode="w", zarr_format=2)
    write_image(stack, root, scale_factors=(), fmt=FormatV04(), axes=["z", "y", "x"])
    image = viewer.add_image(stack, name="stack", metadata={"source": str(src)}, scale=(2.0, 0.5, 0.5))
    model = model_files.load(tiny_model_path)
    pp = PostprocessConfig(fg_threshold=0.5, seed_threshold=0.5, min_size=8)
    session = _session(viewer, image, model, pp)
    calls = {name: getattr(session.dock, name) for name in DockCalls.__dataclass_fields__}
    session.register(DockCalls(**{**calls, "stitch_choice": lambda: 0.5}))
    row = DiskRun(session)
    qtbot.addWidget(row)
    assert row.start(tmp_path / "out") is not None, errors
    qtbot.waitUntil(lambda: row.worker is None, timeout=TIMEOUT)
    assert row.status.text().startswith("Done"), row.status.text()
    layer = viewer.layers[-1]
    assert layer.name == "stack labels (OME-Zarr)" and list(layer.scale) == [2.0, 0.5, 0.5]
    expected = segment_volume_to_zarr(
        open_lazy(src, stack=True), model, tmp_path / "cli" / "stack.zarr",
        SegmentSettings(device="cpu", postprocess=pp), stitch_z=0.5,
    )  # fmt: skip
    group = zarr.open_group(str(expected.path), mode="r")["labels"]
    want = np.asarray(group[next(iter(group.group_keys()))]["0"])
    assert want.shape == stack.shape and want.any()
    np.testing.assert_array_equal(np.asarray(layer.data), want)
    np.testing.assert_array_equal(want[0], want[2])  # the same nuclei in every plane: one 3D id each
    assert store_window(layer) is not None  # small: the whole stack opens editable, written back as you edit
    layer.data_setitem((np.array([1]), np.array([5]), np.array([7])), layer.selected_label)  # a new object
    report = write_back(layer)
    assert report.pixels == 1 and list(report.new_ids.values()) == [int(want.max()) + 1]
    out = zarr.open_group(str(tmp_path / "out" / "stack.zarr"), mode="r")["labels"]
    assert np.asarray(out[next(iter(out.group_keys()))]["0"])[1, 5, 7] == want.max() + 1
    assert not errors


def test_one_channel_of_a_multichannel_file_is_segmented_as_the_layer_shows_it(
    make_napari_viewer_proxy, qtbot, tmp_path, tiny_model_path, errors
):
    """napari splits a CYX file into a layer per channel: the run failed with 'choose the one to segment',
    with no channel to choose, and its status advised running it again although nothing was written."""
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_unet_loop.io.readers import read_labels

    img = _discs()
    src = tmp_path / "two.ome.zarr"
    root = zarr.open_group(str(src), mode="w", zarr_format=2)
    write_image(np.stack([img // 4, img]), root, scale_factors=(), fmt=FormatV04(), axes=["c", "y", "x"])
    ((data, kwargs, _),) = read_labels(src)
    assert [m["channel"] for m in kwargs["metadata"]] == [0, 1]
    viewer = make_napari_viewer_proxy()
    layers = viewer.add_image(data, **kwargs)
    assert [layer.metadata["channel"] for layer in layers] == [0, 1]
    model = model_files.load(tiny_model_path)
    pp = PostprocessConfig(fg_threshold=0.5, seed_threshold=0.5, min_size=8)
    row = DiskRun(_session(viewer, layers[1], model, pp))
    qtbot.addWidget(row)
    assert row.start(tmp_path / "out") is not None, errors
    qtbot.waitUntil(lambda: row.worker is None, timeout=TIMEOUT)
    assert row.status.text().startswith("Done"), row.status.text()
    expected = segment_to_zarr(open_lazy(src), model, tmp_path / "cli" / "two.zarr", postprocess=pp, channel=1)
    group = zarr.open_group(str(expected.path), mode="r")["labels"]
    np.testing.assert_array_equal(
        np.asarray(viewer.layers[-1].data), np.asarray(group[next(iter(group.group_keys()))]["0"])
    )
    row._failed(InputError("the image has 2 channels"))  # a settings error, nothing written: no "run it again"
    assert row.status.text() == "Failed: the image has 2 channels"
