"""The dock widget: segment the active image with a U-Net and show instance labels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStyle,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import model_files
from ..core.axes import z_stack_of
from ..core.device import DeviceError, available_devices, resolve_device
from ..core.errors import ModelError
from ..core.image import InputError
from ..core.model_files import Model
from ..core.predict import TILE_CHOICES, TTA_AUTO_PIXELS, Progress
from ._segment_worker import Failure, Notice, PlaneResult, rethreshold_planes, segment_planes
from .autosave import Autosaver
from .correct_section import CorrectSection
from .disk_run import DiskRun
from .export_section import ExportSection
from .finetune_section import FineTuneSection
from .forms import add_rows
from .input_section import InputChoices
from .layers import (
    META_KEY,
    check_image_layer,
    current_index,
    is_helper,
    labels_of,
    read_plane,
    sample_plane,
    stack_shape,
    unwrap,
    z_position,
)
from .model_manager import ModelManager
from .region import RegionChoice, large_plane_hint, segment_window
from .restore_bar import RestoreBar
from .runs import SegmentRun
from .segment_output import IF_EDITED_CHOICES, SegmentOutput
from .session import DockCalls, Session
from .store_edit import StoreCorrections
from .thresholds_section import ThresholdChoices

if TYPE_CHECKING:
    import napari


class UNetLoopWidget(InputChoices, ThresholdChoices, RegionChoice, SegmentOutput, ModelManager, QWidget):
    """Segment the chosen image layer with a U-Net into an instance Labels layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.

    Attributes
    ----------
    session : Session
        The state the sections share (tracker, kept maps, busy state) and the dock's choices and
        actions, registered here; the Correct and Fine-tune sections get it instead of the widget.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(self.viewer, parent=self)
        self.session.register(self._dock_calls())
        self.session.training_changed.connect(self._on_training_changed)
        self._models: dict[str, Model] = {}
        self._model_paths: dict[str, Path] = {}
        self._run = SegmentRun()  # the running or last job
        self._selected_model = model_files.DEFAULT_MODEL

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.autosaver = Autosaver(self.viewer, self.tracker, parent=self)
        self.restore_bar = RestoreBar(self.autosaver)
        outer.addWidget(self.restore_bar)
        # one tab per job, so each job's controls, progress and plot are seen together
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        outer.addWidget(self.tabs)
        self.scroll = self._add_tab(
            "Segment", [self._build_input(), self._build_model(), self._build_thresholds(), self._build_run()]
        )
        self.correct_section = CorrectSection(self.session)
        self._add_tab("Correct", [self.correct_section])
        self.finetune_section = FineTuneSection(self.session)
        self._add_tab("Fine-tune", [self.finetune_section])
        self.export_section = ExportSection(self.viewer, tracker=self.tracker, write_back=self.autosaver.write_back_now)
        self._add_tab("Export", [self.export_section])

        # long layer or model names must not widen the dock: combos shrink to a few characters
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self._fit_width()

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_inserted)
        for layer in layers:
            self._on_inserted(type("Event", (), {"value": layer})())
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self.reset_choices)
            event.connect(self.export_section.reset_choices)
            event.connect(self.finetune_section.reset_choices)
            event.connect(self.correct_section.reset_choices)
        layers.selection.events.active.connect(self._follow_active)
        self.viewer.dims.events.ndim.connect(lambda e: self._update_input_state())
        self.viewer.dims.events.current_step.connect(lambda e: self._schedule_detect())
        self.reset_choices()
        self._follow_active()
        self.update_detected()

    # ------------------------------------------------------------------ session
    @property
    def tracker(self):
        """The session's edit tracker (:class:`~napari_unet_loop.gui.layers.LabelsTracker`)."""
        return self.session.tracker

    @property
    def _maps(self):
        """The session's kept probabilities, per labels layer: ``{plane index: (fg, dist, factor)}``."""
        return self.session.maps

    @property
    def _worker(self):
        """The running segmentation or re-thresholding worker (``None`` when idle), kept by the session."""
        return self.session.worker

    @_worker.setter
    def _worker(self, worker) -> None:
        self.session.worker = worker

    def _dock_calls(self) -> DockCalls:
        """The widget's choices and actions, for the sections through the session."""
        return DockCalls(
            image_layer=self.image_layer,
            image_layout=self.image_layout,
            image_channel=self.image_channel,
            channel_axis=lambda: self.channel_axis_combo.currentData(),
            modality_choice=self.modality_choice,
            diameter_choice=self.diameter_choice,
            current_model=self.current_model,
            model_name=lambda: self.model_combo.currentText(),
            model_names=self.model_names,
            device_choice=lambda: self.device_combo.value,
            postprocess_config=self.postprocess_config,
            tile_size=self.tile_size,
            tta_choice=lambda: self.tta_combo.value,
            cache_model=self.cache_model,
            select_model=self.select_model,
            segment=self.segment,
            rethreshold=self.rethreshold,
            region_choice=self.region_choice,
            stitch_choice=lambda: self.stitch_spin.value() if self.stitch_check.isChecked() else None,
            thresholds_kind=self.thresholds_kind,
        )

    def _on_training_changed(self, training: bool) -> None:
        """No segmentation while a fine-tune runs (a re-segmentation started meanwhile keeps its state)."""
        if training or self._worker is None:
            for button in (self.segment_btn, self.segment_stack_btn, self.rethreshold_btn):
                button.setEnabled(not training)
        if not training and self._worker is None:
            self._update_channels()  # Segment stack only where there is a stack

    # ------------------------------------------------------------------ building
    def _add_tab(self, title: str, sections: list[QWidget]) -> QScrollArea:
        """A tab holding ``sections`` in a scroll area that scrolls vertically only."""
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        content = QWidget()
        content.setMinimumWidth(0)
        lay = QVBoxLayout(content)
        lay.setContentsMargins(4, 4, 4, 4)
        for section in sections:
            lay.addWidget(section)
        lay.addStretch(1)
        scroll.setWidget(content)
        self.tabs.addTab(scroll, title)
        return scroll

    def _fit_width(self) -> None:
        """Be wide enough for every tab's content and a vertical scroll bar: nothing clipped on the right."""
        bar = self.style().pixelMetric(QStyle.PM_ScrollBarExtent)
        needed = 0
        for i in range(self.tabs.count()):
            scroll = self.tabs.widget(i)
            frame = self.tabs.width() - scroll.viewport().width() if self.isVisible() else 28
            needed = max(needed, scroll.widget().minimumSizeHint().width() + max(frame, bar) + 6)
        self.setMinimumWidth(max(360, needed))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """Once shown (fonts and styles applied), size the dock to its widest tab again."""
        super().showEvent(event)
        QTimer.singleShot(0, self._fit_width)

    def show_tab(self, title: str) -> None:
        """Bring the tab of one job to the front (Segment, Correct, Fine-tune, Export)."""
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i) == title:
                self.tabs.setCurrentIndex(i)
                return
        raise KeyError(title)

    def _build_model(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Shipped and user models; the last entry opens a model file")
        self.model_combo.activated.connect(self._on_model_chosen)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        self.manage_btn = QToolButton()
        self.manage_btn.setText("Manage")
        self.manage_btn.setToolTip("Import, export, rename or delete model files")
        self.manage_btn.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.manage_btn)
        menu.addAction("Import model file...", self._import_dialog)
        menu.addAction("Export model file...", self._export_dialog)
        menu.addAction("Rename...", self._rename_dialog)
        menu.addAction("Delete", self._delete_dialog)
        self.manage_btn.setMenu(menu)
        row.addWidget(self.manage_btn)
        form.addRow("Model", row)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        form.addRow(self.model_info)
        self.device_combo = ComboBox(
            choices=["auto", *available_devices()],
            label="Device",
            tooltip="auto: CUDA GPU, then Apple MPS, then CPU",
        )
        self.device_combo.changed.connect(lambda value: self._update_device_label())
        add_rows(form, self.device_combo)
        self.device_label = QLabel("")
        form.addRow(self.device_label)
        self.tile_combo = ComboBox(
            choices=[("auto", None), *((str(t), t) for t in TILE_CHOICES)],
            label="Tile size",
            tooltip="Core tile size in pixels. 'auto' picks it from free memory. Every size gives the "
            "same result: tiles overlap by half the network's receptive field.",
        )
        self.tta_combo = ComboBox(
            choices=[("auto (small images)", "auto"), ("on (4x slower)", True), ("off", False)],
            value="auto",
            label="Test-time aug.",
            tooltip="Average the network over the four flips of each tile: smoother maps, fewer false splits, "
            f"4x the network's work. auto: on images of at most {TTA_AUTO_PIXELS // 1024}K pixels as the network "
            "sees them (rescaled for the object size), where it costs a fraction of a second; off on larger ones.",
        )
        add_rows(form, self.tile_combo, self.tta_combo)
        self.refresh_models()
        self._update_device_label()
        return box

    def _build_run(self) -> QGroupBox:
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        form = QFormLayout()
        self.if_edited_combo = QComboBox()
        for key, text in IF_EDITED_CHOICES.items():
            self.if_edited_combo.addItem(text, key)
        self.if_edited_combo.setToolTip(
            "What to do when the output labels layer holds your edits. Unedited results of an "
            "earlier run are replaced in place; Ctrl+Z on the labels layer brings them back."
        )
        form.addRow("If labels were edited", self.if_edited_combo)
        form.addRow("Region", self._build_region())
        row3d = QHBoxLayout()
        self.stitch_check = QCheckBox("Join planes into 3D objects")
        self.stitch_check.setToolTip(
            "After Segment stack: objects of consecutive planes that overlap (intersection over union at "
            "least the value on the right; objects lying 90 % inside one another too) become one 3D "
            "object with one id (for Z stacks; along the axis before Y and X)"
        )
        row3d.addWidget(self.stitch_check)
        self.stitch_spin = QDoubleSpinBox()
        self.stitch_spin.setRange(0.05, 1.0)
        self.stitch_spin.setSingleStep(0.05)
        self.stitch_spin.setValue(0.5)
        self.stitch_spin.setToolTip("Smallest overlap (IoU) of two objects in consecutive planes that joins them")
        row3d.addWidget(self.stitch_spin)
        form.addRow("3D objects", row3d)
        lay.addLayout(form)
        row = QHBoxLayout()
        self.segment_btn = QPushButton("Segment")
        self.segment_btn.setToolTip("Segment the image plane on screen")
        self.segment_btn.clicked.connect(lambda: self.segment(stack=False))
        row.addWidget(self.segment_btn)
        self.segment_stack_btn = QPushButton("Segment stack")
        self.segment_stack_btn.setToolTip("Segment every plane of the stack, one after another")
        self.segment_stack_btn.clicked.connect(lambda: self.segment(stack=True))
        row.addWidget(self.segment_stack_btn)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        row.addWidget(self.progress, 1)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        row.addWidget(self.cancel_btn)
        lay.addLayout(row)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.status)
        self.disk_run = DiskRun(self.session)  # whole image files larger than memory, into OME-Zarr
        lay.addWidget(self.disk_run)
        # correct such a store a window at a time; Write back waits for the autosave's write-backs under way
        self.store_edits = StoreCorrections(self.session, self.autosaver.write_back_now)
        lay.addWidget(self.store_edits)
        return box

    # ------------------------------------------------------------------ choices
    def reset_choices(self, event=None) -> None:
        """Refresh the image layer list (napari calls this when layers change)."""
        current = self.image_combo.currentText()
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image) and not is_helper(layer)]
        names = [layer.name for layer in images]
        shown = self.shown_image()  # by identity: a renamed image stays chosen under its new name
        renamed = [layer.name for layer in images if shown is not None and unwrap(layer) is shown]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if renamed:
            self.image_combo.setCurrentText(renamed[0])
        elif current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._update_input_state()

    def _on_inserted(self, event) -> None:
        # renaming a layer must refresh every list that shows names
        layer = event.value
        for section in (self, self.correct_section, self.finetune_section, self.export_section):
            layer.events.name.connect(section.reset_choices)

    def _follow_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and not is_helper(active):  # maps and previews are not inputs
            self.image_combo.setCurrentText(active.name)
        elif isinstance(active, Labels) and not is_helper(active):  # the tools work on the layer selected
            self.correct_section.follow(active)
            self.export_section.follow(active)

    def _update_device_label(self) -> None:
        try:
            dev = resolve_device(self.device_combo.value)
            self.device_label.setText(f"Runs on: {dev}")
        except DeviceError as exc:
            self.device_label.setText(str(exc))

    def tile_size(self) -> int | None:
        """Chosen core tile size (``None``: automatic)."""
        size = self.tile_combo.value
        return None if size is None else int(size)

    # ------------------------------------------------------------------ running
    def _busy(self, busy: bool) -> None:
        for w in (self.segment_btn, self.rethreshold_btn, self.model_combo, self.device_combo.native):
            w.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        if not busy:
            self._worker = None
            self._update_channels()
        else:
            self.segment_stack_btn.setEnabled(False)

    def segment(
        self,
        stack: bool = False,
        layer: Any = None,
        new_layer_name: str | None = None,
        indices: list[tuple[int, ...]] | None = None,
        on_done=None,
    ):
        """Segment the chosen image (its current plane, or every plane when ``stack``).

        With the Region choice at Visible region or Inside the rectangle, a run of the dock's
        own (no ``layer``, ``new_layer_name`` or ``indices``) segments that part of the plane
        on screen only, into a labels layer of its size (see :mod:`.region`).

        Parameters
        ----------
        stack : bool
            Segment every plane of a stack instead of the one on screen.
        layer : napari.layers.Layer, optional
            Layer to segment instead of the one chosen in the widget.
        new_layer_name : str, optional
            Always write to a new labels layer of this name (re-segmenting after fine-tuning).
        indices : list of tuple, optional
            Planes to segment (overrides ``stack``).
        on_done : callable, optional
            Called with the output labels layer when the run finishes successfully.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker, or ``None`` when the input was refused (the reason
            is shown as a napari notification).
        """
        if self._worker is not None:
            show_warning("A segmentation is already running; wait for it or press Cancel.")
            return None
        try:
            image = check_image_layer(layer if layer is not None else self.image_layer())
            lay = self.image_layout(image)
            model = self.current_model()
            device = resolve_device(self.device_combo.value)
            pp = self.postprocess_config()
            own = layer is None and new_layer_name is None and indices is None  # the Region choice is for these
            plan = self.plan_region(image, lay, stack) if own else None
        except (InputError, ModelError, DeviceError, ValueError) as exc:
            show_error(str(exc))
            self.status.setText(f"Not started: {exc}")
            return None
        shape = stack_shape(image, lay)
        hint = large_plane_hint(image) if plan is None else None
        if hint:
            show_info(hint)
        if plan is not None:
            indices = [plan.index]
        elif indices is None and stack and shape:
            indices = [tuple(int(i) for i in ix) for ix in np.ndindex(*shape)]
        elif indices is None:
            indices = [current_index(image, lay, self.viewer.dims.point) if shape else ()]
        channel = self.image_channel(image)
        self._run = SegmentRun(
            kind="segment",
            image=image,
            layout=lay,
            model=model,
            pp=pp,
            indices=indices,
            t0=time.perf_counter(),
            tile=self.tile_size(),
            modality_setting=self.modality_combo.currentData(),
            diameter_setting=self.diameter_choice(),
            new_layer_name=new_layer_name,
            on_done=on_done,
            region=plan,
        )

        def read(index, image=image, lay=lay, window=plan.window.slices if plan else None):
            return read_plane(image, lay, index, window)

        def sample(index, max_pixels, image=image, lay=lay, window=plan.window.slices if plan else None):
            return sample_plane(image, lay, index, max_pixels, window)

        job = (segment_planes,) if plan is None else (segment_window, segment_planes, plan)
        worker = create_worker(
            *job,
            model,
            read,
            indices,
            image.rgb,
            channel,
            device,
            self.tile_size(),
            pp,
            self.tta_combo.value,
            self.modality_choice(),
            self.diameter_choice(),
            stack_of=z_stack_of(shape, z_position(image, lay)) if shape else None,
            sample=sample,
            _start_thread=False,
        )
        part = f" {plan.label()}" if plan else ""
        self._start(worker, f"Segmenting '{image.name}'{part} with {model.name} on {device}...")
        return worker

    def rethreshold(self, labels_layer: Labels | None = None):
        """Recompute the labels of the last segmentation with the widget's thresholds.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The started worker, or ``None`` if there is nothing to re-threshold.
        """
        if self._worker is not None:
            show_warning("Busy; wait for the current run or press Cancel.")
            return None
        target = labels_layer or self._last_output()
        maps = self._maps.get(unwrap(target)) if target is not None else None
        if not maps:
            show_warning(
                "Nothing to re-threshold: segment the image first. (The probabilities are kept for planes up "
                "to 6144 x 6144 pixels; larger planes are segmented block by block and keep only labels.)"
            )
            return None
        try:
            pp = self.postprocess_config()
        except ValueError as exc:
            show_error(str(exc))
            return None
        if self.tracker.is_edited(target) and not self._replace_edited():
            show_info(f"'{target.name}' holds your edits, so the new thresholds go to a new layer.")
            target = self._replacement_layer(target, np.zeros_like(target.data))
        self._run = SegmentRun(kind="rethreshold", pp=pp, indices=list(maps), target=target, t0=time.perf_counter())
        worker = create_worker(rethreshold_planes, dict(maps), pp, _start_thread=False)
        self._start(worker, f"Re-thresholding '{target.name}'...")
        return worker

    def _last_output(self) -> Labels | None:
        """The chosen image's labels layer, if the plugin keeps its probabilities."""
        layer = self._last_region_output() or labels_of(self.viewer, self.image_layer())
        return layer if layer is not None and unwrap(layer) in self._maps else None

    def _start(self, worker, message: str) -> None:
        self._worker = worker
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        worker.aborted.connect(self._on_aborted)
        worker.errored.connect(self._on_errored)
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status.setText(message)
        self._busy(True)
        worker.start()

    def cancel(self) -> None:
        """Stop the running job after the current tile batch (finished planes are kept)."""
        if self._worker is not None:
            self.status.setText("Cancelling...")
            self._worker.quit()

    def _on_yielded(self, item) -> None:
        if isinstance(item, Progress):
            if item.total:
                self.progress.setRange(0, item.total)
                self.progress.setValue(item.done)
            return
        if isinstance(item, PlaneResult):
            self._write_result(item)
        elif isinstance(item, Notice):
            show_info(item.message)
        elif isinstance(item, Failure):
            self._run.failed = True
            self.status.setText(f"Failed: {item.message}")
            show_error(item.message)

    def _on_finished(self) -> None:
        if self._worker is None:
            return
        run = self._run
        ok = not run.aborted and not run.failed
        if ok:
            self.progress.setValue(self.progress.maximum())
            self.status.setText(self._summary("Done"))
        self._busy(False)
        self.update_detected()
        callback, target = run.on_done, run.target
        if ok and target is not None and run.kind in ("segment", "rethreshold") and self.stitch_check.isChecked():
            self.stitch_stack(target)
        if ok and callback is not None and target is not None:
            callback(target)

    def stitch_stack(self, target: Labels) -> int:
        """Join the per-plane objects of a stacked labels layer into 3D objects, as one undoable step.

        Works along the stack axis just before Y and X (Z in ``ZYX`` and ``TZYX``); other stack
        axes (time) are joined separately.

        Returns
        -------
        int
            Number of 3D objects (0 when the layer has no stack axis).
        """
        from ..core.stitch import stitch_stack

        data = np.asarray(target.data)
        if data.ndim < 3 or data.shape[-3] < 2:
            return 0
        joined = stitch_stack(data, self.stitch_spin.value())
        if not self._fits(target, joined):
            show_warning(f"'{target.name}' cannot hold {int(joined.max())} 3D ids: its planes are left unjoined")
            return 0
        n = sum(int(joined[outer].max()) for outer in np.ndindex(*data.shape[:-3]))
        changed = np.nonzero(data != joined)
        with self.tracker.writing(target):
            if changed[0].size:
                with target.block_history():  # one undoable step for the whole stack
                    target.data_setitem(changed, joined[changed].astype(target.data.dtype))
            for index in np.ndindex(*data.shape[:-2]):
                self.tracker.record_output(target, index, joined[index])
        meta = dict(target.metadata.get(META_KEY, {}))
        meta["objects_3d"] = {"iou": self.stitch_spin.value()}
        target.metadata[META_KEY] = meta
        self.status.setText(self.status.text() + f" Joined into {n} 3D object(s).")
        return n

    def _on_aborted(self) -> None:
        self._run.aborted = True
        self.status.setText(self._summary("Cancelled") + " Finished planes are kept; the others are unchanged.")

    def _on_errored(self, exc: Exception) -> None:
        self._run.failed = True
        self.status.setText(f"Failed: {exc}")


__all__ = ["UNetLoopWidget"]
