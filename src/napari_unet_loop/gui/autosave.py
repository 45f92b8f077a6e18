"""Crash-safe corrections: edited labels layers are saved every minute and offered back after a crash.

Quitting napari cleanly keeps the autosaves of layers whose corrections were never exported as they
are now (napari does not ask about unsaved layers when it closes): the next session offers them too.
Those written as they are (the dock's Export, File > Save with this plugin's writers:
:func:`~napari_unet_loop.io.export.written_as_they_are`) go, and so does a layer the user closed while
napari runs on.
napari removes every layer before it quits, so the autosave of a closed layer with corrections not
exported is deleted only after :data:`CLOSE_GRACE_MS`, unless napari quit or the viewer closed meanwhile.

Each running session holds a lock on ``<session>.lock`` in the autosave folder while it has
autosaves there (the operating system drops the lock when the process dies), so autosaves of a
session that still runs, in another process or in another viewer of this one, are never offered
for restore nor deleted. The JSON note of an autosave is written before its TIFF, and a TIFF
without a note is offered too, so no crash hides an autosave.
"""

from __future__ import annotations

import datetime as _dt
import errno
import itertools
import json
import os
import queue
import re
import socket
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QApplication

from ..core.atomic import atomic_path
from ..io.conventions import _json_safe
from ..io.export import labels_checksum, written_as_they_are
from ..io.labels import write_tiff
from .layers import META_KEY, LabelsTracker, unwrap
from .store_edit import refresh_store_layers, store_window, write_back

if TYPE_CHECKING:
    import napari

    from ..io.store_edits import WriteReport

INTERVAL_S = 60
# a labels layer closed with corrections not exported: its autosave goes after this long, if napari runs on
CLOSE_GRACE_MS = 3000

# sessions of this process that are running (their autosaves belong to a live viewer)
_LIVE: weakref.WeakValueDictionary[str, Autosaver] = weakref.WeakValueDictionary()
# <session>-<number>-<layer name>: the session is <date>-<time>-<6 hex digits>
_STEM = re.compile(r"^(\d{8}-\d{6}-[0-9a-f]{6})-\d{3,}-(.*)$")


def autosave_dir() -> Path:
    """Folder of autosaved corrections (``NAPARI_UNET_LOOP_AUTOSAVE`` overrides it)."""
    env = os.environ.get("NAPARI_UNET_LOOP_AUTOSAVE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-unet-loop", appauthor=False)) / "autosave"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "labels"


def _history(layer: Labels) -> tuple[int, int] | None:
    """Lengths of the layer's undo and redo queues: every undo or redo changes them."""
    try:
        return len(layer._undo_history), len(layer._redo_history)
    except (AttributeError, TypeError):  # another napari: the redraw events and the checksum remain
        return None


def _try_lock(fh) -> bool | None:
    """Take an exclusive lock on an open file without waiting.

    Returns
    -------
    bool or None
        True if taken, False if another open file holds it, None if the file system cannot lock.
    """
    try:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if isinstance(exc, BlockingIOError) or exc.errno in (errno.EACCES, errno.EAGAIN, errno.EDEADLK):
            return False
        return None
    return True


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no such process, no psutil, no permission
        return None


def _pid_alive(info: dict) -> bool:
    """Whether the process that wrote a lock file still runs (for file systems without locks)."""
    if info.get("host") != socket.gethostname():
        return True  # cannot tell: leave it alone
    pid = info.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False  # this process: its running sessions are in _LIVE
    started = _process_started(pid)
    if started is None:
        return False
    recorded = info.get("started")
    return recorded is None or abs(started - recorded) < 1.0  # not a new process with a reused id


class _Done(QObject):
    """Carries the end of a background write-back to the main thread."""

    done = Signal()


@dataclass
class _Saved:
    """Autosave bookkeeping of one labels layer."""

    stem: str
    checksum: tuple | None = None  # of the data last saved
    history: tuple[int, int] | None = None  # undo/redo queue lengths when last saved or checked
    redrawn: bool = False  # redrawn since then (an undo redraws the layer)
    failed: bool = False  # a failure was reported (once, until a save succeeds)
    store_failed: bool = False  # a store window's write-back failed (reported once, until one succeeds)
    supersedes: list = field(default_factory=list)  # notes of autosaves this layer was restored from


class Autosaver:
    """Saves edited labels layers to the autosave folder every ``interval_s`` seconds.

    Every Labels layer in the viewer is tracked; a layer is written (a JSON note with
    its name, scale and the time, then the TIFF) only when it changed since its last
    save. Edits arrive as events; an undo or redo sends none, so a layer saved before
    is also compared (by checksum) with what was saved whenever it was redrawn or its
    undo history moved. A layer that cannot be saved is reported once and retried;
    the others are saved regardless.

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
        # the viewer (or the dock) closed while napari runs on: the session ends as at a quit, and other
        # viewers may restore the autosaves it keeps
        self.timer.destroyed.connect(self._viewer_closed)
        self._saved: weakref.WeakKeyDictionary[Labels, _Saved] = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)  # file stems stay unique even for equal layer names
        self._superseded: set[str] = set()  # TIFFs restored here, deleted once saved again
        self._kept: set[str] = set()  # autosaves of store windows closed while their store refused: never discarded
        self._closing: set[str] = set()  # autosaves of layers closed with corrections not exported (for now)
        self._ended = False  # the session ended (napari quit, or the viewer closed): what it kept stays
        self._jobs: dict[int, threading.Thread] = {}  # store windows being written back, by id
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._signal = _Done(parent)
        self._signal.done.connect(self._drain)
        self._lock = None
        app = QApplication.instance()
        if app is not None:  # a clean exit leaves nothing to restore; a crash leaves the autosaves
            app.aboutToQuit.connect(self.discard_session)
        viewer.layers.events.inserted.connect(self._track)
        viewer.layers.events.removed.connect(self._forget)
        for layer in viewer.layers:
            self._track(layer=layer)

    def _forget(self, event) -> None:
        """A layer the user removed is not offered back after a crash: its autosave goes with it."""
        layer = event.value
        if not isinstance(layer, Labels) or self._ended:
            return  # after a quit or the viewer's close, what the session kept stays
        # a store window closed: its last changes go into its store (else its autosave stays)
        keep = self._store_windows_out([layer])
        self._kept |= keep  # offered after a restart, even after a clean quit
        unexported = self._unexported_out([layer])
        rec = self._saved.pop(unwrap(layer), None)
        if rec is None or rec.stem in keep:
            return
        if rec.stem in unexported:  # napari closing removes every layer: wait to see whether it quits
            self._closing.add(rec.stem)
            QTimer.singleShot(CLOSE_GRACE_MS, lambda stem=rec.stem: self._drop_closed(stem))
            return
        self._delete(rec.stem)

    def _delete(self, stem: str) -> None:
        for suffix in (".tif", ".json"):
            (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)

    def _drop_closed(self, stem: str) -> None:
        """The autosave of a layer closed while napari ran on goes (not when napari quit or the viewer closed)."""
        if self._ended or stem not in self._closing:
            return
        self._closing.discard(stem)
        self._delete(stem)

    def _viewer_closed(self, *args) -> None:
        """The dock and its timer went with the viewer: the session ends as at a quit (napari may run on).

        The autosaves of corrections not exported stay, and other viewers may now restore them.
        """
        self.discard_session()

    def _track(self, event=None, layer=None) -> None:
        layer = layer if layer is not None else event.value
        if isinstance(layer, Labels):
            self.tracker.state(layer)

    def _record(self, layer: Labels) -> _Saved:
        layer = unwrap(layer)
        rec = self._saved.get(layer)
        if rec is None:
            rec = _Saved(f"{self.session}-{next(self._numbers):03d}-{_safe(layer.name)}")
            self._saved[layer] = rec

            def redrawn(event=None, rec=rec) -> None:
                rec.redrawn = True

            # an undo redraws a visible layer; showing a hidden one redraws it too
            for name in ("set_data", "reload", "labels_update", "visible"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    emitter.connect(redrawn)
        return rec

    def _changed(self, layer: Labels, rec: _Saved) -> bool:
        """Whether a layer saved before differs from its autosave although no edit event came."""
        if rec.checksum is None:
            return False
        history = _history(layer)
        if not rec.redrawn and history == rec.history:
            return False
        rec.redrawn, rec.history = False, history
        return labels_checksum(np.asarray(layer.data)) != rec.checksum

    def save_dirty(self) -> list[Path]:
        """Save every labels layer edited since its last save; returns the files written."""
        written = []
        present = {id(unwrap(layer)) for layer in self.viewer.layers}  # by identity: a removed layer's name
        for layer in self.tracker.tracked():  # may be taken again by a new one, whose autosave it is not
            if id(unwrap(layer)) not in present:
                continue
            state = self.tracker.state(layer)
            window = store_window(layer)
            if window is not None:  # a window of an OME-Zarr store: the store is its autosave
                if id(window) in self._jobs:
                    continue  # its write-back is under way: the next tick looks again
                if not window.dirty(unwrap(layer).data):
                    state.dirty = False
                    continue
                self._start_write_back(layer, window)  # in the background: the viewer stays responsive
                refused = self._saved.get(layer)
                if refused is None or not refused.store_failed:
                    state.dirty = False
                    continue
                state.dirty = True  # the store refused last time: a TIFF autosave keeps them meanwhile
            rec = self._saved.get(layer)
            if not state.dirty and rec is not None and self._changed(layer, rec):
                state.dirty = True  # an undo or redo: napari sends no edit event for them
            if not state.dirty:
                continue
            try:
                written.append(self._save(layer))
            except Exception as exc:  # one layer must not stop the others' autosave
                self._report(layer, exc)
                continue
            state.dirty = False
        return written

    def _start_write_back(self, layer: Labels, window) -> None:
        """Write a store window's changes back in a thread, from a copy of the layer taken now.

        Edits made meanwhile stay in the layer and are written at a later tick. The outcome
        comes back to the main thread (:meth:`_drain`).
        """
        data = np.array(unwrap(layer).data, copy=True)
        ref = weakref.ref(unwrap(layer))

        def work() -> None:
            try:
                outcome = (window.write_back(data), None)
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it
                outcome = (None, exc)
            self._results.put((ref, window, *outcome))
            try:
                self._signal.done.emit()
            except RuntimeError:  # the dock went: finish_write_backs or the next tick drains
                pass

        thread = threading.Thread(target=work, name="store write-back", daemon=True)
        self._jobs[id(window)] = thread
        thread.start()

    def _drain(self) -> None:
        """Handle the write-backs that ended (in the main thread)."""
        while True:
            try:
                ref, window, report, exc = self._results.get_nowait()
            except queue.Empty:
                return
            self._jobs.pop(id(window), None)
            layer = ref()
            if layer is not None:
                self._written_back(layer, report, exc)

    def finish_write_backs(self) -> None:
        """Wait for the write-backs under way and handle their outcome (before another write of the same store)."""
        for thread in list(self._jobs.values()):
            thread.join()
        self._drain()

    def _written_back(self, layer: Labels, report, exc: Exception | None) -> bool:
        """After a write-back: report a failure once; after a success drop a TIFF kept meanwhile and redraw.

        A TIFF autosave kept while the store refused is deleted once the store holds the
        corrections, so a crash never offers the older copy.
        """
        rec = self._record(layer)
        if exc is not None:
            if not rec.store_failed:  # once, not every minute; it is retried at every tick
                rec.store_failed = True
                show_error(
                    f"Writing '{layer.name}' back to its OME-Zarr store failed: {exc}. The corrections are "
                    "autosaved meanwhile, and written back as soon as the store can take them."
                )
            try:  # nothing lost meanwhile: a TIFF autosave, now
                self._save(layer)
            except Exception as error:  # noqa: BLE001 - reported once, retried at every tick
                self._report(layer, error)
            return False
        if rec.store_failed or rec.checksum is not None:  # a TIFF autosave from a tick the store refused
            for suffix in (".tif", ".json"):
                (self.folder / f"{rec.stem}{suffix}").unlink(missing_ok=True)
            rec.checksum = None
        rec.store_failed = False
        if report is not None and report.pixels:
            try:
                refresh_store_layers(self.viewer, store_window(layer).editor.path)
            except Exception:  # noqa: BLE001 - a redraw must never stop the autosave
                pass
        return True

    def write_back_now(self, layer: Labels) -> tuple[WriteReport | None, bool]:
        """Write a store window's changes into its store now, after the write-backs under way.

        The one way the dock writes a window back outside the autosave tick (*Write back*,
        closing the layer, quitting napari), with the tick's rules: a store that refuses is
        reported once and the corrections are autosaved as a TIFF meanwhile; a store that
        takes them drops that TIFF and has its layers redrawn.

        Returns
        -------
        tuple
            The :class:`~napari_unet_loop.io.store_edits.WriteReport` (``None`` when nothing was
            written) and whether the store holds the corrections.
        """
        self.finish_write_backs()
        try:
            report, exc = write_back(layer), None
        except Exception as error:  # noqa: BLE001 - a full disk, a damaged chunk...: the layer keeps the corrections
            report, exc = None, error
        return report, self._written_back(layer, report, exc)

    def _store_windows_out(self, layers) -> set[str]:
        """Write back the store windows among ``layers`` with changes; return the stems of TIFFs to keep.

        A window whose store refuses is saved as a TIFF autosave instead, which is kept (offered
        after a restart), and the user is told. When that save fails too, an autosave from an
        earlier tick is still kept, and the user is told its newest corrections are lost.
        """
        keep: set[str] = set()
        for layer in layers:
            window = store_window(layer)
            if window is None:
                continue
            try:
                dirty = window.dirty(unwrap(layer).data)
            except Exception:  # noqa: BLE001 - a store gone missing: keep the corrections
                dirty = True
            if not dirty or self.write_back_now(layer)[1]:
                continue
            rec = self._record(layer)
            older = (self.folder / f"{rec.stem}.tif").exists()
            if rec.failed:  # write_back_now's TIFF autosave failed too (the record says so, not the file)
                kept = ""
                if older:
                    keep.add(rec.stem)
                    kept = "; an earlier autosave of it is kept, offered for restore when napari starts again"
                show_error(f"'{layer.name}': its latest corrections could not be written back nor autosaved{kept}")
                continue
            keep.add(rec.stem)
            show_error(
                f"'{layer.name}' could not be written back into its store: its corrections are kept as an "
                "autosave, offered for restore when napari starts again"
            )
        return keep

    def _record_edits(self, layer: Labels) -> None:
        """Keep the edit history in the layer's metadata, so File > Save records it too (as of this save)."""
        from .export_section import edit_history

        try:
            history = edit_history(layer, self.tracker)
        except Exception:  # noqa: BLE001 - a summary must never stop the autosave
            return
        meta = dict(layer.metadata.get(META_KEY, {}))
        meta["edits"] = history
        layer.metadata[META_KEY] = meta

    def _report(self, layer: Labels, exc: Exception) -> None:
        rec = self._record(layer)
        if not rec.failed:  # once per layer, not every minute; it is retried at every tick
            rec.failed = True
            show_error(f"Autosave of '{layer.name}' failed: {exc}. Other layers are still autosaved.")

    def _save(self, layer: Labels) -> Path:
        rec = self._record(layer)
        tif = self._write(layer, rec)
        self._record_edits(layer)
        rec.failed = False
        for note in rec.supersedes:  # the restored copy is safe now: the old autosave may go
            self.discard(note)
            self._superseded.discard(note["file"])
        rec.supersedes.clear()
        return tif

    def _write(self, layer: Labels, rec: _Saved) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._hold_lock()
        layer = unwrap(layer)
        data = np.asarray(layer.data)
        axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim)
        note = {
            "layer": layer.name,
            "session": self.session,
            "saved": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "shape": list(data.shape),
            "scale": [float(s) for s in layer.scale],
            "translate": [float(t) for t in layer.translate],
            # what File > Save would record: the plugin's provenance (model, thresholds, joined planes) and units
            "metadata": _json_safe(dict(layer.metadata.get(META_KEY, {}))),
            "units": [str(u) for u in (getattr(layer, "units", None) or ())],
            "axis_labels": [str(a) for a in (getattr(layer, "axis_labels", None) or ())],
            "file": f"{rec.stem}.tif",
        }
        # the note first: a crash between the two leaves the TIFF with its note (or an old TIFF)
        with atomic_path(self.folder / f"{rec.stem}.json") as tmp:
            tmp.write_text(json.dumps(note, indent=2))
        tif = write_tiff(self.folder / note["file"], np.clip(data, 0, None), axes=axes, overwrite=True)
        rec.checksum, rec.history, rec.redrawn = labels_checksum(data), _history(layer), False
        return tif

    def _hold_lock(self) -> None:
        """Lock ``<session>.lock``: other sessions leave the autosaves of a running one alone."""
        if self._lock is not None:
            return
        path = self.folder / f"{self.session}.lock"
        fh = open(path, "w+b")  # held open while the session runs
        try:
            info = {"pid": os.getpid(), "started": _process_started(os.getpid()), "host": socket.gethostname()}
            fh.write(json.dumps(info).encode())
            fh.flush()
            if _try_lock(fh) is False:
                raise OSError(f"{path} is locked by another process")
        except BaseException:
            fh.close()
            raise
        self._lock = fh
        _LIVE[self.session] = self

    def _release_lock(self, *args) -> None:
        """Let go of the session's lock (the autosaves stay; other sessions may restore them)."""
        _LIVE.pop(self.session, None)
        fh, self._lock = self._lock, None
        if fh is not None:
            fh.close()

    def _is_live(self, session: str) -> bool:
        """Whether another running session (in any process) owns these autosaves."""
        if session == self.session or session in _LIVE:
            return True
        path = self.folder / f"{session}.lock"
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: leave them alone
        with fh:
            locked = _try_lock(fh)
            if locked is not None:
                return not locked  # closing the file lets go of a lock just taken
            try:
                info = json.loads(fh.read().decode() or "{}")
            except (OSError, ValueError):
                return True
            return _pid_alive(info) if isinstance(info, dict) else True

    def pending(self) -> list[dict]:
        """Autosaves left by sessions that no longer run (newest first), e.g. after a crash.

        A TIFF whose note is missing is offered too (named after its file).
        """
        try:
            tifs = sorted((p for p in self.folder.glob("*.tif") if not p.name.startswith(".")), reverse=True)
        except OSError:
            return []
        live: dict[str, bool] = {}
        out = []
        for tif in tifs:
            if tif.name in self._superseded:
                continue  # restored here already; goes once the restored layer is saved
            note_path = tif.with_suffix(".json")
            try:
                note = json.loads(note_path.read_text())
                if not isinstance(note, dict):
                    note = {}
            except (OSError, ValueError):
                note = {}
            m = _STEM.match(tif.stem)
            session = str(note.get("session") or (m.group(1) if m else ""))
            if session not in live:
                live[session] = self._is_live(session)
            if live[session]:
                continue
            if not note.get("layer"):
                try:
                    mtime = _dt.datetime.fromtimestamp(tif.stat().st_mtime).astimezone()
                except OSError:
                    continue
                note = {
                    "layer": m.group(2) if m else tif.stem,
                    "session": session,
                    "saved": mtime.isoformat(timespec="seconds"),
                }
            note["file"] = tif.name
            note["_note"] = str(note_path)
            out.append(note)
        return out

    def restore(self, note: dict) -> Labels:
        """Open an autosave as a new labels layer named ``<layer> (restored)``.

        The autosave is deleted only once this session has saved the restored layer;
        if that fails it stays (and is no longer offered here) and saving is retried.
        """
        import tifffile

        data = tifffile.imread(self.folder / note["file"])
        data = data.astype(np.int32 if data.max(initial=0) <= np.iinfo(np.int32).max else np.int64)
        kwargs: dict = {"scale": note.get("scale"), "translate": note.get("translate")}
        if isinstance(note.get("metadata"), dict) and note["metadata"]:
            kwargs["metadata"] = {META_KEY: note["metadata"]}
        for key in ("units", "axis_labels"):  # autosaves of earlier versions have neither
            if isinstance(note.get(key), list) and len(note[key]) == data.ndim:
                kwargs[key] = note[key]
        layer = unwrap(self.viewer.add_labels(data, name=f"{note['layer']} (restored)", **kwargs))
        state = self.tracker.state(layer)
        state.dirty = True
        self._record(layer).supersedes.append(note)
        self._superseded.add(note["file"])
        try:
            self._save(layer)
            state.dirty = False
        except Exception as exc:  # reported; the old autosave stays
            self._report(layer, exc)
        return layer

    def discard(self, note: dict) -> None:
        """Delete an autosave (and what its session left, once none of its autosaves remain)."""
        (self.folder / note["file"]).unlink(missing_ok=True)
        Path(note["_note"]).unlink(missing_ok=True)
        m = _STEM.match(Path(note["file"]).stem)
        session = note.get("session") or (m.group(1) if m else None)
        if not session or self._is_live(session) or any(self.folder.glob(f"{session}-*.tif")):
            return
        for leftover in self.folder.glob(f"{session}-*.json"):  # notes whose TIFF never came
            leftover.unlink(missing_ok=True)
        (self.folder / f"{session}.lock").unlink(missing_ok=True)

    def _unexported_out(self, layers) -> set[str]:
        """Autosave the layers among ``layers`` with corrections not exported as they are; return their stems.

        A layer holds corrections when it was autosaved in this session (an edit, or a restore)
        or was edited since the last tick. Those written as they are now to a TIFF, PNG or OME-Zarr
        file (the dock's Export, or File > Save with this plugin's writers) need no autosave. When
        the last save fails, an autosave from an earlier tick is still kept.
        """
        keep: set[str] = set()
        present = {id(unwrap(layer)) for layer in layers}
        for layer in self.tracker.tracked():
            if id(unwrap(layer)) not in present or store_window(layer) is not None:
                continue  # a store window's store holds its corrections (_store_windows_out)
            rec, state = self._saved.get(unwrap(layer)), self.tracker.state(layer)
            if not state.dirty and (rec is None or rec.checksum is None):
                continue  # never edited here, or its autosave went with a write-back
            try:
                data = np.asarray(unwrap(layer).data)
                now = labels_checksum(data)
                if written_as_they_are(data, now):  # exported, or saved with File > Save, as they are now
                    continue
                if state.dirty or rec is None or rec.checksum != now:
                    self._save(layer)
                    state.dirty = False
            except Exception as exc:  # noqa: BLE001 - the earlier autosave, if any, is better than none
                self._report(layer, exc)
            rec = self._saved.get(unwrap(layer))
            if rec is not None and (self.folder / f"{rec.stem}.tif").exists():
                keep.add(rec.stem)
        return keep

    def discard_session(self) -> None:
        """On a clean exit: keep the autosaves of corrections not exported, delete the rest, stop the timer.

        napari closes without asking about unsaved layers, so corrections that were never
        exported as they are stay in the autosave folder and are offered by the next session.
        """
        if self._ended:
            return  # ended already (the viewer closed, then napari quit): what it kept stays
        self._ended = True
        try:
            self.timer.stop()
        except RuntimeError:  # the dock (owner of the timer) is gone already
            pass
        keep, unsure = self._kept | self._closing, False
        for out in (self._store_windows_out, self._unexported_out):  # store windows: into their stores first
            try:
                keep |= out(list(self.viewer.layers))
            except Exception:  # noqa: BLE001 - the viewer half gone: nothing of this session is deleted
                unsure = True
        self._kept |= keep
        if not unsure:
            for note_path in self.folder.glob(f"{self.session}-*.json"):
                if note_path.stem not in keep:
                    note_path.unlink(missing_ok=True)
            for tif in self.folder.glob(f"{self.session}-*.tif"):
                if tif.stem not in keep:
                    tif.unlink(missing_ok=True)
        self._release_lock()
        (self.folder / f"{self.session}.lock").unlink(missing_ok=True)
