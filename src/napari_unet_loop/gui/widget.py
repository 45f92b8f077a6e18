"""The dock widget: segment the active image with a U-Net and show instance labels."""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
    QSpinBox,
    QStyle,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import model_files
from ..core.device import DeviceError, available_devices, resolve_device
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.modality import ModalityReport, detect
from ..core.model_files import Model, ModelError
from ..core.postprocess import PostprocessConfig
from ..core.predict import TILE_CHOICES, Progress
from ._segment_worker import Failure, Notice, PlaneResult, rethreshold_planes, segment_planes
from .autosave import Autosaver, RestoreBar
from .correct_section import CorrectSection
from .diameter import DiameterRow
from .export_section import ExportSection
from .finetune_section import FineTuneSection
from .layers import (
    META_KEY,
    RESEGMENTED,
    LabelsTracker,
    Layout,
    check_image_layer,
    current_index,
    is_helper,
    layout,
    out_transform,
    plane_sample,
    plane_shape,
    read_plane,
    show_map,
    stack_shape,
    unwrap,
    write_plane,
)
from .model_manager import ModelManager

if TYPE_CHECKING:
    import napari

IF_EDITED_NEW = "make a new layer"
IF_EDITED_REPLACE = "replace it (Ctrl+Z undoes)"
# the Imaging choices: (shown text, value); "auto" means the model's own setting
IMAGING_CHOICES = (
    ("Auto", "auto"),
    ("Fluorescence", "fluorescence"),
    ("Brightfield", "brightfield"),
    ("H&E (stained tissue)", "he"),
    ("As is (no conversion)", "none"),
)


class UNetLoopWidget(ModelManager, QWidget):
    """Segment the chosen image layer with a U-Net into an instance Labels layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.tracker = LabelsTracker()
        self._worker = None
        self._models: dict[str, Model] = {}
        self._model_paths: dict[str, Path] = {}
        # per labels layer: {plane index: (foreground probability, distance)} for re-thresholding
        self._maps: weakref.WeakKeyDictionary[Labels, dict] = weakref.WeakKeyDictionary()
        self._run: dict[str, Any] = {}
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
        self.correct_section = CorrectSection(self)
        self._add_tab("Correct", [self.correct_section])
        self.finetune_section = FineTuneSection(self)
        self._add_tab("Fine-tune", [self.finetune_section])
        self.export_section = ExportSection(self.viewer, tracker=self.tracker)
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

    def _build_input(self) -> QGroupBox:
        box = QGroupBox("Input")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to segment (follows the layer you select)")
        self.image_combo.currentIndexChanged.connect(lambda i: self._update_input_state())
        form.addRow("Image", self.image_combo)
        self.channel_axis_combo = QComboBox()
        self.channel_axis_combo.setToolTip(
            "Axis of the layer that holds channels (leave 'none' for grey or RGB images)"
        )
        self.channel_axis_combo.currentIndexChanged.connect(lambda i: self._update_channels())
        form.addRow("Channel axis", self.channel_axis_combo)
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip("Channel to segment; for RGB images the mean of R, G and B by default")
        form.addRow("Channel", self.channel_combo)
        self.shape_label = QLabel("")
        self.shape_label.setWordWrap(True)
        form.addRow(self.shape_label)
        self.modality_combo = QComboBox()
        for text, value in IMAGING_CHOICES:
            self.modality_combo.addItem(text, value)
        self.modality_combo.setToolTip(
            "How the image was taken. The network sees nuclei as bright objects on a dark background: "
            "brightfield images are inverted, and for H&E (stained tissue) the haematoxylin (nuclear "
            "stain) channel is used.\n"
            "Auto: the model's setting (models that support it detect each image's kind; the line "
            "below shows what was detected).\n"
            "Fluorescence / Brightfield / H&E: override the detection.\n"
            "As is: feed the grey image without conversion.\n"
            "Applies to every image this dock segments or fine-tunes on."
        )
        self.modality_combo.currentIndexChanged.connect(lambda i: self._schedule_detect())
        form.addRow("Imaging", self.modality_combo)
        self.modality_label = QLabel("")
        self.modality_label.setWordWrap(True)
        form.addRow(self.modality_label)
        self.diameter_row = DiameterRow(self._measured_labels, self._model_diameter)
        form.addRow("Object size", self.diameter_row)
        # detection reads a subsample of the plane on screen: run it once after a burst of changes
        self._detect_timer = QTimer(self)
        self._detect_timer.setSingleShot(True)
        self._detect_timer.setInterval(150)
        self._detect_timer.timeout.connect(self.update_detected)
        self.channel_combo.currentIndexChanged.connect(lambda i: self._schedule_detect())
        return box

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
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.device_combo.setToolTip("auto: CUDA GPU, then Apple MPS, then CPU")
        self.device_combo.currentIndexChanged.connect(lambda i: self._update_device_label())
        form.addRow("Device", self.device_combo)
        self.device_label = QLabel("")
        form.addRow(self.device_label)
        self.tile_combo = QComboBox()
        self.tile_combo.addItems(["auto", *[str(t) for t in TILE_CHOICES]])
        self.tile_combo.setToolTip(
            "Core tile size in pixels. 'auto' picks it from free memory. Every size gives the "
            "same result: tiles overlap by half the network's receptive field."
        )
        form.addRow("Tile size", self.tile_combo)
        self.tta_check = QCheckBox("Test-time augmentation (4x slower)")
        self.tta_check.setToolTip("Average the network over the four flips of each tile: smoother, fewer false splits")
        form.addRow(self.tta_check)
        self.refresh_models()
        self._update_device_label()
        return box

    def _build_thresholds(self) -> QGroupBox:
        box = QGroupBox("Instances")
        form = QFormLayout(box)
        self.fg_spin = QDoubleSpinBox()
        self.fg_spin.setRange(0.05, 0.95)
        self.fg_spin.setSingleStep(0.05)
        self.fg_spin.setToolTip("Foreground probability above which a pixel belongs to an object")
        form.addRow("Foreground threshold", self.fg_spin)
        self.seed_spin = QDoubleSpinBox()
        self.seed_spin.setRange(0.05, 0.95)
        self.seed_spin.setSingleStep(0.05)
        self.seed_spin.setToolTip("Distance-map level that seeds one object each: higher splits less")
        form.addRow("Seed threshold", self.seed_spin)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 100000)
        self.min_size_spin.setToolTip("Objects with fewer pixels are removed")
        form.addRow("Minimum size (px)", self.min_size_spin)
        self.sigma_spin = QDoubleSpinBox()
        self.sigma_spin.setRange(0.0, 10.0)
        self.sigma_spin.setSingleStep(0.5)
        self.sigma_spin.setToolTip("Smooth the distance map before seeding (pixels): fewer splits of large objects")
        form.addRow("Seed smoothing (px)", self.sigma_spin)
        row = QHBoxLayout()
        self.rethreshold_btn = QPushButton("Apply thresholds")
        self.rethreshold_btn.setToolTip(
            "Recompute the labels of the last segmentation with these thresholds, without the network"
        )
        self.rethreshold_btn.clicked.connect(lambda: self.rethreshold())
        row.addWidget(self.rethreshold_btn)
        self.defaults_btn = QPushButton("Model defaults")
        self.defaults_btn.setToolTip("Reset the thresholds to the values stored with the model")
        self.defaults_btn.clicked.connect(self._reset_thresholds)
        row.addWidget(self.defaults_btn)
        form.addRow(row)
        self.show_maps_check = QCheckBox("Show probability maps")
        self.show_maps_check.setToolTip("Add the foreground probability and distance map as image layers")
        form.addRow(self.show_maps_check)
        self._reset_thresholds()
        return box

    def _build_run(self) -> QGroupBox:
        box = QGroupBox("Segment")
        lay = QVBoxLayout(box)
        form = QFormLayout()
        self.if_edited_combo = QComboBox()
        self.if_edited_combo.addItems([IF_EDITED_NEW, IF_EDITED_REPLACE])
        self.if_edited_combo.setToolTip(
            "What to do when the output labels layer holds your edits. Unedited results of an "
            "earlier run are replaced in place; Ctrl+Z on the labels layer brings them back."
        )
        form.addRow("If labels were edited", self.if_edited_combo)
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
        return box

    # ------------------------------------------------------------------ choices
    def reset_choices(self, event=None) -> None:
        """Refresh the image layer list (napari calls this when layers change)."""
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and not is_helper(layer)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
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

    def image_layer(self) -> Image | None:
        """The chosen image layer (``None`` when there is none)."""
        name = self.image_combo.currentText()
        if name and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            return layer if isinstance(layer, Image) else None
        return None

    def is_dock_image(self, image: Image) -> bool:
        """Whether ``image`` is the one chosen in the dock: the dock's channel settings belong to it."""
        chosen = self.image_layer()
        return chosen is not None and unwrap(chosen) is unwrap(image)

    def image_layout(self, image: Image) -> Layout:
        """The axes of ``image``, with the dock's channel axis when it is the dock's image."""
        return layout(image, self.channel_axis_combo.currentData() if self.is_dock_image(image) else None)

    def image_channel(self, image: Image) -> int | None:
        """The dock's channel choice for ``image`` (``None``: another image, or nothing to choose)."""
        return self.channel_combo.currentData() if self.is_dock_image(image) else None

    def _measured_labels(self) -> Labels | None:
        """The labels layer the object size is measured on: the selected one, else the image's."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            return active
        image = self.image_layer()
        name = f"{image.name} labels" if image is not None else None
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        return layer if isinstance(layer, Labels) else None

    def _model_diameter(self) -> float | None:
        try:
            return self.current_model().image_diameter
        except ModelError:
            return None

    def diameter_choice(self) -> float | str | None:
        """The Object size choice: ``None`` (the model's), pixels, or ``"auto"``."""
        return self.diameter_row.value()

    def modality_choice(self) -> str | None:
        """The Imaging choice: ``None`` for Auto (the model's setting), else a kind or ``"none"``."""
        value = self.modality_combo.currentData()
        return None if value in (None, "auto") else str(value)

    def _schedule_detect(self) -> None:
        self._detect_timer.start()

    def detect_modality(self, image: Image | None = None) -> ModalityReport | None:
        """What the plane on screen of ``image`` (the dock's image by default) looks like.

        Reads a subsample of the plane (see :func:`.layers.plane_sample`), with the dock's
        channel settings when it is the dock's image.

        Returns
        -------
        ModalityReport or None
            ``None`` when there is no image, or its plane is too large to sample here.

        Raises
        ------
        InputError
            If the plane cannot be read as an image (e.g. a bad channel axis).
        """
        image = image if image is not None else self.image_layer()
        if image is None:
            return None
        lay = self.image_layout(image)
        index = current_index(image, lay, self.viewer.dims.point) if lay.stack_axes else ()
        sample = plane_sample(image, lay, index)
        if sample is None:
            return None
        rgb = bool(image.rgb) if sample.ndim == 3 else None
        return detect(sample, rgb=rgb, channel=self.image_channel(image))

    def update_detected(self) -> str:
        """Show what was detected for the chosen image and how the model will take it.

        Returns
        -------
        str
            The text shown (empty without an image layer).
        """
        self._detect_timer.stop()
        text = self._detected_text()
        self.modality_label.setText(text)
        return text

    def _detected_text(self) -> str:
        if self.image_layer() is None:
            return ""
        try:
            card = self.current_model().card
        except ModelError:
            card = None
        if card is not None and card.architecture.in_channels != 1:
            return "This model reads the image's channels as they are (no conversion)."
        try:
            report = self.detect_modality()
        except (InputError, ValueError, TypeError, IndexError) as exc:
            return f"Cannot detect the imaging: {exc}"
        choice = self.modality_choice()
        setting = (card.modality if card is not None else "auto") if choice is None else choice
        if report is None:
            found = "Detected when segmenting (the plane is too large to sample here)"
        else:
            found = f"Detected: {report.describe()}"
        if setting == "none":
            who = "this model takes" if choice is None else "using"
            return f"{found}; {who} the image as it is (no conversion)."
        if setting == "auto":
            return f"{found}."
        used = MODALITY_LABELS.get(setting, setting)
        if report is not None and report.modality == setting:
            return f"{found}."
        if choice is None:
            return f"{found}; this model always treats images as {used}."
        return f"{found}; using {used} (your choice)."

    def _update_input_state(self) -> None:
        layer = self.image_layer()
        previous = self.channel_axis_combo.currentData()
        self.channel_axis_combo.blockSignals(True)
        self.channel_axis_combo.clear()
        self.channel_axis_combo.addItem("none", None)
        if layer is not None and not layer.rgb:
            for ax in range(layer.ndim - 2):
                self.channel_axis_combo.addItem(f"axis {ax} ({layer_data_len(layer, ax)})", ax)
        if previous is not None and self.channel_axis_combo.findData(previous) >= 0:
            self.channel_axis_combo.setCurrentIndex(self.channel_axis_combo.findData(previous))
        self.channel_axis_combo.blockSignals(False)
        self.channel_axis_combo.setEnabled(self.channel_axis_combo.count() > 1)
        self._update_channels()

    def _update_channels(self) -> None:
        layer = self.image_layer()
        previous = self.channel_combo.currentText()
        self.channel_combo.clear()
        ax = self.channel_axis_combo.currentData()
        if layer is not None and layer.rgb:
            self.channel_combo.addItem("mean of R, G, B", None)
            for i, c in enumerate("RGB"):
                self.channel_combo.addItem(c, i)
        elif layer is not None and ax is not None:
            for i in range(layer_data_len(layer, ax)):
                self.channel_combo.addItem(f"channel {i}", i)
        if previous and self.channel_combo.findText(previous) >= 0:  # keep the user's choice
            self.channel_combo.setCurrentIndex(self.channel_combo.findText(previous))
        self.channel_combo.setEnabled(self.channel_combo.count() > 0)
        n_stack = 1
        if layer is None:
            self.shape_label.setText("No image layer: open an image or File > Open Sample.")
        else:
            try:
                lay = layout(layer, ax)
                n_stack = int(np.prod(stack_shape(layer, lay))) if lay.stack_axes else 1
                h, w = plane_shape(layer)
                kind = "RGB" if layer.rgb else f"{layer_data_dtype(layer)}"
                extra = f", {n_stack} planes" if n_stack > 1 else ""
                self.shape_label.setText(f"{h} x {w} px, {kind}{extra}")
            except InputError as exc:
                self.shape_label.setText(str(exc))
        self.segment_stack_btn.setEnabled(n_stack > 1 and self._worker is None)
        self.segment_btn.setText("Segment slice" if n_stack > 1 else "Segment")
        self._schedule_detect()

    def _reset_thresholds(self) -> None:
        try:
            pp = self.current_model().card.postprocess
        except ModelError:
            pp = PostprocessConfig()
        self.fg_spin.setValue(pp.fg_threshold)
        self.seed_spin.setValue(pp.seed_threshold)
        self.min_size_spin.setValue(pp.min_size)
        self.sigma_spin.setValue(pp.dist_sigma)

    def _update_device_label(self) -> None:
        try:
            dev = resolve_device(self.device_combo.currentText())
            self.device_label.setText(f"Runs on: {dev}")
        except DeviceError as exc:
            self.device_label.setText(str(exc))

    def postprocess_config(self) -> PostprocessConfig:
        """Thresholds as set in the widget."""
        return PostprocessConfig(
            fg_threshold=round(self.fg_spin.value(), 4),
            seed_threshold=round(self.seed_spin.value(), 4),
            min_size=self.min_size_spin.value(),
            dist_sigma=round(self.sigma_spin.value(), 4),
        )

    def tile_size(self) -> int | None:
        """Chosen core tile size (``None``: automatic)."""
        text = self.tile_combo.currentText()
        return None if text == "auto" else int(text)

    # ------------------------------------------------------------------ running
    def _busy(self, busy: bool) -> None:
        for w in (self.segment_btn, self.rethreshold_btn, self.model_combo, self.device_combo):
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
            device = resolve_device(self.device_combo.currentText())
            pp = self.postprocess_config()
        except (InputError, ModelError, DeviceError, ValueError) as exc:
            show_error(str(exc))
            self.status.setText(f"Not started: {exc}")
            return None
        shape = stack_shape(image, lay)
        if indices is None and stack and shape:
            indices = [tuple(int(i) for i in ix) for ix in np.ndindex(*shape)]
        elif indices is None:
            indices = [current_index(image, lay, self.viewer.dims.point) if shape else ()]
        channel = self.image_channel(image)
        self._run = {
            "image": image,
            "layout": lay,
            "model": model,
            "pp": pp,
            "indices": indices,
            "target": None,
            "t0": time.perf_counter(),
            "done": 0,
            "objects": 0,
            "kind": "segment",
            "tile": self.tile_size(),
            "modality_setting": self.modality_combo.currentData(),
            "diameter_setting": self.diameter_choice(),
            "modalities": {},
            "new_layer_name": new_layer_name,
            "on_done": on_done,
        }

        def read(index, image=image, lay=lay):
            return read_plane(image, lay, index)

        worker = create_worker(
            segment_planes,
            model,
            read,
            indices,
            image.rgb,
            channel,
            device,
            self.tile_size(),
            pp,
            self.tta_check.isChecked(),
            self.modality_choice(),
            self.diameter_choice(),
            _start_thread=False,
        )
        self._start(worker, f"Segmenting '{image.name}' with {model.name} on {device}...")
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
        if self.tracker.is_edited(target) and self.if_edited_combo.currentText() != IF_EDITED_REPLACE:
            show_info(f"'{target.name}' holds your edits, so the new thresholds go to a new layer.")
            target = self._replacement_layer(target, np.zeros_like(target.data))
        self._run = {
            "image": None,
            "layout": None,
            "model": None,
            "pp": pp,
            "indices": list(maps),
            "target": target,
            "t0": time.perf_counter(),
            "done": 0,
            "objects": 0,
            "kind": "rethreshold",
        }
        worker = create_worker(rethreshold_planes, dict(maps), pp, _start_thread=False)
        self._start(worker, f"Re-thresholding '{target.name}'...")
        return worker

    def _last_output(self) -> Labels | None:
        """The chosen image's labels layer, if the plugin keeps its probabilities."""
        image = self.image_layer()
        if image is not None:
            name = f"{image.name} labels"
            if name in self.viewer.layers and unwrap(self.viewer.layers[name]) in self._maps:
                return self.viewer.layers[name]
        return None

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
            self._run["failed"] = True
            self.status.setText(f"Failed: {item.message}")
            show_error(item.message)

    def _output_layer(self) -> Labels:
        """The labels layer this run writes to, created or chosen on first use."""
        run = self._run
        target = run.get("target")
        if target is not None and target in self.viewer.layers:
            return target
        image, lay = run["image"], run["layout"]
        if image is None:  # re-threshold target removed meanwhile: write to a fresh layer
            run["target"] = self._replacement_layer(target, np.zeros(target.data.shape, np.int32))
            return run["target"]
        out_shape = (*stack_shape(image, lay), *plane_shape(image))
        if run.get("new_layer_name"):
            target = self._add_labels(
                run["new_layer_name"],
                np.zeros(out_shape, np.int32),
                metadata={META_KEY: {"role": RESEGMENTED}},
                **out_transform(image, lay),
            )
            run["target"] = target
            return target
        name = f"{image.name} labels"
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(existing, Labels) and existing.data.shape == out_shape:
            if not self.tracker.is_edited(existing) or self.if_edited_combo.currentText() == IF_EDITED_REPLACE:
                run["target"] = existing
                return existing
            show_info(f"'{name}' holds your edits, so the result goes to a new layer.")
        target = self._add_labels(name, np.zeros(out_shape, np.int32), **out_transform(image, lay))
        run["target"] = target
        return target

    def _add_labels(self, name: str, data: np.ndarray | None, **kwargs) -> Labels:
        if data is None:
            raise RuntimeError("no shape for the new labels layer")
        # napari adds " [1]", " [2]"... to repeated names: the user's layer is never replaced
        layer = self.viewer.add_labels(data, name=name, **kwargs)
        st = self.tracker.state(layer)
        st.ours, st.edited = True, False
        self._run["created"] = unwrap(layer)  # nothing to undo in it: planes are assigned directly
        # the newest result is what the user corrects and exports next
        self.correct_section.follow(layer)
        self.export_section.follow(layer)
        return layer

    def _replacement_layer(self, old: Labels, data: np.ndarray) -> Labels:
        """A new labels layer standing in for ``old``.

        It gets ``old``'s name (napari numbers it), transform, provenance, and kept
        probabilities for re-thresholding.
        """
        new = self._add_labels(old.name, data, **like_layer(old))
        maps = self._maps.get(unwrap(old))
        if maps:
            self._maps[unwrap(new)] = dict(maps)
        return new

    def _fits(self, target: Labels, labels: np.ndarray) -> bool:
        """Whether ``labels``' ids fit the data type of the layer they go to."""
        dtype = target.data.dtype
        return np.issubdtype(dtype, np.integer) and (not labels.size or int(labels.max()) <= np.iinfo(dtype).max)

    def _write_result(self, res: PlaneResult) -> None:
        run = self._run
        target = self._output_layer()
        if not self._fits(target, res.labels):
            # e.g. replacing a user's 8-bit mask layer with 300 objects: ids would wrap and merge objects
            old = target
            target = run["target"] = self._replacement_layer(old, np.asarray(old.data).astype(np.int32))
            show_warning(
                f"'{old.name}' ({old.data.dtype}) cannot hold ids up to {int(res.labels.max())}, so the result "
                f"goes to a new 32-bit layer '{target.name}' (a copy of it with the result written in)."
            )
        self.tracker.state(target)
        labels = res.labels.astype(target.data.dtype, copy=False)
        with self.tracker.writing(target):
            if run.get("created") is unwrap(target):  # a layer made by this run: no undo copy needed
                target.data[res.index] = labels
                target.refresh()
            else:
                write_plane(target, res.index, labels)  # one undoable step
        self.tracker.record_output(target, res.index, res.labels)
        if res.fg is not None:
            self._maps.setdefault(unwrap(target), {})[res.index] = (res.fg, res.dist, res.factor)
        meta = dict(target.metadata.get(META_KEY, {}))
        model = run.get("model")
        if model is not None:
            meta.update(
                model_name=model.name,
                model_path=str(model.path),
                model_card=model_files.card_summary(model.card),
                tile_size=run.get("tile") or "auto",
            )
        if res.modality is not None:  # what the network saw the image as
            used = run.setdefault("modalities", {})
            used[res.index] = res.modality
            if len(set(used.values())) == 1:
                meta["modality"] = res.modality
                meta.pop("modality_planes", None)
            else:  # Auto in a stack whose planes look different
                meta["modality"] = "mixed"
                meta["modality_planes"] = [[list(ix), kind] for ix, kind in used.items()]
            meta["modality_setting"] = run.get("modality_setting") or "auto"
        if res.diameter is not None:  # the object size the plane was segmented for
            meta["diameter"] = round(float(res.diameter), 2)
            meta["diameter_setting"] = run.get("diameter_setting") or "model"
        meta["thresholds"] = run["pp"].to_dict()
        target.metadata[META_KEY] = meta
        run["done"] += 1
        run["objects"] += int(res.labels.max())
        if self.show_maps_check.isChecked():
            self._show_maps(target, res.index)

    def _show_maps(self, target: Labels, index: tuple[int, ...]) -> None:
        maps = self._maps.get(unwrap(target), {})
        if index not in maps:
            return
        shape = target.data.shape
        for which, name in ((0, f"{target.name} foreground probability"), (1, f"{target.name} distance map")):
            old = self.viewer.layers[name].data if name in self.viewer.layers else None
            data = old if old is not None and old.shape == shape else np.zeros(shape, np.float32)
            data[index] = maps[index][which].astype(np.float32)
            show_map(self.viewer, name, data, target, "magma", opacity=0.6, visible=which == 0).refresh()
        # keep the labels on top of the maps
        idx = self.viewer.layers.index(target)
        self.viewer.layers.move(idx, len(self.viewer.layers))

    def _summary(self, verb: str) -> str:
        run = self._run
        n, total = run["done"], len(run["indices"])
        secs = time.perf_counter() - run["t0"]
        target = run.get("target")
        where = f" in '{target.name}'" if target is not None else ""
        planes = f"{n} of {total} planes, " if total > 1 else ""
        return f"{verb}: {planes}{run['objects']} objects{where} ({secs:.1f} s).{self._modality_summary()}"

    def _modality_summary(self) -> str:
        """How the network saw the image in this run, for the status line."""
        used = list((self._run.get("modalities") or {}).values())
        if not used:
            return ""

        def name(kind: str) -> str:
            return "as it is (no conversion)" if kind == "none" else MODALITY_LABELS.get(kind, kind)

        kinds = sorted(set(used), key=used.index)
        if kinds == ["none"]:
            return " Image taken as it is (no conversion)."
        if len(kinds) == 1:
            return f" Imaging: {name(kinds[0])}."
        return " Imaging: " + ", ".join(f"{name(k)} ({used.count(k)} planes)" for k in kinds) + "."

    def _on_finished(self) -> None:
        if self._worker is None:
            return
        aborted = self._run.get("aborted", False)
        ok = not aborted and not self._run.get("failed")
        if ok:
            self.progress.setValue(self.progress.maximum())
            self.status.setText(self._summary("Done"))
        self._busy(False)
        self.update_detected()
        callback, target = self._run.get("on_done"), self._run.get("target")
        if ok and target is not None and self._run.get("kind") == "segment" and self.stitch_check.isChecked():
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
        self._run["aborted"] = True
        self.status.setText(self._summary("Cancelled") + " Finished planes are kept; the others are unchanged.")

    def _on_errored(self, exc: Exception) -> None:
        self._run["failed"] = True
        self.status.setText(f"Failed: {exc}")


def like_layer(layer: Labels) -> dict:
    """Transform and provenance of a labels layer, for a new layer that replaces it."""
    kw = {"scale": layer.scale, "translate": layer.translate, "metadata": dict(layer.metadata)}
    for attr in ("axis_labels", "units"):
        value = getattr(layer, attr, None)
        if value is not None:
            kw[attr] = value
    return kw


def layer_data_len(layer: Image, axis: int) -> int:
    """Length of one axis of an image layer's full-resolution data."""
    data = layer.data[0] if layer.multiscale else layer.data
    return int(data.shape[axis])


def layer_data_dtype(layer: Image) -> str:
    """Data type name of an image layer."""
    data = layer.data[0] if layer.multiscale else layer.data
    return str(data.dtype)


__all__ = ["UNetLoopWidget"]
