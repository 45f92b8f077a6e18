"""Make the documentation screenshots in a real napari window.

Run from the repository root (on a machine without a display: under ``xvfb-run -a``)::

    python docs/make_screenshots.py [--out docs/images] [--finetune-minutes 1]

It writes
- ``dock.png``: the dock on the dense fluorescence sample, segmented with the shipped model;
- ``finetune.png``: the Fine-tune section after a short fine-tune on a corrected labels layer (around
  the whole nuclei the model got most wrong, redrawn as the sample's ground truth has them), with its live loss
  / validation curve (``finetune-window.png``: the whole window then);
- ``correct.png`` (and ``correct-window.png``): the Correct section with the review queue;
- ``export.png``: the Export section.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def pump(app, seconds: float) -> None:
    """Let Qt draw for a while."""
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def wait(app, predicate, timeout: float = 900) -> None:
    """Process events until ``predicate()`` holds."""
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise TimeoutError("timed out waiting for the plugin")
        app.processEvents()
        time.sleep(0.05)


CORRECTIONS = 6  # nuclei redrawn before the fine-tune


def correct_worst(labels, truth: np.ndarray, n: int) -> str:
    """Correct the areas around the ``n`` whole nuclei the model got most wrong (``core.proofread.correct_worst``).

    The changed pixels go through the layer's edit history as a brush would, so the dock counts
    them as corrected. Returns what was done.
    """
    from napari_unet_loop.core.proofread import correct_worst as simulated

    edit = simulated(np.asarray(labels.data), truth, n)
    changed = np.nonzero(edit.after != edit.before)
    labels.data_setitem(changed, edit.after[changed])
    return edit.message


def main() -> None:
    """Make the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--finetune-minutes", type=float, default=1.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the corrections drawn for the pictures are autosaved away from the user's own (their next napari
    # session would offer them back otherwise)
    os.environ.setdefault("NAPARI_UNET_LOOP_AUTOSAVE", tempfile.mkdtemp(prefix="unet-loop-screenshots-"))

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_unet_loop.sample_data import load_sample

    viewer = napari.Viewer(title="napari-unet-loop")
    app = QApplication.instance()
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-unet-loop", "nuclei_fluorescence")
    _, w = viewer.window.add_plugin_dock_widget("napari-unet-loop", "U-Net Loop")
    w.segment()
    wait(app, lambda: w._worker is None)
    viewer.layers.selection.active = viewer.layers["nuclei_fluorescence labels"]
    pump(app, 1.0)
    viewer.screenshot(str(out / "dock.png"), canvas_only=False)
    print("wrote", out / "dock.png", "-", w.status.text())

    # proofreading: rank the objects by doubt and go to the first one
    sec = w.correct_section
    sec.reset_choices()
    sec.rank()
    sec.run_tool("next", point=(0, 0))
    w.show_tab("Correct")
    pump(app, 1.0)
    viewer.screenshot(str(out / "correct-window.png"), canvas_only=False)
    sec.grab().save(str(out / "correct.png"))
    print("wrote", out / "correct.png", "-", sec.status.text())
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (260, 348)
    camera.zoom = 1.0

    # corrections as a biologist makes them, then a short fine-tune with its live curve
    labels = viewer.layers["nuclei_fluorescence labels"]
    print(correct_worst(labels, load_sample("nuclei_fluorescence")[1], CORRECTIONS))
    ft = w.finetune_section
    ft.minutes_spin.value = args.finetune_minutes
    ft.name_edit.setText("dsb2018-nuclei-ft-screenshot")
    ft.resegment_check.value = True
    ft.start()
    wait(app, lambda: ft._worker is None)
    wait(app, lambda: w._worker is None)
    w.show_tab("Fine-tune")
    pump(app, 1.0)
    viewer.screenshot(str(out / "finetune-window.png"), canvas_only=False)
    ft.grab().save(str(out / "finetune.png"))
    print("wrote", out / "finetune.png", "-", ft.result_label.text().replace("\n", " "))
    w.show_tab("Export")
    pump(app, 0.5)
    w.export_section.grab().save(str(out / "export.png"))
    print("wrote", out / "export.png")
    # each tab at a laptop and a desktop window size: nothing may be clipped
    for width, height in ((1366, 768), (1600, 1000)):
        viewer.window.resize(width, height)
        for tab in ("Segment", "Correct", "Fine-tune", "Export"):
            w.show_tab(tab)
            pump(app, 0.7)
            name = f"tab-{tab.lower()}-{width}x{height}.png"
            viewer.screenshot(str(out / name), canvas_only=False)
            print("wrote", out / name)
    from napari_unet_loop.core import model_files

    if "dsb2018-nuclei-ft-screenshot" in model_files.list_models():
        model_files.delete_user_model("dsb2018-nuclei-ft-screenshot")
    viewer.close()


if __name__ == "__main__":
    main()
