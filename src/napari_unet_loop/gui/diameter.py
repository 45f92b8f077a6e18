"""The dock's object-size row: the model's diameter, a set one (typed or measured from labels), or estimated."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QPushButton, QWidget

from ..core.scale import MAX_DIAMETER, median_diameter

MODEL = "model"
SET = "set"
AUTO = "auto"


class DiameterRow(QWidget):
    """Choose the object diameter images are segmented for.

    Parameters
    ----------
    labels_layer : callable
        Returns the labels layer to measure (``None`` when there is none).
    model_diameter : callable
        Returns the current model's default object diameter (``None``: it records none).

    Attributes
    ----------
    changed : Signal
        Emitted when the setting changes.
    """

    changed = Signal()

    def __init__(
        self,
        labels_layer: Callable[[], Labels | None],
        model_diameter: Callable[[], float | None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._labels_layer = labels_layer
        self._model_diameter = model_diameter
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.mode_combo = QComboBox()
        self.mode_combo.addItem("Model's", MODEL)
        self.mode_combo.addItem("Set", SET)
        self.mode_combo.addItem("Estimate", AUTO)
        self.mode_combo.setToolTip(
            "Typical object diameter in the image, in pixels. The image is rescaled so its objects reach "
            "the network at the size it was trained at (labels come back on the image's grid).\n"
            "Model's: the diameter of the images the model was trained or fine-tuned on.\n"
            "Set: the diameter typed here, or measured from a labels layer (Measure).\n"
            "Estimate: measured per image from a first segmentation (2-4 passes: slower)."
        )
        self.mode_combo.currentIndexChanged.connect(lambda i: self._sync())
        row.addWidget(self.mode_combo)
        self.spin = QDoubleSpinBox()
        self.spin.setRange(1.0, MAX_DIAMETER)
        self.spin.setDecimals(1)
        self.spin.setSuffix(" px")
        self.spin.setValue(20.0)
        self.spin.setToolTip("Object diameter in pixels (used when the size is Set)")
        self.spin.valueChanged.connect(lambda v: self.changed.emit())
        row.addWidget(self.spin, 1)
        self.measure_btn = QPushButton("Measure")
        self.measure_btn.setToolTip(
            "Set the diameter to the median object diameter of the selected labels layer (or of the "
            "image's labels layer): draw or correct a few typical objects first"
        )
        self.measure_btn.clicked.connect(self._measure_clicked)
        row.addWidget(self.measure_btn)
        self.spin.setEnabled(False)  # the model's diameter is shown once a model is chosen (refresh)

    def _sync(self) -> None:
        mode = self.mode_combo.currentData()
        self.spin.setEnabled(mode == SET)
        if mode == MODEL:
            d = self._model_diameter()
            self.spin.blockSignals(True)
            if d:
                self.spin.setValue(float(d))
            self.spin.blockSignals(False)
        self.changed.emit()

    def refresh(self) -> None:
        """Show the current model's diameter (after the model changed)."""
        self._sync()

    def value(self) -> float | str | None:
        """The setting: ``None`` (the model's), a diameter in pixels, or ``"auto"``."""
        mode = self.mode_combo.currentData()
        if mode == SET:
            return float(self.spin.value())
        return AUTO if mode == AUTO else None

    def set_value(self, value: float | str | None) -> None:
        """Set the row: ``None`` (the model's), a diameter in pixels, or ``"auto"``."""
        if value is None or value == AUTO:
            self.mode_combo.setCurrentIndex(self.mode_combo.findData(AUTO if value == AUTO else MODEL))
            return
        self.spin.setValue(float(value))
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(SET))

    def _measure_clicked(self) -> None:
        try:
            self.measure()
        except ValueError:  # shown in the notification area already; not a traceback from a button
            pass

    def measure(self) -> float:
        """Set the diameter from the labels layer's objects (every plane of a stack).

        Returns
        -------
        float
            The median object diameter in pixels.

        Raises
        ------
        ValueError
            Without a labels layer or objects in it (the dock shows the message).
        """
        from napari.utils.notifications import show_error, show_info

        layer = self._labels_layer()
        if layer is None:
            show_error("Measure: select a labels layer with a few typical objects drawn or corrected")
            raise ValueError("no labels layer")
        data = np.asarray(layer.data)
        planes = data.reshape(-1, *data.shape[-2:]) if data.ndim > 2 else [data]
        d = median_diameter(planes)
        if d is None:
            show_error(f"Measure: '{layer.name}' holds no objects of 9 pixels or more")
            raise ValueError("no objects")
        self.set_value(round(d, 1))
        show_info(f"Object diameter {d:.1f} px (median of '{layer.name}')")
        return d
