"""GUI tests of the dock's Object size row: measured from labels, used to segment, recorded, re-thresholded."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_loop.core import model_files
from napari_unet_loop.core.unet import UNetConfig
from napari_unet_loop.gui.widget import UNetLoopWidget

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


@pytest.fixture
def dock(make_napari_viewer_proxy, tmp_path, monkeypatch):
    from napari_unet_loop.gui import diameter as diameter_mod

    seen = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda m: seen.append(str(m)))
    monkeypatch.setattr("napari.utils.notifications.show_info", lambda m: seen.append(str(m)))
    assert diameter_mod  # the row imports its notifications when it needs them
    viewer = make_napari_viewer_proxy()
    w = UNetLoopWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net Loop")
    model = model_files.new_model(UNetConfig(depth=2, base_width=4), name="sized", seed=0, diameter=10.0)
    w.add_model_file(model_files.save(model, tmp_path / "sized.safetensors"))
    return viewer, w, seen


def discs(shape=(120, 160), r=12):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate([(30, 30), (30, 100), (85, 50), (90, 130)]):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k + 1
    return lab


def test_the_row_shows_the_models_diameter_and_measures_labels(dock):
    viewer, w, seen = dock
    row = w.diameter_row
    assert row.value() is None and row.spin.value() == 10.0 and not row.spin.isEnabled()
    assert "objects 10 px" in w.model_info.text()
    with pytest.raises(ValueError):
        row.measure()  # no labels layer yet
    assert "select a labels layer" in seen[-1]
    row.measure_btn.click()  # the button: the message alone, no traceback from the click
    assert "select a labels layer" in seen[-1]
    viewer.add_labels(np.zeros((50, 50), np.int32), name="empty")
    with pytest.raises(ValueError):
        row.measure()
    assert "holds no objects" in seen[-1]
    viewer.add_labels(discs(), name="typical")  # selected: the one measured
    d = row.measure()
    assert d == pytest.approx(24.0, rel=0.05)
    assert row.value() == pytest.approx(d, abs=0.05) and row.spin.isEnabled()
    row.mode_combo.setCurrentIndex(row.mode_combo.findData("auto"))
    assert row.value() == "auto"
    row.set_value(None)
    assert row.value() is None and row.spin.value() == 10.0


def test_segmenting_at_a_set_diameter_records_it_and_rethresholds_at_that_scale(qtbot, dock):
    viewer, w, _ = dock
    image = viewer.add_image((discs() > 0).astype(np.float32) * 200 + 10, name="cells")
    w.image_combo.setCurrentText(image.name)
    w.diameter_row.set_value(30.0)
    assert w.segment() is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    labels = viewer.layers["cells labels"]
    meta = labels.metadata["napari_unet_loop"]
    assert meta["diameter"] == 30.0 and meta["diameter_setting"] == 30.0
    fg, dist, factor = w._maps[labels][()]
    assert fg.shape == labels.data.shape and factor == pytest.approx(1 / 3)
    # re-thresholding uses the sizes of the scale the plane was segmented at: min size 9x the model's
    from napari_unet_loop.core.postprocess import instances_from_maps
    from napari_unet_loop.core.scale import postprocess_at

    w.min_size_spin.value = 2500  # 2,500 px at the network scale: 22,500 px here, more than the whole image
    pp = w.postprocess_config()
    assert w.rethreshold() is not None
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    maps = (fg.astype(np.float32), dist.astype(np.float32))
    np.testing.assert_array_equal(labels.data, instances_from_maps(*maps, postprocess_at(pp, factor)))
    assert not np.array_equal(labels.data, instances_from_maps(*maps, pp))  # the size was scaled
