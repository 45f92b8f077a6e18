"""A small live plot of training loss and validation score, drawn with QPainter (no plotting library)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOUR = QColor(100, 181, 246)
VAL_COLOUR = QColor(255, 183, 77)
BASE_COLOUR = QColor(160, 160, 160)


class LossPlot(QWidget):
    """Training loss (left axis, smoothed) and validation AP@0.5 (right axis, 0 to 1) against steps."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.clear()

    def clear(self) -> None:
        """Forget all points."""
        self.losses: list[tuple[int, float]] = []
        self.vals: list[tuple[int, float, bool]] = []
        self.baseline: float | None = None
        self.update()

    def add_loss(self, step: int, loss: float) -> None:
        """Add a training loss point."""
        if math.isfinite(loss):
            self.losses.append((step, loss))
            self.update()

    def add_val(self, step: int, score: float, best: bool = False) -> None:
        """Add a validation score (AP@0.5); step 0 is the starting model's score."""
        if step == 0:
            self.baseline = score
        self.vals.append((step, score, best))
        self.update()

    def smoothed(self) -> list[tuple[int, float]]:
        """Exponentially smoothed loss curve."""
        out, avg = [], None
        for step, loss in self.losses:
            avg = loss if avg is None else 0.9 * avg + 0.1 * loss
            out.append((step, avg))
        return out

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """Draw axes, the loss curve and the validation points."""
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        fg = self.palette().windowText().color()
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        left, right, top, bottom = 38, 34, 20, 20  # the legend sits above the plot, clear of the curves
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        p.setPen(QPen(fg, 1))
        p.drawRect(area)
        curve = self.smoothed()
        steps = [s for s, _ in curve] + [s for s, _, _ in self.vals]
        if not steps:
            p.drawText(area, Qt.AlignCenter, "loss and validation appear here while training")
            p.end()
            return
        x_max = max(max(steps), 1)
        losses = [v for _, v in curve] or [1.0]
        y_max = max(losses) * 1.05 or 1.0

        def x(step: float) -> float:
            return area.left() + area.width() * step / x_max

        def y_loss(v: float) -> float:
            return area.bottom() - area.height() * min(v / y_max, 1.0)

        def y_val(v: float) -> float:
            return area.bottom() - area.height() * min(max(v, 0.0), 1.0)

        p.drawText(QRectF(0, area.top() - 6, left - 4, 12), Qt.AlignRight, f"{y_max:.2g}")
        p.drawText(QRectF(0, area.bottom() - 6, left - 4, 12), Qt.AlignRight, "0")
        p.drawText(QRectF(area.right() + 4, area.top() - 6, right, 12), Qt.AlignLeft, "1")
        p.drawText(QRectF(area.right() + 4, area.bottom() - 6, right, 12), Qt.AlignLeft, "0")
        p.drawText(QRectF(area.left(), area.bottom() + 3, area.width(), 14), Qt.AlignRight, f"step {x_max}")
        p.setPen(QPen(LOSS_COLOUR, 1))
        p.drawText(QRectF(area.left(), 1, 170, 14), Qt.AlignLeft, "loss (smoothed; raw faint)")
        p.setPen(QPen(VAL_COLOUR, 1))
        p.drawText(QRectF(area.right() - 150, 1, 150, 14), Qt.AlignRight, "validation AP@0.5")
        if self.baseline is not None:
            p.setPen(QPen(BASE_COLOUR, 1, Qt.DashLine))
            p.drawLine(QPointF(area.left(), y_val(self.baseline)), QPointF(area.right(), y_val(self.baseline)))
        if len(self.losses) > 1:  # the raw values, faint, under the smoothed curve
            raw = QPainterPath(QPointF(x(self.losses[0][0]), y_loss(self.losses[0][1])))
            for step, v in self.losses[1:]:
                raw.lineTo(QPointF(x(step), y_loss(v)))
            faint = QColor(LOSS_COLOUR)
            faint.setAlpha(70)
            p.setPen(QPen(faint, 1))
            p.drawPath(raw)
        if len(curve) > 1:
            path = QPainterPath(QPointF(x(curve[0][0]), y_loss(curve[0][1])))
            for step, v in curve[1:]:
                path.lineTo(QPointF(x(step), y_loss(v)))
            p.setPen(QPen(LOSS_COLOUR, 1.5))
            p.drawPath(path)
        for step, v, best in self.vals:
            p.setPen(QPen(VAL_COLOUR, 1.5))
            p.setBrush(VAL_COLOUR if best else Qt.NoBrush)
            p.drawEllipse(QPointF(x(step), y_val(v)), 3.5, 3.5)
        p.end()
