"""GUI tests: segmenting the visible region or a drawn rectangle of a (lazy, multiscale) image."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_loop.gui import input_section, model_manager, region, segment_output
from napari_unet_loop.gui import widget as widget_mod
from napari_unet_loop.gui._segment_worker import PlaneResult
from napari_unet_loop.gui.layers import META_KEY, unwrap
from napari_unet_loop.gui.region import MARGIN, Region, RegionPlan, keep_centred, pixel_region, visible_region
from napari_unet_loop.gui.segment_output import IF_EDITED_NEW
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui
TIMEOUT = 120_000
SCALE, TRANSLATE = (0.5, 0.5), (10.0, 20.0)
RADIUS = 10
# disc centres (row, column) on a 600 x 800 plane: spread out, some across the regions' borders below
CENTRES = [(r, c) for r in range(40, 600, 70) for c in range(45, 800, 75)]


class Recorded:
    """A read-only array that records every read (stands in for a dask or zarr level 0).

    ``reads`` holds the index of each read; ``worker_reads`` those made off the main thread (the
    segmentation's, not napari's drawing or the dock's imaging detection).
    """

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape, self.dtype, self.ndim, self.size = data.shape, data.dtype, data.ndim, data.size
        self.reads: list = []
        self.worker_reads: list = []

    def __getitem__(self, key):
        self.reads.append(key)
        if threading.current_thread() is not threading.main_thread():
            self.worker_reads.append(key)
        return np.asarray(self._data[key])

    def __array__(self, dtype=None, copy=None):
        self.reads.append("all")
        return self._data if dtype is None else self._data.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def disc_plane(shape=(600, 800)) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (one id each in the truth) on a dim, noisy background."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(CENTRES, 1):
        if cy < shape[0] and cx < shape[1]:
            truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2] = i
    rng = np.random.default_rng(0)
    return ((truth > 0) * 200.0 + rng.normal(20, 5, shape)).astype(np.float32), truth


def threshold_planes(model, read, indices, *args, **kwargs):
    """Stands in for the network: each bright blob of the plane read is one object."""
    for index in indices:
        plane = read(index)
        labels = ndimage.label(plane > 100)[0].astype(np.int32)
        fg = (plane > 100).astype(np.float16)
        yield PlaneResult(index, labels, fg, fg, 0.0)
    return len(indices)


@pytest.fixture
def messages(monkeypatch):
    """Collect the notifications the dock shows."""
    seen = {"error": [], "warning": [], "info": []}
    for mod in (widget_mod, model_manager, input_section, segment_output, region):
        for kind in seen:
            if hasattr(mod, f"show_{kind}"):
                monkeypatch.setattr(mod, f"show_{kind}", lambda m, kind=kind: seen[kind].append(str(m)))
    return seen


@pytest.fixture
def viewer_widget(make_napari_viewer_proxy, tiny_model_path):
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    assert w.add_model_file(tiny_model_path) is not None
    return viewer, w


@pytest.fixture
def thresholding(monkeypatch):
    monkeypatch.setattr(widget_mod, "segment_planes", threshold_planes)


@pytest.fixture
def slide(viewer_widget):
    """A 3-level multiscale image whose level 0 records its reads, with scale and translate."""
    viewer, w = viewer_widget
    plane, truth = disc_plane()
    level0 = Recorded(plane)
    layer = viewer.add_image(
        [level0, plane[::2, ::2].copy(), plane[::4, ::4].copy()],
        multiscale=True,
        name="slide",
        scale=SCALE,
        translate=TRANSLATE,
        contrast_limits=(0, 255),
    )
    return viewer, w, layer, level0, truth


def wait(qtbot, w):
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)


def run(qtbot, w, **kwargs):
    worker = w.segment(**kwargs)
    assert worker is not None, w.status.text()
    wait(qtbot, w)
    return worker


def choose(w, key: str) -> None:
    w.region_combo.setCurrentIndex(w.region_combo.findData(key))
    assert w.region_choice() == key


def show_part(viewer, centre_yx, extent: float) -> None:
    """Centre the camera on a data pixel of the slide and zoom so that at most ``extent`` data pixels show."""
    camera = viewer.scene.camera
    camera.center = tuple(np.asarray(TRANSLATE) + np.asarray(centre_yx) * np.asarray(SCALE))
    camera.zoom = max(viewer.canvas.size) / (extent * SCALE[0])


def centred_in(reg: Region) -> list[int]:
    """Ids (1-based) of the truth discs whose centre pixel lies in ``reg``."""
    return [i for i, (cy, cx) in enumerate(CENTRES, 1) if reg.y0 <= cy < reg.y1 and reg.x0 <= cx < reg.x1]


def check_output(viewer, layer, out, truth, reg: Region, cuts: bool = True) -> None:
    """``out`` holds exactly the discs centred in ``reg`` and lies over them in world coordinates."""
    assert out.data.shape == reg.shape
    np.testing.assert_allclose(out.scale, SCALE)
    np.testing.assert_allclose(out.translate, np.asarray(TRANSLATE) + np.asarray([reg.y0, reg.x0]) * SCALE)
    assert out.metadata[META_KEY]["region"] == reg.as_list()
    # a pixel of the labels and the image pixel under it are at the same world position
    for i, j in [(0, 0), (reg.shape[0] - 1, reg.shape[1] - 1), (3, 7)]:
        np.testing.assert_allclose(out.data_to_world((i, j)), layer.data_to_world((reg.y0 + i, reg.x0 + j)))
    crop = truth[reg.slices]
    kept = centred_in(reg)
    assert kept and int(out.data.max()) == len(kept)
    np.testing.assert_array_equal(out.data > 0, np.isin(crop, kept))  # discs centred outside are absent
    if cuts:  # discs centred outside that reach into the region: none of their pixels are kept
        assert set(np.unique(crop)) - set(kept) - {0}, "the region should cut discs centred outside it"


# ---------------------------------------------------------------- the region itself
def test_pixel_region_takes_every_pixel_touched_and_clips():
    assert pixel_region(np.array([[9.5, 10.0], [20.4, 30.6]]), (100, 100)) == Region(10, 21, 10, 32)
    assert pixel_region(np.array([[-50.0, -5.0], [3.0, 4.0]]), (100, 100)) == Region(0, 4, 0, 5)
    assert pixel_region(np.array([[200.0, 5.0], [300.0, 9.0]]), (100, 100)).empty


def test_keep_centred_drops_objects_centred_outside_and_renumbers():
    plan = RegionPlan(Region(10, 30, 10, 30), Region(0, 40, 0, 40))
    labels = np.zeros((40, 40), np.int32)
    labels[12:16, 12:16] = 5  # inside
    labels[5:13, 20:24] = 7  # centred above the region (row 8.5), reaches into it: dropped
    labels[26:34, 20:24] = 9  # centred at row 29.5, in pixel 30, just below the region: dropped
    labels[25:33, 5:12] = 11  # centred at row 28.5, column 8: outside
    labels[24:32, 12:16] = 13  # centred at row 27.5: inside, kept with the part in the region
    out = keep_centred(labels, plan)
    assert out.shape == (20, 20) and out.dtype == np.int32
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out[2:6, 2:6] == 1).all() and (out[14:20, 2:6] == 2).all()


def test_visible_region_matches_the_canvas_corners(viewer_widget):
    viewer, w = viewer_widget
    plane, _ = disc_plane()
    layer = viewer.add_image([plane, plane[::2, ::2]], multiscale=True, scale=SCALE, translate=TRANSLATE)
    show_part(viewer, (200, 300), 200)
    reg = visible_region(viewer, layer)
    # napari's own canvas corners (private, read here as a cross-check only)
    canvas = unwrap(viewer).window._qt_viewer.canvas
    corners = np.array([unwrap(layer).world_to_data(c)[-2:] for c in canvas._viewbox_corners_in_world])
    assert reg == pixel_region(corners, (600, 800))
    assert reg.y0 <= 200 < reg.y1 and reg.x0 <= 300 < reg.x1
    assert 0 < reg.shape[0] <= 201 and 0 < reg.shape[1] <= 201


# ---------------------------------------------------------------- segmenting a region
def test_visible_region_reads_only_its_crop_into_an_aligned_layer(qtbot, slide, thresholding):
    viewer, w, layer, level0, truth = slide
    show_part(viewer, (300, 400), 220)
    choose(w, "view")
    reg = visible_region(viewer, layer)
    assert 0 < reg.shape[0] < 600 and 0 < reg.shape[1] < 800
    run(qtbot, w)
    out = viewer.layers[f"slide labels [{reg}]"]
    check_output(viewer, layer, out, truth, reg, cuts=False)  # where the view's edges fall depends on the canvas
    window = reg.grown(MARGIN, (600, 800))
    assert window.y0 == reg.y0 - MARGIN and window.x1 == reg.x1 + MARGIN  # the context margin is read
    assert level0.worker_reads == [window.slices]  # the segmentation read the window only
    assert "all" not in level0.reads
    assert w.status.text().startswith("Done") and out.name in w.status.text()
    assert w.tracker.state(out).ours and not w.tracker.is_edited(out)


def test_rectangle_of_the_selected_shape(qtbot, slide, thresholding):
    viewer, w, layer, level0, truth = slide
    world = lambda y, x: np.asarray(TRANSLATE) + np.asarray([y, x]) * SCALE  # noqa: E731
    first = np.array([world(115, 125), world(115, 414), world(384, 414), world(384, 125)])
    last = np.array([world(400, 500), world(400, 700), world(560, 700), world(560, 500)])
    shapes = viewer.add_shapes([first, last], shape_type="rectangle", name="boxes")
    choose(w, "rectangle")
    run(qtbot, w)  # nothing selected: the last shape
    reg = Region(400, 561, 500, 701)
    check_output(viewer, layer, viewer.layers[f"slide labels [{reg}]"], truth, reg)
    shapes.selected_data = {0}
    level0.worker_reads.clear()
    run(qtbot, w)
    reg = Region(115, 385, 125, 415)
    check_output(viewer, layer, viewer.layers[f"slide labels [{reg}]"], truth, reg)
    assert level0.worker_reads == [reg.grown(MARGIN, (600, 800)).slices]
    # a Shapes layer of its own scale and translate (the active one now): its world position counts
    box = (np.array([[200, 300], [200, 500], [300, 500], [300, 300]]) * SCALE + TRANSLATE - 5.0) / 0.25
    viewer.add_shapes([box], shape_type="rectangle", scale=(0.25, 0.25), translate=(5.0, 5.0), name="fine")
    run(qtbot, w)
    reg = Region(200, 301, 300, 501)
    check_output(viewer, layer, viewer.layers[f"slide labels [{reg}]"], truth, reg, cuts=False)
    # the image active, the first Shapes layer selected too: that one's selected shape
    viewer.layers.selection.active = layer
    viewer.layers.selection.add(shapes)
    assert region.shapes_layer(viewer).name == "boxes" and w.image_layer().name == "slide"
    n = len(viewer.layers)
    run(qtbot, w)
    assert len(viewer.layers) == n  # the same region again: its layer is replaced
    reg = Region(115, 385, 125, 415)
    check_output(viewer, layer, viewer.layers[f"slide labels [{reg}]"], truth, reg)


def test_same_region_again_replaces_its_layer_unless_edited(qtbot, slide, thresholding):
    viewer, w, layer, _, _ = slide
    viewer.add_shapes([[[60, 80], [60, 200], [160, 200], [160, 80]]], shape_type="rectangle")
    choose(w, "rectangle")
    run(qtbot, w)
    names = [lyr.name for lyr in viewer.layers if lyr.name.startswith("slide labels")]
    assert len(names) == 1
    out = viewer.layers[names[0]]
    run(qtbot, w)
    assert [lyr.name for lyr in viewer.layers if lyr.name.startswith("slide labels")] == names
    out.paint((5, 5), 99)
    w.if_edited_combo.setCurrentIndex(w.if_edited_combo.findText(IF_EDITED_NEW))
    run(qtbot, w)
    new = [lyr for lyr in viewer.layers if lyr.name.startswith("slide labels") and lyr.name != out.name]
    assert len(new) == 1 and new[0].data.shape == out.data.shape
    assert out.data[5, 5] == 99  # the edited layer is untouched


def test_whole_plane_as_before(qtbot, slide, thresholding, messages):
    viewer, w, layer, level0, truth = slide
    show_part(viewer, (300, 400), 220)  # the view does not matter
    assert w.region_choice() == "plane"  # the default
    run(qtbot, w)
    out = viewer.layers["slide labels"]
    assert out.data.shape == (600, 800)
    np.testing.assert_allclose(out.translate, TRANSLATE)
    assert "region" not in out.metadata.get(META_KEY, {})
    np.testing.assert_array_equal(out.data > 0, truth > 0)
    assert not messages["info"]  # 600 x 800: no advice about large images


def test_whole_plane_of_a_large_lazy_image_suggests_a_region(qtbot, viewer_widget, messages, monkeypatch):
    viewer, w = viewer_widget
    calls = []

    def nothing(model, read, indices, *args, **kwargs):  # the run itself is not the point here
        calls.append(indices)
        return 0
        yield

    monkeypatch.setattr(widget_mod, "segment_planes", nothing)
    big = np.broadcast_to(np.zeros((), np.uint8), (6200, 6200))  # no memory behind it
    viewer.add_image([big, big[::4, ::4]], multiscale=True, name="big", contrast_limits=(0, 1))
    run(qtbot, w)
    assert calls == [[()]]  # the run went on as before
    assert any("Visible region" in m and "napari-unet-loop segment" in m for m in messages["info"])


def test_stack_region_of_the_plane_on_screen(qtbot, viewer_widget, thresholding, messages):
    viewer, w = viewer_widget
    plane, truth = disc_plane((200, 300))
    stack = np.stack([np.zeros_like(plane), plane, np.zeros_like(plane)])
    layer = viewer.add_image(stack, name="z", scale=(2.0, 0.5, 0.5), translate=(4.0, 10.0, 20.0))
    viewer.dims.set_current_step(0, 1)
    viewer.add_shapes([[[60, 80], [60, 150], [100, 150], [100, 80]]], shape_type="rectangle")
    choose(w, "rectangle")
    assert w.segment(stack=True) is None  # whole stacks take whole planes
    assert "Segment stack does whole planes" in messages["error"][-1]
    assert w.status.text().startswith("Not started")
    run(qtbot, w)
    reg = Region(100, 181, 120, 261)  # the rectangle in the image's pixels
    out = viewer.layers[f"z labels [1, {reg}]"]
    assert out.data.shape == (1, *reg.shape)
    np.testing.assert_allclose(out.translate, (4.0 + 2.0, 10.0 + 100 * 0.5, 20.0 + 120 * 0.5))
    assert out.metadata[META_KEY]["plane"] == [1]
    np.testing.assert_allclose(out.data_to_world((0, 0, 0)), layer.data_to_world((1, reg.y0, reg.x0)))
    assert np.array_equal(out.data[0] > 0, np.isin(truth[reg.slices], centred_in(reg)))
    assert "plane on screen only" in w.status.text()


def test_real_model_on_a_dask_region_keeps_maps_for_thresholds(qtbot, viewer_widget):
    da = pytest.importorskip("dask.array")
    viewer, w = viewer_widget
    plane, _ = disc_plane((200, 300))
    pyramid = [da.from_array(plane, chunks=64), da.from_array(plane[::2, ::2].copy(), chunks=64)]
    viewer.add_image(pyramid, multiscale=True, name="small", contrast_limits=(0, 255))
    viewer.add_shapes([[[20, 30], [20, 130], [90, 130], [90, 30]]], shape_type="rectangle")
    choose(w, "rectangle")
    run(qtbot, w)  # the tiny model: fast, meaningless objects
    out = viewer.layers["small labels [20:91, 30:131]"]
    assert out.data.shape == (71, 101) and out.metadata[META_KEY]["model_name"] == "tiny"
    fg, dist, _ = w._maps[unwrap(out)][()]
    assert fg.shape == dist.shape == (71, 101)
    assert w.rethreshold() is not None  # Apply thresholds works on the region's layer
    wait(qtbot, w)
    assert w.status.text().startswith("Done")


# ---------------------------------------------------------------- refusals
def test_no_shapes_layer_or_no_shape_is_refused_clearly(slide, messages):
    viewer, w, _, _, _ = slide
    choose(w, "rectangle")
    assert w.segment() is None
    assert "needs a rectangle" in messages["error"][-1] and "Shapes layer" in messages["error"][-1]
    viewer.add_shapes(name="empty")
    assert w.segment() is None
    assert "'empty' holds no shape" in messages["error"][-1]
    viewer.add_shapes([[[-900, -900], [-900, -800], [-800, -800], [-800, -900]]], shape_type="rectangle", name="far")
    assert w.segment() is None
    assert "lies outside 'slide'" in messages["error"][-1]
    assert w.status.text().startswith("Not started")
    assert not [lyr for lyr in viewer.layers if lyr.name.startswith("slide labels")]


def test_nothing_visible_is_refused_clearly(slide, messages):
    viewer, w, _, _, _ = slide
    viewer.scene.camera.center = (5000.0, 5000.0)
    viewer.scene.camera.zoom = 10.0
    choose(w, "view")
    assert w.segment() is None
    assert "no part of 'slide' is visible" in messages["error"][-1]
    viewer.dims.ndisplay = 3
    assert w.segment() is None
    assert "2D view" in messages["error"][-1]
