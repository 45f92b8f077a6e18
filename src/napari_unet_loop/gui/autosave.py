"""Crash-safe corrections: edited labels layers are saved every minute and offered back after a crash."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QHBoxLayout, QLabel, QPushButton, QWidget

from ..core.atomic import atomic_path
from ..io.labels import write_tiff
from .layers import LabelsTracker, unwrap

if TYPE_CHECKING:
    import napari

INTERVAL_S = 60


def autosave_dir() -> Path:
    """Folder of autosaved corrections (``NAPARI_UNET_LOOP_AUTOSAVE`` overrides it)."""
    env = os.environ.get("NAPARI_UNET_LOOP_AUTOSAVE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-unet-loop", appauthor=False)) / "autosave"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"


class Autosaver:
    """Saves edited labels layers to the autosave folder every ``interval_s`` seconds.

    Every Labels layer in the viewer is tracked; a layer is written (TIFF plus a JSON
    note with its name, scale and the time) only when it changed since its last save.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    tracker : LabelsTracker
        Edit tracking shared with the dock.
    interval_s : float
        Seconds between saves.
    folder : pathlib.Path, optional
        Where to save (default :func:`autosave_dir`).
    parent : QObject, optional
        Owner of the timer (the dock widget), so the timer dies with it.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        tracker: LabelsTracker,
        interval_s: float = INTERVAL_S,
        folder=None,
        parent=None,
    ) -> None:
        self.viewer = viewer
        self.tracker = tracker
        self.folder = Path(folder) if folder else autosave_dir()
        self.session = f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.timer = QTimer(parent)
        self.timer.setInterval(int(interval_s * 1000))
        self.timer.timeout.connect(self.save_dirty)
        self.timer.start()
        self._files: dict[int, str] = {}  # layer -> file stem (unique even for equal names)
        app = QApplication.instance()
        if app is not None:  # a clean exit leaves nothing to restore; a crash leaves the autosaves
            app.aboutToQuit.connect(self.discard_session)
        viewer.layers.events.inserted.connect(self._track)
        for layer in viewer.layers:
            self._track(layer=layer)

    def _track(self, event=None, layer=None) -> None:
        layer = layer if layer is not None else event.value
        if isinstance(layer, Labels):
            self.tracker.state(layer)

    def save_dirty(self) -> list[Path]:
        """Save every labels layer edited since its last save; returns the files written."""
        written = []
        names = {layer.name for layer in self.viewer.layers}
        for layer in self.tracker.tracked():
            state = self.tracker.state(layer)
            if not state.dirty or layer.name not in names:
                continue
            try:
                written.append(self._write(layer))
                state.dirty = False
            except OSError as exc:  # a full disk must not break the session; say it once per attempt
                show_error(f"Autosave of '{layer.name}' failed: {exc}")
        return written

    def _write(self, layer: Labels) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = id(unwrap(layer))
        if key not in self._files:
            self._files[key] = f"{self.session}-{len(self._files) + 1:03d}-{_safe(layer.name)}"
        stem = self._files[key]
        data = np.asarray(layer.data)
        axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim)
        tif = write_tiff(self.folder / f"{stem}.tif", np.clip(data, 0, None), axes=axes, overwrite=True)
        note = {
            "layer": layer.name,
            "session": self.session,
            "saved": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "shape": list(data.shape),
            "scale": [float(s) for s in layer.scale],
            "translate": [float(t) for t in layer.translate],
            "file": tif.name,
        }
        with atomic_path(self.folder / f"{stem}.json") as tmp:
            tmp.write_text(json.dumps(note, indent=2))
        return tif

    def pending(self) -> list[dict]:
        """Autosaves left by other sessions (newest first), e.g. after a crash."""
        out = []
        for note_path in sorted(self.folder.glob("*.json"), reverse=True):
            try:
                note = json.loads(note_path.read_text())
            except (OSError, ValueError):
                continue
            if note.get("session") == self.session or not (self.folder / note.get("file", "")).exists():
                continue
            note["_note"] = str(note_path)
            out.append(note)
        return out

    def restore(self, note: dict) -> Labels:
        """Open an autosave as a new labels layer named ``<layer> (restored)``."""
        import tifffile

        data = tifffile.imread(self.folder / note["file"]).astype(np.int32)
        layer = self.viewer.add_labels(
            data, name=f"{note['layer']} (restored)", scale=note.get("scale"), translate=note.get("translate")
        )
        self.tracker.state(layer).dirty = True  # saved again by this session before the old copy goes
        self.save_dirty()
        self.discard(note)
        return unwrap(layer)

    def discard(self, note: dict) -> None:
        """Delete an autosave."""
        (self.folder / note["file"]).unlink(missing_ok=True)
        Path(note["_note"]).unlink(missing_ok=True)

    def discard_session(self) -> None:
        """Delete this session's autosaves (on a clean exit) and stop the timer."""
        self.timer.stop()
        for note_path in self.folder.glob(f"{self.session}-*.json"):
            note_path.unlink(missing_ok=True)
        for tif in self.folder.glob(f"{self.session}-*.tif"):
            tif.unlink(missing_ok=True)


class RestoreBar(QWidget):
    """A line offering autosaved corrections from an earlier session: Restore or Discard."""

    def __init__(self, autosaver: Autosaver) -> None:
        super().__init__()
        self.autosaver = autosaver
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        row.addWidget(self.label, 1)
        self.restore_btn = QPushButton("Restore")
        self.restore_btn.clicked.connect(self.restore_all)
        row.addWidget(self.restore_btn)
        self.discard_btn = QPushButton("Discard")
        self.discard_btn.clicked.connect(self.discard_all)
        row.addWidget(self.discard_btn)
        self.refresh()

    def refresh(self) -> None:
        """Show the bar only when there are autosaves to restore."""
        notes = self.autosaver.pending()
        if notes:
            names = ", ".join(f"'{n['layer']}'" for n in notes[:3]) + (" ..." if len(notes) > 3 else "")
            self.label.setText(f"Unsaved corrections from an earlier session ({notes[0]['saved'][:16]}): {names}")
        self.setVisible(bool(notes))

    def restore_all(self) -> None:
        """Open every autosave as a labels layer."""
        notes = self.autosaver.pending()
        for note in notes:
            self.autosaver.restore(note)
        show_info(f"Restored {len(notes)} labels layer(s) from the autosave folder.")
        self.refresh()

    def discard_all(self) -> None:
        """Delete every autosave of earlier sessions."""
        for note in self.autosaver.pending():
            self.autosaver.discard(note)
        self.refresh()
