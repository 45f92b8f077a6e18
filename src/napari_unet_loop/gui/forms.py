"""Value fields of the dock's forms as magicgui widgets, laid out in the sections' Qt forms."""

from __future__ import annotations

from magicgui.widgets import CheckBox
from magicgui.widgets.bases import RangedWidget, ValueWidget
from qtpy.QtWidgets import QFormLayout


def add_rows(form: QFormLayout, *fields: ValueWidget) -> None:
    """Add magicgui value widgets to a Qt form, one row each, in order.

    A field's ``label`` goes on the left and its widget on the right; a checkbox, which
    carries its own text, spans the row. The fields share the form's label column with the
    hand-written Qt rows around them, so the form looks as one.

    Parameters
    ----------
    form : QFormLayout
        The section's form.
    *fields : magicgui.widgets.bases.ValueWidget
        The fields (``FloatSpinBox``, ``SpinBox``, ``ComboBox``, ``CheckBox``...), read with ``.value``.
    """
    for field in fields:
        if isinstance(field, CheckBox):
            form.addRow(field.native)
        else:
            form.addRow(field.label, field.native)


def set_clamped(field: RangedWidget, value: float) -> None:
    """Set a magicgui number field to ``value`` brought into its range, as a Qt spin box does.

    A magicgui ``SpinBox`` or ``FloatSpinBox`` refuses a value outside ``[min, max]``
    (``ValueError``); a value from elsewhere (a model card) is clamped instead.

    Parameters
    ----------
    field : magicgui.widgets.bases.RangedWidget
        The field.
    value : float
        The value wanted.
    """
    field.value = min(max(value, field.min), field.max)


__all__ = ["add_rows", "set_clamped"]
