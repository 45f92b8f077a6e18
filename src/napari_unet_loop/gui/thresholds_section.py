"""The dock's Instances section: the post-processing thresholds, and re-thresholding without the network.

A mixin of the dock widget (like :class:`.input_section.InputChoices`). The thresholds shown are
the model's for the imaging kind of the chosen image (``ModelCard.thresholds``); they follow that
kind when it changes, unless the user has set them.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ..core.errors import ModelError
from ..core.postprocess import PostprocessConfig
from .forms import add_rows, set_clamped


class ThresholdChoices:
    """The Instances section of :class:`~napari_unet_loop.gui.widget.UNetLoopWidget` (a mixin)."""

    _thresholds_kind: str | None = None  # the imaging kind whose thresholds the dock shows
    _thresholds_shown: PostprocessConfig | None = None  # as last set from the model (not edited since)

    def _build_thresholds(self) -> QGroupBox:
        box = QGroupBox("Instances")
        form = QFormLayout(box)
        self.fg_spin = FloatSpinBox(
            min=0.05,
            max=0.95,
            step=0.05,
            label="Foreground threshold",
            tooltip="Foreground probability above which a pixel belongs to an object",
        )
        self.seed_spin = FloatSpinBox(
            min=0.05,
            max=0.95,
            step=0.05,
            label="Seed threshold",
            tooltip="Distance-map level that seeds one object each: higher splits less",
        )
        self.min_size_spin = SpinBox(
            min=0,
            max=100000,
            step=1,
            label="Minimum size (px)",
            tooltip="Objects with fewer pixels are removed. Pixels at the model's object size: when Object size "
            "rescales the image, this grows with it (e.g. x9 for objects 3x the model's)",
        )
        self.sigma_spin = FloatSpinBox(
            min=0.0,
            max=10.0,
            step=0.5,
            label="Seed smoothing (px)",
            tooltip="Smooth the distance map before seeding (pixels at the model's object size, scaled like the "
            "minimum size): fewer splits of large objects",
        )
        add_rows(form, self.fg_spin, self.seed_spin, self.min_size_spin, self.sigma_spin)
        row = QHBoxLayout()
        self.rethreshold_btn = QPushButton("Apply thresholds")
        self.rethreshold_btn.setToolTip(
            "Recompute the labels of the last segmentation with these thresholds, without the network"
        )
        self.rethreshold_btn.clicked.connect(lambda: self.rethreshold())
        row.addWidget(self.rethreshold_btn)
        self.defaults_btn = QPushButton("Model defaults")
        self.defaults_btn.setToolTip(
            "Reset the thresholds to the values stored with the model (for images of the kind shown under Imaging)"
        )
        self.defaults_btn.clicked.connect(self._reset_thresholds)
        row.addWidget(self.defaults_btn)
        form.addRow(row)
        self.show_maps_check = CheckBox(
            text="Show probability maps", tooltip="Add the foreground probability and distance map as image layers"
        )
        add_rows(form, self.show_maps_check)
        self._reset_thresholds()
        return box

    def _reset_thresholds(self) -> None:
        """Show the model's thresholds for the chosen image's imaging kind."""
        try:
            pp = self.current_model().card.thresholds(self._thresholds_kind)
        except ModelError:
            pp = PostprocessConfig()
        set_clamped(self.fg_spin, pp.fg_threshold)
        set_clamped(self.seed_spin, pp.seed_threshold)
        set_clamped(self.min_size_spin, pp.min_size)
        set_clamped(self.sigma_spin, pp.dist_sigma)
        self._thresholds_shown = self.postprocess_config()

    def follow_kind(self, kind: str | None) -> None:
        """Thresholds follow the imaging kind of the chosen image, unless the user has changed them."""
        if kind == self._thresholds_kind:
            return
        untouched = self.postprocess_config() == self._thresholds_shown
        self._thresholds_kind = kind
        if untouched:
            self._reset_thresholds()

    def thresholds_kind(self) -> str | None:
        """The imaging kind whose thresholds (and weights, where the model has its own) the dock uses."""
        return self._thresholds_kind

    def postprocess_config(self) -> PostprocessConfig:
        """Thresholds as set in the widget."""
        return PostprocessConfig(
            fg_threshold=round(self.fg_spin.value, 4),
            seed_threshold=round(self.seed_spin.value, 4),
            min_size=self.min_size_spin.value,
            dist_sigma=round(self.sigma_spin.value, 4),
        )
