"""GUI tests: magicgui value fields laid out in the sections' Qt forms."""

from __future__ import annotations

import pytest
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QFormLayout, QLabel, QWidget

from napari_unet_loop.gui.forms import add_rows, set_clamped

pytestmark = pytest.mark.gui


def test_add_rows_puts_labels_left_and_checkboxes_across(qtbot):
    host = QWidget()
    qtbot.addWidget(host)
    form = QFormLayout(host)
    size = SpinBox(min=0, max=10, step=1, label="Minimum size (px)", tooltip="fewer pixels are removed")
    kind = ComboBox(choices=[("auto", None), ("256", 256)], label="Tile size")
    check = CheckBox(text="Show probability maps")
    add_rows(form, size, kind, check)
    assert form.rowCount() == 3
    label = form.itemAt(0, QFormLayout.LabelRole).widget()
    assert isinstance(label, QLabel) and label.text() == "Minimum size (px)"
    assert form.itemAt(0, QFormLayout.FieldRole).widget() is size.native
    assert size.native.toolTip() == "fewer pixels are removed"
    assert form.itemAt(1, QFormLayout.FieldRole).widget() is kind.native
    assert form.itemAt(2, QFormLayout.SpanningRole).widget() is check.native
    assert kind.value is None  # "auto"
    kind.value = 256
    assert kind.current_choice == "256"


def test_set_clamped_brings_a_value_into_range_as_qt_does():
    field = FloatSpinBox(min=0.05, max=0.95, step=0.05)
    set_clamped(field, 0.99)
    assert field.value == 0.95
    set_clamped(field, 0.0)
    assert field.value == 0.05
    set_clamped(field, 0.4)
    assert field.value == 0.4
    with pytest.raises(ValueError):  # what set_clamped avoids
        field.value = 2.0
