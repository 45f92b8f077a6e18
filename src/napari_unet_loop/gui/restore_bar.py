"""The line that offers autosaved corrections of earlier sessions back: Restore or Discard."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .autosave import Autosaver


class RestoreBar(QWidget):
    """A line offering autosaved corrections from an earlier session: Restore or Discard."""

    def __init__(self, autosaver: Autosaver) -> None:
        super().__init__()
        self.autosaver = autosaver
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        row.addWidget(self.label, 1)
        self.restore_btn = QPushButton("Restore")
        self.restore_btn.clicked.connect(self.restore_all)
        row.addWidget(self.restore_btn)
        self.discard_btn = QPushButton("Discard")
        self.discard_btn.clicked.connect(self.discard_all)
        row.addWidget(self.discard_btn)
        self.refresh()

    def refresh(self) -> None:
        """Show the bar only when there are autosaves to restore."""
        notes = self.autosaver.pending()
        if notes:
            names = ", ".join(f"'{n['layer']}'" for n in notes[:3]) + (" ..." if len(notes) > 3 else "")
            self.label.setText(f"Unsaved corrections from an earlier session ({notes[0]['saved'][:16]}): {names}")
        self.setVisible(bool(notes))

    def restore_all(self) -> None:
        """Open every autosave as a labels layer."""
        restored = 0
        for note in self.autosaver.pending():
            try:
                self.autosaver.restore(note)
                restored += 1
            except Exception as exc:  # one unreadable file must not stop the others
                show_error(f"Could not restore '{note['layer']}' from {self.autosaver.folder / note['file']}: {exc}")
        if restored:
            show_info(f"Restored {restored} labels layer(s) from the autosave folder.")
        self.refresh()

    def discard_all(self) -> None:
        """Delete every autosave of earlier sessions."""
        for note in self.autosaver.pending():
            self.autosaver.discard(note)
        self.refresh()
