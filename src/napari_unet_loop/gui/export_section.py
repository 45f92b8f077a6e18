"""The dock's Export section: labels layers to TIFF, PNG, OME-Zarr, CSV and ImageJ ROIs."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

from ..core import __version__
from ..io.conventions import ExportArguments, export_arguments
from ..io.export import ExportError, TargetExistsError, edit_summary, export_labels, output_names, plain_name
from ..io.writers import full_resolution
from .layers import META_KEY, is_helper, unwrap
from .store_edit import store_path, store_window

if TYPE_CHECKING:
    import napari

    from .layers import LabelsTracker

FORMAT_NAMES = {
    "tif": "TIFF (Fiji)",
    "png": "PNG (16-bit)",
    "zarr": "OME-Zarr",
    "csv": "Measurements CSV",
    "roi": "ImageJ ROIs (.zip)",
}
ALL_LAYERS = "all labels layers"
ALL_KEY = "all"  # item data of the ALL_LAYERS choice (layer items have none: their text is the layer name)
REPLACE_TEXT = "Replace existing files"


def paired_image(viewer: napari.viewer.Viewer, labels: Labels) -> Image | None:
    """The image layer a labels layer belongs to (``"<image> labels"`` naming), if any, of the same shape."""
    name = labels.name
    for suffix in (" labels",):
        base = name.split(suffix)[0] if suffix in name else None
        if base and base in viewer.layers and isinstance(viewer.layers[base], Image):
            image = viewer.layers[base]
            if _grey_shape(image) == labels.data.shape:
                return image
    return None


def _grey_shape(image: Image) -> tuple[int, ...]:
    shape = (image.data[0] if image.multiscale else image.data).shape
    return tuple(shape[:-1]) if image.rgb else tuple(shape)


def image_array(image: Image) -> np.ndarray:
    """An image layer's full-resolution pixels as File > Save hands them over (colour stays channels-last)."""
    return full_resolution(image.data)


def layer_attributes(layer: Labels) -> dict[str, Any]:
    """A labels layer's attributes as napari hands them to writers (File > Save), for :func:`export_arguments`."""
    return {
        "name": layer.name,
        "scale": tuple(float(v) for v in layer.scale),
        "translate": tuple(float(v) for v in layer.translate),
        "metadata": dict(layer.metadata),
        "axis_labels": tuple(getattr(layer, "axis_labels", ()) or ()),
        "units": tuple(str(u) for u in (getattr(layer, "units", ()) or ())),
    }


def provenance(
    layer: Labels, tracker: LabelsTracker | None = None, args: ExportArguments | None = None
) -> dict[str, Any]:
    """What the plugin recorded on a labels layer (model, thresholds, tile size), plus the layer name.

    With the dock's edit ``tracker``, the record also says in brief how the labels were made
    and edited (see :func:`edit_history`). ``args``: the layer's export arguments, when known.
    """
    args = args if args is not None else export_arguments(layer_attributes(layer), layer.data.ndim)
    record = {
        **args.provenance,  # as File > Save records it
        "exported": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "plugin_version": __version__,
    }
    if tracker is not None:
        record["edits"] = edit_history(layer, tracker)
    return record


def edit_history(layer: Labels, tracker: LabelsTracker) -> dict[str, Any]:
    """The edit history of a labels layer in brief, against the labels the plugin wrote.

    Returns
    -------
    dict
        ``source``: ``"napari-unet-loop"`` for planes the plugin segmented, with ``edited``,
        ``objects_added``, ``objects_removed``, ``objects_reshaped``, ``pixels_changed``,
        ``planes_segmented``, ``planes_edited`` (stacks) and ``reviewed_region`` (the edited
        objects with a margin: ``pixels``, ``fraction`` of the segmented planes, ``box_yx``);
        ``"user labels"`` for a layer the plugin never segmented. Both give ``accepted_objects``
        (objects accepted in the review queue) when there are any.
    """
    accepted = len(layer.metadata.get(META_KEY, {}).get("reviewed", []))
    try:
        corrections = tracker.corrections(layer)
    except (IndexError, ValueError):  # the data was replaced by an array of another shape
        corrections = None
    if corrections is None:
        out: dict[str, Any] = {"source": "napari-unet-loop", "edited": True, "note": "labels replaced since segmenting"}
    elif not corrections:
        out = {"source": "user labels"}
    else:
        totals = dict.fromkeys(("objects_added", "objects_removed", "objects_reshaped", "pixels_changed"), 0)
        reviewed, pixels, boxes, planes = 0, 0, [], []
        try:
            for index, (original, current) in corrections.items():
                summary = edit_summary(original, current)
                for key in totals:
                    totals[key] += summary[key]
                pixels += original.size
                if summary["pixels_changed"]:
                    planes.append(list(index))
                    reviewed += summary["reviewed_pixels"]
                    boxes.append(summary["reviewed_box"])
        except ValueError:  # a plane of another shape than the plugin wrote
            return {"source": "napari-unet-loop", "edited": True, "note": "labels replaced since segmenting"}
        out = {"source": "napari-unet-loop", "edited": bool(totals["pixels_changed"]), **totals}
        out["planes_segmented"] = len(corrections)
        if layer.data.ndim > 2:
            out["planes_edited"] = planes
        if boxes:
            box = np.array(boxes)
            out["reviewed_region"] = {
                "pixels": reviewed,
                "fraction": round(reviewed / pixels, 4) if pixels else 0.0,
                "box_yx": [*box[:, :2].min(0).tolist(), *box[:, 2:].max(0).tolist()],
            }
    if accepted:
        out["accepted_objects"] = accepted
    return out


def export_jobs(
    viewer, layers: list[Labels], formats: list[str] = ("csv", "zarr"), tracker: LabelsTracker | None = None
) -> list[dict]:
    """Plain-data export jobs for a worker thread (no layer is touched off the main thread).

    The labels are copied, so editing while the export runs cannot mix two states in the files;
    the image is read only for the formats that use it (CSV intensities, OME-Zarr). File names
    are plain (:func:`~napari_unet_loop.io.export.plain_name`): ``cells labels [1]`` is written
    as ``cells_labels_1.*``.
    """
    jobs = []
    needs_image = bool(set(formats) & {"csv", "zarr"})
    for layer in layers:
        image = paired_image(viewer, layer) if needs_image else None
        args = export_arguments(layer_attributes(layer), layer.data.ndim)  # the same rule as File > Save
        jobs.append(
            {
                "labels": np.array(full_resolution(layer.data)),
                "name": plain_name(layer.name),
                "image": image_array(image) if image is not None else None,
                "scale": args.scale,
                "units": args.units,
                "axes": args.axes,
                "provenance": provenance(layer, tracker, args),
                "objects_3d": args.objects_3d,
                "translate": args.translate,
                "layer": layer.name,
            }
        )
    return jobs


def run_exports(jobs: list[dict], folder: Path, formats: list[str], overwrite: bool):
    """Write every job in every format; yields ``(layer, format, ExportResult or the error)``."""
    for job in jobs:
        for fmt in formats:
            try:
                res = export_labels(
                    job["labels"],
                    folder,
                    fmt,
                    name=job["name"],
                    image=job["image"] if fmt in ("csv", "zarr") else None,
                    scale=job["scale"],
                    units=job["units"],
                    axes=job["axes"],
                    overwrite=overwrite,
                    provenance=job["provenance"],
                    objects_3d=job["objects_3d"],
                    translate=job["translate"],
                )
            except (ExportError, FileExistsError, PermissionError, OSError) as exc:
                yield job["layer"], fmt, exc
                continue
            yield job["layer"], fmt, res


class ExportSection(QGroupBox):
    """Export labels layers (one or all) in chosen formats to a folder, with provenance sidecars.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    tracker : LabelsTracker, optional
        The dock's edit tracking: the provenance then records the edit history in brief.
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, tracker: LabelsTracker | None = None, write_back: Any = None
    ) -> None:
        super().__init__("Export")
        self.viewer = viewer
        self.tracker = tracker
        # writes a store window's corrections into its store now ((report, whether the store holds them))
        self.write_back = write_back
        self._worker = None
        form = QFormLayout(self)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Labels layer to export, or all of them (each with its image)")
        form.addRow("Labels", self.layer_combo)
        grid = QGridLayout()
        self.format_checks: dict[str, QCheckBox] = {}
        for i, (key, text) in enumerate(FORMAT_NAMES.items()):
            box = QCheckBox(text)
            box.setChecked(key in ("tif", "csv"))
            self.format_checks[key] = box
            grid.addWidget(box, i // 2, i % 2)
        form.addRow("Formats", grid)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit(str(Path.home()))
        self.folder_edit.setToolTip("Folder to write to; each file gets a .json provenance sidecar")
        row.addWidget(self.folder_edit, 1)
        browse = QPushButton("...")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        form.addRow("Folder", row)
        self.overwrite_check = QCheckBox(REPLACE_TEXT)
        self.overwrite_check.setToolTip("Write over files of the same name in the folder")
        form.addRow(self.overwrite_check)
        self.export_btn = QPushButton("Export")
        self.export_btn.clicked.connect(lambda: self.export())
        form.addRow(self.export_btn)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.status)
        self.reset_choices()

    def reset_choices(self, event=None) -> None:
        """Refresh the list of labels layers."""
        current, was_all = self.layer_combo.currentText(), self._all_chosen()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if len(names) > 1:
            self.layer_combo.addItem(ALL_LAYERS, ALL_KEY)
        if was_all and self.layer_combo.findData(ALL_KEY) >= 0:
            self.layer_combo.setCurrentIndex(self.layer_combo.findData(ALL_KEY))
        elif not was_all and current in names:
            self.layer_combo.setCurrentText(current)

    def _all_chosen(self) -> bool:
        """Whether the choice is to export all labels layers."""
        return self.layer_combo.currentData() == ALL_KEY

    def follow(self, layer) -> None:
        """Export ``layer`` (the labels layer the user selected, or the newest result).

        A choice of all labels layers is kept.
        """
        if not isinstance(layer, Labels) or is_helper(layer) or self._all_chosen():
            return
        if self.layer_combo.findText(layer.name) < 0:
            self.reset_choices()
        if self.layer_combo.findText(layer.name) >= 0:
            self.layer_combo.setCurrentText(layer.name)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def formats(self) -> list[str]:
        """Formats ticked."""
        return [k for k, box in self.format_checks.items() if box.isChecked()]

    def _stores_written(self, layers: list[Labels]) -> str | None:
        """Write the correction windows open on the stores being exported into them first.

        A store's labels layer is read from the store, which the autosave brings the windows'
        corrections to only once a minute. Returns why nothing may be exported when a store refused.
        """
        stores = {store_path(lyr).resolve() for lyr in layers if store_window(lyr) is None and store_path(lyr)}
        if not stores or self.write_back is None:
            return None
        failed = []
        for layer in list(self.viewer.layers):
            window = store_window(layer)
            if window is None or window.editor.path.resolve() not in stores or not window.dirty(unwrap(layer).data):
                continue
            if not self.write_back(layer)[1]:
                failed.append(layer.name)
        if not failed:
            return None
        return (
            f"the corrections in {', '.join(failed)} could not be written into the store, so its export would miss "
            "them: nothing was exported (the layer keeps them, and they are autosaved)"
        )

    def export(self):
        """Export the chosen labels layer(s) in a worker thread.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The worker, or ``None`` if nothing could be exported (the reason is shown).
        """
        if self._worker is not None:
            show_warning("An export is running.")
            return None
        choice = self.layer_combo.currentText()
        if self._all_chosen():
            layers = [lyr for lyr in self.viewer.layers if isinstance(lyr, Labels)]
        elif choice and choice in self.viewer.layers:
            layers = [self.viewer.layers[choice]]
        else:
            layers = []
        formats = self.formats()
        folder = Path(self.folder_edit.text()).expanduser()
        problem = None
        if not layers:
            problem = "no labels layer to export: segment an image first"
        elif not formats:
            problem = "tick at least one format"
        elif not str(self.folder_edit.text()).strip():
            problem = "choose a folder"
        else:
            try:  # e.g. layers "a b" and "a_b" would both be written as a_b.*
                output_names([plain_name(lyr.name) for lyr in layers], [lyr.name for lyr in layers])
            except ExportError as exc:
                problem = str(exc).replace("rename them", "rename the layers")
        if not problem:
            problem = self._stores_written(layers)
        if problem:
            show_error(problem)
            self.status.setText(problem)
            return None
        overwrite = self.overwrite_check.isChecked()
        jobs = export_jobs(self.viewer, layers, formats, self.tracker)
        worker = create_worker(run_exports, jobs, folder, formats, overwrite, _start_thread=False)
        self._folder = folder
        self._written: list[str] = []
        self._existing: list[str] = []  # names of files that exist (Replace existing files not ticked)
        self._failed: list[str] = []  # other failures, one line each
        self._notes: list[str] = []
        worker.yielded.connect(self._on_result)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.export_btn.setEnabled(False)
        self.status.setText(f"Exporting {len(layers)} layer(s) to {folder}...")
        worker.start()
        return worker

    def _on_result(self, item) -> None:
        layer, fmt, res = item
        if isinstance(res, TargetExistsError):
            names = {p.name for p in res.paths}
            # a provenance sidecar is named only when its data file is not (e.g. left alone)
            self._existing += [
                p.name
                for p in res.paths
                if p.name not in self._existing and not (p.name.endswith(".json") and p.name[:-5] in names)
            ]
        elif isinstance(res, BaseException):
            self._failed.append(f"'{layer}' as {FORMAT_NAMES.get(fmt, fmt)}: {res}")
        else:
            self._written += [p.name for p in res.paths]
            self._notes += [f"'{layer}' ({FORMAT_NAMES.get(fmt, fmt)}): {note}" for note in res.notes]

    def _on_errored(self, exc: BaseException) -> None:
        """An unexpected error ended the export (napari shows it): the status line says so too."""
        self._failed.append(f"the export stopped: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        """One status line, and at most one notification for the failures (and one for the notes)."""
        self._worker = None
        self.export_btn.setEnabled(True)
        written, existing, failed = self._written, self._existing, self._failed
        parts = []
        if written:
            names = f": {', '.join(written)}" if len(written) <= 3 else ""
            parts.append(f"Wrote {len(written)} file{'s' if len(written) != 1 else ''}{names}.")
        if existing:
            parts.append(
                f"{_count(existing, 'file')} already exist{'s' if len(existing) == 1 else ''}: "
                f"tick '{REPLACE_TEXT}' to replace {'it' if len(existing) == 1 else 'them'}."
            )
        if failed:
            parts.append(f"{_count(failed, 'export')} failed (see the message).")
        if not written and not existing and not failed:
            parts.append("Nothing written.")
        self.status.setText(" ".join(parts))
        self.status.setToolTip("\n".join([*(str(self._folder / n) for n in written), *existing, *failed]))
        problems = []
        if existing:
            shown = ", ".join(existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
            one = len(existing) == 1
            problems.append(
                f"{shown} already exist{'s' if one else ''} in {self._folder}; {'it was' if one else 'they were'} "
                f"not replaced. Tick '{REPLACE_TEXT}' in the Export section to replace "
                f"{'it' if one else 'them'}, or choose another folder."
            )
        problems += [f"Export of {line}" for line in failed[:3]]
        if len(failed) > 3:
            problems.append(f"... and {len(failed) - 3} more failures.")
        if problems:
            show_error("\n".join(problems))
        if self._notes:
            show_info("\n".join(dict.fromkeys(self._notes)))


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"
