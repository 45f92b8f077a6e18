"""Model management for the dock: the model list, model files (import, export, rename, delete), loading.

A mixin of :class:`~napari_unet_loop.gui.widget.UNetLoopWidget`: it uses the widget's
``model_combo``, ``model_info``, ``_model_paths`` / ``_models`` and ``session`` (told which model
is chosen, :meth:`.session.Session.note_model`) and never imports the widget.
"""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from ..core import model_files
from ..core.atomic import TargetExistsError
from ..core.errors import ModelError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.model_files import Model

OTHER_MODEL = "Other model file..."
OTHER_KEY = "open file"  # item data of the OTHER_MODEL entry (model items have none: their text is the name)
MAX_LOADED = 3  # models kept in memory by the dock (the others are loaded again from their files)


class ModelManager:
    """Model list and model files of the dock (a mixin; see the module docstring)."""

    def refresh_models(self, select: str | None = None) -> None:
        """Reload the list of shipped and user models."""
        current = select or self.model_combo.currentText() or model_files.DEFAULT_MODEL
        self._model_paths.update(model_files.list_models())
        self._model_paths = {n: p for n, p in self._model_paths.items() if p.exists()}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in self._model_paths:
            self.model_combo.addItem(name)
        self.model_combo.addItem(OTHER_MODEL, OTHER_KEY)
        if current in self._model_paths:
            self.model_combo.setCurrentText(current)
        self._selected_model = self.model_combo.currentText()
        self.model_combo.blockSignals(False)
        self._show_model_info()
        self.session.note_model(self._selected_model)

    def model_names(self) -> list[str]:
        """Every name in the Model list: shipped and user models, and model files opened."""
        return list(self._model_paths)

    def select_model(self, name: str) -> None:
        """Reload the model list, select ``name`` (if it is there) and take its thresholds."""
        self.refresh_models(select=name)
        self._reset_thresholds()

    def _on_model_chosen(self, index: int) -> None:
        if self.model_combo.currentData() == OTHER_KEY:
            path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", "Models (*.safetensors)")
            if not path or self.add_model_file(path) is None:
                self.refresh_models(select=self._selected_model)  # cancelled or unreadable: keep the model
            return
        self._selected_model = self.model_combo.currentText()
        self._show_model_info()
        self._reset_thresholds()
        self.session.note_model(self._selected_model)

    def add_model_file(self, path: str | Path) -> Model | None:
        """Load a model file, add it to the model list and select it."""
        try:
            model = model_files.load(path)
        except ModelError as exc:
            show_error(str(exc))
            self.refresh_models(select=self._selected_model)  # the model chosen before stays (its thresholds too)
            return None
        same = [k for k, p in self._model_paths.items() if _same_file(p, Path(path))]
        if same:  # listed already (opened before, or a saved model): that entry, with the file as it is now
            key = same[0]
        else:
            key = model.name if model.name not in self._model_paths else f"{model.name} ({Path(path).name})"
        self._model_paths[key] = Path(path)
        self.cache_model(key, model)
        self.refresh_models(select=key)
        self._reset_thresholds()
        return model

    # ------------------------------------------------------------------ model files
    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model file", "", "Models (*.safetensors)")
        if not path:
            return
        stem = Path(path).stem
        taken = (model_files.user_dir() / f"{stem}{model_files.SUFFIX}").exists()
        question = f"Your models hold one named '{stem}' already. Replace it with this file?"
        if taken and QMessageBox.question(self, "Import model", question) != QMessageBox.Yes:
            return
        self.import_model_file(path, overwrite=taken)

    def import_model_file(self, path: str | Path, name: str | None = None, overwrite: bool = False) -> str | None:
        """Copy a model file into the user model folder (after checking it loads) and select it.

        A user model of the same name is replaced only with ``overwrite`` (the dialog asks first).
        """
        try:
            target = model_files.import_model(path, name=name, overwrite=overwrite)
        except TargetExistsError:
            show_error(
                f"Not imported: your models hold one named '{Path(name or path).stem}' already (kept as it was). "
                "Import it again and choose to replace it, or rename yours first (Manage > Rename)."
            )
            return None
        except (ModelError, OSError) as exc:
            show_error(f"Cannot import {Path(path).name}: {exc}")
            return None
        self.refresh_models(select=target.stem)
        self._reset_thresholds()
        show_info(f"Imported model '{target.stem}' into {target.parent}.")
        return target.stem

    def _export_dialog(self) -> None:
        name = self.model_combo.currentText()
        path, _ = QFileDialog.getSaveFileName(
            self, "Export model file", f"{name}.safetensors", "Models (*.safetensors)"
        )
        if path:
            self.export_model_file(path, overwrite=True)

    def export_model_file(self, path: str | Path, overwrite: bool = False) -> Path | None:
        """Copy the selected model's file (weights and card in one file) to ``path``."""
        name = self.model_combo.currentText()
        if name not in self._model_paths:
            show_error("no model selected")
            return None
        try:
            out = model_files.export_model(str(self._model_paths[name]), path, overwrite=overwrite)
        except (ModelError, OSError) as exc:
            show_error(f"Cannot export '{name}': {exc}")
            return None
        show_info(f"Exported '{name}' to {out}.")
        return out

    def _user_model_selected(self) -> str | None:
        name = self.model_combo.currentText()
        path = self._model_paths.get(name)
        if path is None or path.parent.resolve() != model_files.user_dir().resolve():
            show_error(f"'{name}' is not in your model folder: shipped and opened models cannot be changed")
            return None
        return name

    def _rename_dialog(self) -> None:
        name = self._user_model_selected()
        if name:
            new, ok = QInputDialog.getText(self, "Rename model", "New name:", text=name)
            if ok and new.strip():
                self.rename_model(new.strip())

    def rename_model(self, new_name: str) -> bool:
        """Rename the selected user model."""
        name = self._user_model_selected()
        if name is None:
            return False
        try:
            model_files.rename_user_model(name, new_name)
        except (ModelError, OSError, FileExistsError) as exc:
            show_error(f"Cannot rename '{name}': {exc}")
            return False
        self._models.pop(name, None)
        self._model_paths.pop(name, None)
        self.refresh_models(select=new_name)
        return True

    def _delete_dialog(self) -> None:
        name = self._user_model_selected()
        if name and QMessageBox.question(self, "Delete model", f"Delete the model file of '{name}'?") == (
            QMessageBox.Yes
        ):
            self.delete_model()

    def delete_model(self) -> bool:
        """Delete the selected user model's file."""
        name = self._user_model_selected()
        if name is None:
            return False
        try:
            model_files.delete_user_model(name)
        except (ModelError, OSError) as exc:
            show_error(f"Cannot delete '{name}': {exc}")
            return False
        self._models.pop(name, None)
        self._model_paths.pop(name, None)
        self.refresh_models(select=model_files.DEFAULT_MODEL)
        self._reset_thresholds()
        return True

    def current_model(self) -> Model:
        """Load (once) and return the selected model.

        Raises
        ------
        ModelError
            If the model file cannot be loaded.
        """
        name = self.model_combo.currentText()
        if name not in self._model_paths:
            raise ModelError("no model chosen: pick one in the Model list")
        model = self._models.get(name)
        if model is None:
            model = model_files.load(self._model_paths[name])
        self.cache_model(name, model)
        return model

    def cache_model(self, name: str, model: Model) -> None:
        """Keep a loaded model for reuse; only the :data:`MAX_LOADED` most recently used stay in memory.

        Every model in the list has its file, so one dropped here is loaded again when chosen;
        without a bound, each fine-tune of a session would keep another network in memory.
        """
        self._models.pop(name, None)
        self._models[name] = model  # most recently used last
        while len(self._models) > MAX_LOADED:
            oldest = next(iter(self._models))
            if oldest == name:
                break
            del self._models[oldest]

    def _show_model_info(self) -> None:
        try:
            model = self.current_model()
        except ModelError as exc:
            self.model_info.setText(f"<span style='color:#e57373'>{exc}</span>")
            return
        card = model.card
        val = (card.metrics or {}).get("test") or (card.metrics or {}).get("validation") or {}
        score = (
            f" AP@0.5 {val['ap50']:.2f} ({'test' if 'test' in card.metrics else 'validation'})."
            if "ap50" in val
            else ""
        )
        arch = card.architecture
        own = ", ".join(_own_weights(k, record) for k, record in card.weights_by_kind.items())
        about = (card.description or card.name).rstrip()
        if score and not about.endswith((".", "!", "?")):
            about += "."  # a sentence of its own before the score
        doubt = card.kind_in_doubt
        self.model_info.setText(
            f"{about}{score}"
            f"<br><small>U-Net depth {arch.depth}, width {arch.base_width}, {arch.in_channels} input "
            f"channel(s){'; fine-tuned from ' + card.parent if card.parent else ''}"
            f"{f'; objects {model.image_diameter:.0f} px' if model.image_diameter else ''}"
            f"{f'; own weights for {own}' if own else ''}"
            f"{f'; grey images in between read as {MODALITY_LABELS.get(doubt, doubt)}' if doubt else ''}</small>"
        )
        self.model_info.setToolTip(str(model.path))
        self._schedule_detect()
        if hasattr(self, "diameter_row"):
            self.diameter_row.refresh()


def _own_weights(kind: str, record: dict) -> str:
    """A kind with weights of its own, with their score where the card records one.

    Examples
    --------
    >>> _own_weights("he", {"metrics": {"validation": {"ap50": 0.714}}})
    'H&E / stained tissue images (AP@0.5 0.71, validation)'
    >>> _own_weights("he", {"in_channels": 3})
    'H&E / stained tissue images (read in colour)'
    >>> _own_weights("he", {"in_channels": 3, "native_diameters": [13.5, 42.7]})
    'H&E / stained tissue images (read in colour; objects of 14-43 px as they are)'
    """
    metrics = record.get("metrics") or {}
    which = next((w for w in ("test", "validation") if "ap50" in (metrics.get(w) or {})), None)
    notes = [f"AP@0.5 {metrics[which]['ap50']:.2f}, {which}"] if which else []
    native = record.get("native_diameters")
    if isinstance(native, list) and len(native) == 2:  # checked when the card was read
        notes.insert(0, f"objects of {native[0]:.0f}-{native[1]:.0f} px as they are")
    if record.get("in_channels") == 3:
        notes.insert(0, "read in colour")
    label = MODALITY_LABELS.get(kind, kind)
    return f"{label} images" + (f" ({'; '.join(notes)})" if notes else "")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (a missing one names none)."""
    try:
        return a.samefile(b)
    except OSError:
        return False
