"""The dock's Input section: which image, which axis holds channels, how it was taken, how large its objects are.

A mixin of the dock widget (like :class:`.model_manager.ModelManager`): the other sections
ask it for the chosen image layer, its layout and channel, the imaging modality and the object
diameter.
"""

from __future__ import annotations

import weakref

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel

from ..core.errors import ModelError
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.modality import ModalityReport, detect
from .diameter import DiameterRow
from .layers import Layout, current_index, labels_of, layout, plane_sample, plane_shape, stack_shape, unwrap

# the Imaging choices: (shown text, value); "auto" means the model's own setting
IMAGING_CHOICES = (
    ("Auto", "auto"),
    ("Fluorescence", "fluorescence"),
    ("Brightfield", "brightfield"),
    ("H&E (stained tissue)", "he"),
    ("As is (no conversion)", "none"),
)


class InputChoices:
    """The Input section of :class:`~napari_unet_loop.gui.widget.UNetLoopWidget` (a mixin)."""

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
        self.channel_combo.setToolTip(
            "Channel to segment. RGB images by default as their imaging kind reads them: fluorescence as the "
            "mean of R, G and B, brightfield inverted, H&E as the haematoxylin plane, or in colour where the "
            "model has colour weights for H&E"
        )
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
        return labels_of(self.viewer, self.image_layer())

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
        text, kind = self._detected()
        if kind is not None:
            try:
                card = self.current_model().card
            except ModelError:
                card = None
            label = MODALITY_LABELS.get(kind, kind)
            if card is not None and kind in card.weights_by_kind:
                colour = " (they read the image's R, G and B)" if card.architecture_for(kind).in_channels == 3 else ""
                text += f" Network and instances: the model's own weights and thresholds for {label} images{colour}."
            elif card is not None and kind in card.postprocess_by_kind:
                text += f" Instances: the model's thresholds for {label} images."
        self.modality_label.setText(text)
        self.follow_kind(kind)  # the Instances thresholds follow it (.thresholds_section)
        return text

    def _detected(self) -> tuple[str, str | None]:
        """The text to show, and the imaging kind the model will see the image as (``None``: unknown, as is)."""
        if self.image_layer() is None:
            return "", None
        try:
            card = self.current_model().card
        except ModelError:
            card = None
        if card is not None and card.architecture.in_channels != 1:
            return "This model reads the image's channels as they are (no conversion).", None
        try:
            report = self.detect_modality()
        except (InputError, ValueError, TypeError, IndexError) as exc:
            return f"Cannot detect the imaging: {exc}", None
        choice = self.modality_choice()
        setting = (card.modality if card is not None else "auto") if choice is None else choice
        if report is None:
            found = "Detected when segmenting (the plane is too large to sample here)"
        else:
            found = f"Detected: {report.describe()}"
        if setting == "none":
            who = "this model takes" if choice is None else "using"
            return f"{found}; {who} the image as it is (no conversion).", None
        if setting == "auto":
            if report is None:
                return f"{found}.", None
            read = report.read_as(card.kind_in_doubt if card is not None else None)
            if read != report.modality:  # between fluorescence and brightfield: as its fine-tune's images were
                label = MODALITY_LABELS.get(read, read)
                return f"{found}; in between, this model reads it as {label}, as it was fine-tuned.", read
            return f"{found}.", report.modality
        used = MODALITY_LABELS.get(setting, setting)
        if report is not None and report.modality == setting:
            return f"{found}.", setting
        if choice is None:
            return f"{found}; this model always treats images as {used}.", setting
        return f"{found}; using {used} (your choice).", setting

    def shown_image(self):
        """The (unwrapped) image layer the Input section's choices were made for, if it still exists."""
        ref = getattr(self, "_shown_ref", None)
        return ref() if ref is not None else None

    def _update_input_state(self) -> None:
        layer = self.image_layer()
        # the channel axis and channel belong to the image they were chosen for: another image starts afresh
        same = layer is not None and self.shown_image() is unwrap(layer)
        self._shown_ref = weakref.ref(unwrap(layer)) if layer is not None else None
        previous = self.channel_axis_combo.currentData() if same else None
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
        self._update_channels(keep=same)

    def _update_channels(self, keep: bool = True) -> None:
        layer = self.image_layer()
        previous = self.channel_combo.currentText() if keep else ""
        self.channel_combo.clear()
        ax = self.channel_axis_combo.currentData()
        if layer is not None and layer.rgb:
            # the kind decides: fluorescence their mean, brightfield the inverted mean, H&E the
            # haematoxylin plane, or R, G and B for a model whose H&E weights read colour
            self.channel_combo.addItem("R, G, B, as Imaging reads them", None)
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


def layer_data_len(layer: Image, axis: int) -> int:
    """Length of one axis of an image layer's full-resolution data."""
    data = layer.data[0] if layer.multiscale else layer.data
    return int(data.shape[axis])


def layer_data_dtype(layer: Image) -> str:
    """Data type name of an image layer."""
    data = layer.data[0] if layer.multiscale else layer.data
    return str(data.dtype)
