"""Correct labels stored in an OME-Zarr larger than memory: a window at a time, written back chunk by chunk.

napari does not paint on multiscale (lazy) labels, so a store's labels layer is corrected
through a *window*: *Correct region* reads the visible region (or the drawn rectangle, by
the dock's Region choice) of the store's full-resolution labels into an ordinary labels
layer placed over it, where every napari and dock tool works. Its changes go back into the
store (:class:`napari_unet_loop.io.store_edits.StoreWindow`: only the changed pixels, only
their chunks, every level, journalled so that a crash never leaves a half-written chunk) at
each autosave tick (in a background thread, from a copy of the layer, so the viewer stays
responsive), when the window's layer is closed and when napari quits (the
:class:`~napari_unet_loop.gui.autosave.Autosaver` does it instead of a TIFF autosave, and keeps a
TIFF autosave while the store refuses), and on *Write back*.
The store's own layer is then redrawn with the corrections.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget

from ..io.images import is_zarr_dir
from ..io.store_edits import StoreEditError, StoreEditor, StoreWindow, WriteReport
from .layers import META_KEY, unwrap
from .region import RegionError, rectangle_region, visible_region

if TYPE_CHECKING:
    from .session import Session

#: Largest window read into memory (pixels): 4096 x 4096 labels are 64 MB.
MAX_WINDOW_PIXELS = 4096 * 4096

# the open windows: labels layer -> its window of a store
_WINDOWS: weakref.WeakKeyDictionary[Labels, StoreWindow] = weakref.WeakKeyDictionary()


def store_path(layer) -> Path | None:
    """The OME-Zarr folder a labels layer was read from, if any."""
    source = getattr(getattr(layer, "source", None), "path", None) or (layer.metadata or {}).get("source")
    if not source:
        return None
    path = Path(str(source))
    return path if is_zarr_dir(path) else None


def store_group(layer) -> str | None:
    """The labels group of its store a labels layer shows (``None``: unknown, the store's first)."""
    group = (layer.metadata or {}).get("labels_group")
    return str(group) if group else None


def store_window(layer) -> StoreWindow | None:
    """The store window a labels layer holds, or ``None`` for an ordinary labels layer."""
    return _WINDOWS.get(unwrap(layer)) if layer is not None else None


def write_back(layer: Labels) -> WriteReport | None:
    """Write a window layer's changes into its store (``None``: not a window layer).

    Raises
    ------
    StoreEditError, OSError
        When the store cannot be written; the layer keeps the changes (and they are retried).
    """
    window = store_window(layer)
    if window is None:
        return None
    return window.write_back(unwrap(layer).data)


def refresh_store_layers(viewer, path: Path) -> None:
    """Redraw the layers that show ``path`` (dask reads the chunks again: napari's dask cache is emptied)."""
    try:
        from napari.utils import _dask_utils

        cache = getattr(_dask_utils, "_DASK_CACHE", None)
        if cache is not None and getattr(cache, "cache", None) is not None:
            cache.cache.clear()
    except ImportError:  # pragma: no cover - napari without a dask cache
        pass
    path = Path(path).resolve()
    for layer in viewer.layers:
        source = store_path(layer) if isinstance(layer, Labels) and store_window(layer) is None else None
        if source is not None and source.resolve() == path:
            layer.refresh()


def add_window_layer(viewer, window: StoreWindow, name: str, scale, translate) -> Labels:
    """Add a store window as an editable labels layer over the store's pixels (``scale``/``translate``: the store's).

    The layer's changes are written back into the store (see the module docstring); its
    selected label is an id no object of the store has, as far as the store's attributes record
    its largest id (a store of another tool: the window's largest + 1, which the write-back
    renumbers to a free id if another object has it).
    """
    scale = [float(s) for s in scale]
    translate = [float(t) + o * s for t, o, s in zip(translate, window.origin, scale, strict=True)]
    layer = viewer.add_labels(
        window.data,
        name=name,
        scale=scale,
        translate=translate,
        metadata={META_KEY: {"store": str(window.editor.path), "window": list(window.bounds)}},
    )
    _WINDOWS[unwrap(layer)] = window
    layer.selected_label = window.next_id(scan=False)  # never a pass over a whole store on the GUI thread
    return layer


class StoreCorrections(QWidget):
    """A row: *Correct region of OME-Zarr labels*, *Write back*, and what was written.

    Parameters
    ----------
    session : Session
        The dock's session (its viewer and Region choice).
    write : callable
        ``write(layer)`` writes a window back now and returns ``(report, ok)``: the autosave's
        :meth:`~napari_unet_loop.gui.autosave.Autosaver.write_back_now`, so the button, the
        autosave tick, closing a layer and quitting write back in one way (one write-back of a
        window at a time, a store that refuses reported once, the corrections autosaved meanwhile).
    """

    def __init__(self, session: Session, write: Callable[[Labels], tuple[WriteReport | None, bool]]) -> None:
        super().__init__()
        self.session = session
        self.write = write
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.open_btn = QPushButton("Correct region in store")
        self.open_btn.setToolTip(
            "For labels in an OME-Zarr on disk (e.g. from 'Whole image to OME-Zarr...' or File > Open), which "
            "napari cannot paint on: read the visible region (or the rectangle, by the Region choice) of the "
            "selected store labels layer into a labels layer you can correct. Its changes are written back into "
            "the store chunk by chunk at every autosave, on 'Write back', and when the layer is closed."
        )
        self.open_btn.clicked.connect(lambda: self.open_window())
        self.write_btn = QPushButton("Write back")
        self.write_btn.setToolTip("Write the corrections of every store window into its store now")
        self.write_btn.clicked.connect(lambda: self.write_all())
        self.revert_btn = QPushButton("Revert...")
        self.revert_btn.setToolTip(
            "Put the segmentation back in every chunk of the selected store that was corrected (asks first); "
            "its open correction windows are read again"
        )
        self.revert_btn.clicked.connect(lambda: self.revert_store())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row.addWidget(self.open_btn)
        row.addWidget(self.write_btn)
        row.addWidget(self.revert_btn)
        row.addWidget(self.status, 1)

    def _store_layer(self) -> Labels:
        active = self.session.viewer.layers.selection.active
        layers = [active] + [layer for layer in reversed(list(self.session.viewer.layers)) if layer is not active]
        for layer in layers:
            if isinstance(layer, Labels) and store_window(layer) is None and store_path(layer) is not None:
                return layer
        raise StoreEditError(
            "Correct region needs the labels layer of an OME-Zarr store: open the store (File > Open, or "
            "'Whole image to OME-Zarr...') and select its labels layer"
        )

    def open_window(self) -> Labels | None:
        """Read the chosen region of the selected store labels layer into a new labels layer; return it.

        In a Z stack the window takes every plane when they fit in :data:`MAX_WINDOW_PIXELS`,
        else as many as fit around the plane on screen.
        """
        viewer = self.session.viewer
        try:
            layer = self._store_layer()
            path = store_path(layer)
            if layer.ndim not in (2, 3):
                raise StoreEditError("only 2D store labels and Z stacks are corrected by region")
            choose = rectangle_region if self.session.region_choice() == "rectangle" else visible_region
            region = choose(viewer, layer)
            area = region.shape[0] * region.shape[1]
            if area > MAX_WINDOW_PIXELS:
                raise RegionError(
                    f"the region is {region.shape[0]} x {region.shape[1]} px: zoom in (or draw a smaller rectangle "
                    "and choose Region: Inside the rectangle) to at most 4096 x 4096 px at a time"
                )
            editor = StoreEditor(path, name=store_group(layer))  # the labels the layer shows, of several
            planes = None
            if editor.ndim == 3:
                depth, fit = editor.shape[0], max(1, MAX_WINDOW_PIXELS // area)
                here = int(np.clip(np.round(layer.world_to_data(viewer.dims.point)[0]), 0, depth - 1))
                z0 = int(np.clip(here - fit // 2, 0, max(0, depth - fit)))
                planes = (z0, min(depth, z0 + fit))
            window = editor.window(region.y0, region.y1, region.x0, region.x1, planes=planes)
        except (StoreEditError, RegionError, OSError) as exc:
            show_error(str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - e.g. a damaged chunk: said, never raised into napari
            show_error(f"Cannot read the region from the store: {type(exc).__name__}: {exc}")
            return None
        if editor.recovered:
            show_info(f"{editor.recovered} chunk(s) of corrections a crash had interrupted were written to {path.name}")
        b, nd = window.bounds, editor.ndim
        where = ", ".join(f"{b[2 * k]}:{b[2 * k + 1]}" for k in range(nd))
        new = add_window_layer(
            viewer, window, f"{layer.name} [{where}] (store)", layer.scale[-nd:], layer.translate[-nd:]
        )
        self.status.setText(f"Correcting {path.name} [{where}]; changes go back at each autosave")
        return new

    def revert_store(self, confirm: bool = True) -> int | None:
        """Put the segmentation back in the corrected chunks of the selected store; return how many.

        The store is the selected layer's: a store labels layer, or a correction window over one.
        Its windows are written back first (so no write-back lands after the revert), then read
        again from the reverted store. Returns ``None`` when refused or not confirmed.
        """
        viewer = self.session.viewer
        active = viewer.layers.selection.active
        try:
            window = store_window(active)
            if window is not None:
                path, group = window.editor.path, window.editor.name
            else:
                layer = self._store_layer()
                path, group = store_path(layer), store_group(layer)
            editor = StoreEditor(path, name=group)
            count = len(editor.edited_chunks())
        except (StoreEditError, OSError) as exc:
            show_error(str(exc))
            return None
        if not count:
            self.status.setText(f"Nothing to revert: no chunk of {path.name} was corrected")
            return 0
        question = (
            f"Put the segmentation back in the {count} corrected chunk(s) of {path.name}? The corrections in them "
            "are lost; open correction windows over it are read again."
        )
        if confirm and QMessageBox.question(self, "Revert store", question) != QMessageBox.StandardButton.Yes:
            return None
        windows = [
            layer
            for layer in viewer.layers
            if (w := store_window(layer)) is not None
            and w.editor.path.resolve() == Path(path).resolve()
            and w.editor.name == editor.name
        ]
        for layer in windows:
            if store_window(layer).dirty(unwrap(layer).data):
                self.write(layer)  # after the write-backs under way: nothing of theirs lands after the revert
        try:
            reverted = editor.revert()
        except (StoreEditError, OSError) as exc:
            show_error(f"Reverting {path.name} failed: {exc}. Running Revert again finishes it.")
            return None
        for layer in windows:
            window = store_window(layer)
            layer.data = window.reload()
            layer.selected_label = window.next_id(scan=False)
        refresh_store_layers(viewer, Path(path))
        self.status.setText(f"Reverted {reverted} chunk(s) of {path.name} to the segmentation")
        return reverted

    def write_all(self) -> list[WriteReport]:
        """Write every window's changes into its store; return the reports of those written."""
        reports, failed = [], []
        for layer in list(self.session.viewer.layers):
            window = store_window(layer)
            if window is None or not window.dirty(unwrap(layer).data):
                continue
            report, ok = self.write(layer)  # after a write-back under way, which may have written it all
            if not ok:
                failed.append(layer.name)
            elif report is not None and report.pixels:
                reports.append(report)
        if failed:
            self.status.setText(
                f"Not written back: {', '.join(failed)} (the store refused; the layer keeps the corrections, and "
                "they are tried again at each autosave)"
            )
        elif reports:
            self.status.setText("Wrote " + "; ".join(str(r) for r in reports))
        else:
            self.status.setText("Nothing to write back")
        return reports
