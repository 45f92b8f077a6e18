"""Segment a whole image file larger than memory into an OME-Zarr on disk, in the background, from the dock.

The image layer must come from an OME-Zarr or TIFF file (``layer.source.path``, or the ``source``
this plugin's reader records): the run reads that file block by block with
:func:`napari_unet_loop.parallel.segment_to_zarr` (the same labels as ``napari-unet-loop segment
IMAGE --format zarr``), in this process, with the dock's model, thresholds, device, imaging and
object size. Memory follows the block size. An OME-Zarr Z stack goes a plane at a time
(:func:`napari_unet_loop.parallel.segment_volume_to_zarr`), its planes joined into 3D objects when
*Join planes into 3D objects* is on. When it is done, the store opens as a labels layer aligned
with the image. An interrupted (or cancelled) run is continued by running it again (its
``.partial`` folder is resumed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from ..core.errors import ModelError
from ..core.image import InputError
from ..core.planes import SegmentSettings
from ..io.chunked import JobMismatchError, partial_path
from ..io.conventions import ExportError
from ..io.images import ReadError, is_zarr_dir, output_stem
from ..io.lazy import open_lazy
from ..io.store_edits import StoreEditError, StoreEditor, StoreWindow
from ..parallel import BlockwiseResult, ClusterError, segment_to_zarr, segment_volume_to_zarr
from .layers import labels_name
from .store_edit import add_window_layer

if TYPE_CHECKING:
    from napari.layers import Image

    from .session import Session

BLOCK = 2048
#: Up to this many pixels the finished store opens as one editable layer written back into it (6144 x 6144,
#: the size above which planes go block-wise: the layer, its window and what was written are three copies).
WHOLE_WINDOW_PIXELS = 6144 * 6144
START_TEXT = "Whole image to OME-Zarr..."
START_TIP = (
    "For images larger than memory opened from an OME-Zarr or TIFF file: segment the whole file block by "
    "block into <name>.zarr in a folder you choose, in the background, then open it as a (lazy) labels "
    "layer. The same labels as `napari-unet-loop segment FILE --format zarr`; running it again "
    "continues an interrupted (or cancelled) run."
)


def source_file(layer: Image) -> Path | None:
    """The OME-Zarr folder or TIFF file an image layer was read from, if any."""
    candidates = [getattr(getattr(layer, "source", None), "path", None), (layer.metadata or {}).get("source")]
    for c in candidates:
        if not c:
            continue
        p = Path(str(c))
        if is_zarr_dir(p) or (p.is_file() and p.suffix.lower() in (".tif", ".tiff")):
            return p
    return None


def file_channel(layer: Image, chosen: int | None) -> int | None:
    """The channel of the layer's file to segment: the dock's choice, else the channel the layer shows.

    napari splits a file's channel axis into one layer per channel; the reader records which
    channel each shows (``metadata['channel']``), and a run that reads the whole file takes it.
    """
    if chosen is not None:
        return chosen
    shown = (layer.metadata or {}).get("channel")
    return int(shown) if isinstance(shown, (int, np.integer)) else None


def run_to_disk(
    source_path: Path, target: Path, model, stop: threading.Event | None = None, **settings
) -> Generator[str, None, BlockwiseResult]:
    """Run :func:`segment_to_zarr` in a thread and yield its progress lines; return its result.

    An existing partial store of the same run is resumed. Setting ``stop`` ends the run after
    the tasks under way (``result.complete`` is then False and the partial store stays).
    """
    lines: queue.Queue = queue.Queue()
    outcome: dict = {}
    partial = target.with_name(target.name + ".partial")
    halt = stop.is_set if stop is not None else None

    def work() -> None:
        try:
            src = open_lazy(source_path, stack=True)
            if src.depth > 1:  # a Z stack: a plane at a time (joined into 3D objects when asked)
                outcome["result"] = segment_volume_to_zarr(
                    src, model, target, _plane_settings(settings), stitch_z=settings.get("stitch_z"),
                    block=settings["block"], resume=partial.exists(), name=settings["name"],
                    provenance=settings["provenance"], log=lines.put, should_stop=halt,
                )  # fmt: skip
                return
            settings.pop("stitch_z", None)
            outcome["result"] = segment_to_zarr(
                src, model, target, resume=partial.exists(), log=lines.put, should_stop=halt, **settings
            )
        except BaseException as exc:  # noqa: BLE001 - handed back to the worker, which raises it
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive() or not lines.empty():
        try:
            yield lines.get(timeout=0.2)
        except queue.Empty:
            continue
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _plane_settings(settings: dict) -> SegmentSettings:
    """The dock's settings for :func:`segment_to_zarr` as the plane settings of a stack."""
    return SegmentSettings(
        device=settings["device"], tile=settings["tile"], postprocess=settings["postprocess"],
        channel=settings["channel"], modality=settings["modality"], diameter=settings["diameter"],
        tta=settings.get("tta", "auto"),
    )  # fmt: skip


class DiskRun(QWidget):
    """A row: *Whole image to OME-Zarr...*, its status, and the lazy labels layer at the end.

    Parameters
    ----------
    session : Session
        The dock's session (its choices of image, model, thresholds, device, imaging, object size).
    """

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.worker = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.button = QPushButton(START_TEXT)
        self.button.setToolTip(START_TIP)
        self.button.clicked.connect(self._clicked)
        self._stop = threading.Event()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row.addWidget(self.button)
        row.addWidget(self.status, 1)

    def _clicked(self) -> None:
        if self.worker is None:
            self.start()
        else:
            self.cancel()

    def cancel(self) -> None:
        """Stop the run after the blocks under way; what was written stays, and a new run continues it."""
        if self.worker is None:
            return
        self._stop.set()
        self.button.setEnabled(False)
        self.status.setText("Cancelling after the blocks under way...")

    def start(self, folder: str | Path | None = None):
        """Start the run into ``folder`` (asked for when omitted); return the worker or ``None``."""
        if self.worker is not None:
            show_info("A run to OME-Zarr is already going.")
            return None
        image = self.session.image_layer()
        path = source_file(image) if image is not None else None
        if path is None:
            show_error(
                "Whole image to OME-Zarr reads the image's file: open the image from an OME-Zarr folder or a TIFF "
                "file (this layer has none), or use Segment with Region set to Visible region."
            )
            return None
        try:
            model = self.session.current_model()
            settings = dict(
                block=BLOCK,
                postprocess=self.session.postprocess_config(),
                diameter=self._diameter(),
                modality=self.session.modality_choice(),
                channel=file_channel(image, self.session.image_channel(image)),
                device=str(self.session.device()),
                tile=self.session.tile_size(),
                tta=self.session.tta(),
                name=output_stem(path),
                provenance={"model_name": model.name, "input": str(path), "from": "dock"},
                stitch_z=self.session.stitch_choice(),
            )
        except (InputError, ModelError, ValueError) as exc:
            show_error(str(exc))
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder for the labels (OME-Zarr)")
            if not folder:
                return None
        target = Path(folder) / f"{output_stem(path)}.zarr"
        if target.resolve() == path.resolve():
            show_error(f"{target} is the image itself: choose another folder")
            return None
        if target.exists():
            show_error(f"{target} exists: choose another folder, or delete it first (nothing is replaced)")
            return None
        self._stop = threading.Event()
        self._target = target
        worker = create_worker(run_to_disk, path, target, model, self._stop, **settings, _start_thread=False)
        worker.yielded.connect(self._progress)
        worker.returned.connect(lambda result, image=image: self._ended(result, image))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._done)
        self.worker = worker
        self.button.setText("Cancel")
        self.button.setToolTip("Stop after the blocks under way; running it again continues from there")
        self.status.setText(f"Segmenting {path.name} into {target}...")
        worker.start()
        return worker

    def _diameter(self) -> float | None:
        d = self.session.diameter_choice()
        if d == "auto":
            raise InputError("Whole image to OME-Zarr takes the object size in pixels (Set), not Estimate")
        return d

    def _progress(self, line: str) -> None:
        self.status.setText(f"Cancelling after the blocks under way... ({line})" if self._stop.is_set() else line)

    def _ended(self, result: BlockwiseResult, image: Image) -> None:
        if result.complete:
            self._open(result.path, image)
            return
        self.status.setText(
            f"Cancelled: the blocks written so far are kept in {result.path}; "
            "'Whole image to OME-Zarr...' into the same folder continues from there"
        )

    def _open(self, store: Path, image: Image) -> None:
        from ..io.readers import read_ome_zarr

        viewer = self.session.viewer
        name = f"{labels_name(image)} (OME-Zarr)"
        for data, kwargs, kind in read_ome_zarr(store):
            if kind != "labels":
                continue
            nd = (data[0] if isinstance(data, list) else data).ndim  # 3 for a stack: (Z, Y, X)
            scale, translate = list(image.scale)[-nd:], list(image.translate)[-nd:]
            how = "to correct it, select it and use Correct region in store"
            if not isinstance(data, list) and data.size <= WHOLE_WINDOW_PIXELS:
                try:  # small enough to hold: the layer is a window over the whole store, written back as you edit
                    editor = StoreEditor(store, name=(kwargs.get("metadata") or {}).get("labels_group"))
                    window = StoreWindow(editor, (0,) * data.ndim, np.asarray(data))
                except StoreEditError as exc:
                    show_error(f"{exc}: the labels open as a layer whose edits stay in napari")
                else:
                    add_window_layer(viewer, window, name, scale, translate)
                    self.status.setText(f"Done: {store} (your corrections to it go back into it at each autosave)")
                    break
            # lazy (multiscale), or too large to hold twice: corrected a window at a time
            viewer.add_labels(data, **{**kwargs, "name": name, "scale": scale, "translate": translate})
            self.status.setText(f"Done: {store} (opened as a labels layer; {how})")
            break
        show_info(f"Labels written to {store}")

    def _failed(self, exc: BaseException) -> None:
        known = (InputError, ReadError, ClusterError, ExportError, OSError, ValueError)
        msg = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        target = getattr(self, "_target", None)
        written = target is not None and partial_path(target).exists()
        # settings or another run's leftovers: running it again fails the same way
        if written and not isinstance(exc, (InputError, ReadError, JobMismatchError)):
            self.status.setText(f"Failed: {msg} (run it again to continue what was written)")
        else:
            self.status.setText(f"Failed: {msg}")
        show_error(f"Whole image to OME-Zarr failed: {msg}")

    def _done(self) -> None:
        self.worker = None
        self.button.setText(START_TEXT)
        self.button.setToolTip(START_TIP)
        self.button.setEnabled(True)
