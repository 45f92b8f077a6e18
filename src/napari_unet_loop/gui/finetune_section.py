"""The dock's Fine-tune section: train the U-Net on corrected labels layers, in the background."""

from __future__ import annotations

import copy
import datetime as _dt
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from napari.layers import Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ..core import kind_weights, model_files
from ..core.device import DeviceError
from ..core.edits import CORRECTION_WEIGHT
from ..core.errors import ModelError
from ..core.finetune import (
    LAYERS,
    augmentation,
    check_start,
    last_layer_only,
    one_kind_diameter,
    own_kind_weights,
    preset,
    start_kind,
    start_model,
    to_network_scale,
    weights_left_behind,
)
from ..core.image import InputError
from ..core.modality import LABELS as MODALITY_LABELS
from ..core.model_files import Model
from ..core.sampling import PatchSampler, split_validation
from ..core.train import TrainConfig, TrainEvent, TrainingError, training_precision
from ..io.images import ReadError
from ._segment_worker import Failure
from ._train_worker import Finished, train_in_worker
from .finetune_report import evidence_note, resegment_report, size_note, thresholds_note
from .forms import add_rows
from .layers import (
    HELPER,
    META_KEY,
    RESEGMENTED,
    role,
)
from .plot import LossPlot
from .runs import FinetuneRun
from .training_data import REGION_EDITED, REGION_LABELLED, REGION_SHAPES, REGION_WHOLE, TrainingData

if TYPE_CHECKING:
    from .session import Session

START_CURRENT = "the current model"
START_DEFAULT = "the shipped default model"
START_SCRATCH = "scratch (random weights)"
# "Start from" choices: key (the combo's item data) -> text shown
START_CHOICES = {"current": START_CURRENT, "default": START_DEFAULT, "scratch": START_SCRATCH}


class FineTuneSection(TrainingData, QGroupBox):
    """Fine-tune the current model on (image, labels) layer pairs and folders, then re-segment.

    Parameters
    ----------
    session : Session
        The dock's session: edit tracking, busy state, the chosen image settings, model, device
        and thresholds, and the dock's segmentation.
    """

    def __init__(self, session: Session) -> None:
        super().__init__("Fine-tune")
        self.session = session
        self.viewer = session.viewer
        self.tracker = session.tracker
        self._worker = None
        self._stop: threading.Event | None = None
        self._folders: list[tuple[Path, Path]] = []
        self._run: FinetuneRun | None = None  # the running or last fine-tune
        self._previous_model: str | None = None
        self._rejected: Model | None = None  # trained, not saved: rejected by validation, or its save failed
        self._rejected_message = ""
        self.steps_override: int | None = None  # tests and scripts: a step budget instead of minutes
        self.val_every_override: float | None = None

        lay = QVBoxLayout(self)
        form = QFormLayout()
        lay.addLayout(form)
        self.pairs_list = QListWidget()
        self.pairs_list.setMaximumHeight(90)
        # long layer names ("<image> labels (<model>)") lose their middle, not the end that tells them apart
        self.pairs_list.setTextElideMode(Qt.ElideMiddle)
        self.pairs_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.pairs_list.setToolTip(
            "Image / labels pairs to train on (ticked). Pairs are found by name ('<image> labels') and shape."
        )
        form.addRow("Train on", self.pairs_list)
        row = QHBoxLayout()
        self.add_folder_btn = QPushButton("Add folders...")
        self.add_folder_btn.setToolTip("Add a folder of images and a folder of label files (matched by name)")
        self.add_folder_btn.clicked.connect(self._choose_folders)
        row.addWidget(self.add_folder_btn)
        self.corrections_label = QLabel("")
        row.addWidget(self.corrections_label, 1)
        form.addRow(row)
        self.region_combo = QComboBox()
        self.region_combo.setToolTip(
            "Which pixels the loss may trust. Outside the reviewed region pixels are ignored, so you can "
            "fix one corner of a big image and train on it. 'Near labelled objects': your labels mark only "
            "some cells, so only they and the background around them count (unmarked cells are not background)."
        )
        form.addRow("Reviewed", self.region_combo)
        self.weight_spin = FloatSpinBox(
            min=1.0,
            max=20.0,
            step=1.0,
            value=CORRECTION_WEIGHT,
            label="Weight of corrections",
            tooltip="Loss weight of the pixels you corrected (1: no extra weight)",
        )
        self.minutes_spin = FloatSpinBox(
            min=0.25,
            max=600.0,
            step=0.5,
            value=2.0,
            label="Train for",
            tooltip="Time budget; Stop ends earlier and keeps the best model so far",
        )
        self.minutes_spin.native.setSuffix(" min")  # no suffix in magicgui
        # "Start from": value the key ("current", "default", "scratch"), shown as its text
        self.start_combo = ComboBox(choices=[(text, key) for key, text in START_CHOICES.items()], label="Start from")
        self.freeze_check = CheckBox(
            text="Freeze the encoder (faster, for small corrections)",
            tooltip="Train only the expanding path: about 1.4x the steps on a CPU; for images the model knows",
        )
        self.kind_only_check = CheckBox(
            text="Only for images of this kind (others keep the model)",
            tooltip="The new model is the starting one with weights of its own for this image's kind "
            "(e.g. H&E), learnt from your corrections; fluorescence or brightfield images keep its weights. "
            "The images train at the model's object size.",
        )
        # which layers train: value the key ("auto", "all", "last"), shown as its text
        self.layers_combo = ComboBox(
            choices=[(text, key) for key, text in LAYERS.items()],
            value="auto",
            label="Train",
            tooltip="Only the last layer turns what the network sees into objects: training it alone "
            "recalibrates a model that already reads your images well, where fitting every layer to a few "
            "objects made it worse on other images (on H&E: -0.16 AP@0.5 against -0.01). Automatic trains "
            "the last layer when the model has weights of its own for the images' kind (H&E), every layer "
            "otherwise. As train --layers.",
        )
        add_rows(
            form,
            self.weight_spin,
            self.minutes_spin,
            self.start_combo,
            self.kind_only_check,
            self.freeze_check,
            self.layers_combo,
        )
        row = QHBoxLayout()
        self.elastic_check = CheckBox(
            text="Elastic deformation",
            value=True,
            tooltip="U-Net paper augmentation: 3x3 grid of random shifts, 10 px std",
        )
        row.addWidget(self.elastic_check.native)
        self.preview_btn = QPushButton("Preview augmentation")
        self.preview_btn.setToolTip("Show a few augmented training patches as an image layer")
        self.preview_btn.clicked.connect(lambda: self.preview_augmentation())
        row.addWidget(self.preview_btn)
        form.addRow(row)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("automatic (parent name + date)")
        self.name_edit.setToolTip("Name of the fine-tuned model in your model folder")
        form.addRow("Save as", self.name_edit)
        self.resegment_check = CheckBox(text="Re-segment with the new model (into a new layer)", value=True)
        add_rows(form, self.resegment_check)

        row = QHBoxLayout()
        self.train_btn = QPushButton("Fine-tune")
        self.train_btn.clicked.connect(lambda: self.start())
        row.addWidget(self.train_btn)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("End training now and keep the best model so far")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        row.addWidget(self.stop_btn)
        lay.addLayout(row)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        row.addWidget(self.progress, 1)
        self.eta_label = QLabel("")
        row.addWidget(self.eta_label)
        lay.addLayout(row)
        self.plot = LossPlot()
        lay.addWidget(self.plot)
        self.result_label = QLabel("Correct a segmentation, then Fine-tune.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.result_label)
        row = QHBoxLayout()
        self.use_anyway_btn = QPushButton("Use it anyway")
        self.use_anyway_btn.setToolTip("Save and select the fine-tuned model although it scored lower")
        self.use_anyway_btn.setVisible(False)
        self.use_anyway_btn.clicked.connect(self.use_anyway)
        row.addWidget(self.use_anyway_btn)
        self.revert_btn = QPushButton("Revert to previous model")
        self.revert_btn.setEnabled(False)
        self.revert_btn.clicked.connect(self.revert)
        row.addWidget(self.revert_btn)
        lay.addLayout(row)

        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(300)
        self._count_timer.timeout.connect(self.update_corrections)
        self.tracker.listeners.append(lambda layer: self._count_timer.start())
        self.reset_choices()

    # ------------------------------------------------------------------ choices
    def reset_choices(self, event=None) -> None:
        """Refresh the pairs list and the reviewed-region choices."""
        checked = {
            self.pairs_list.item(i).data(Qt.UserRole)
            for i in range(self.pairs_list.count())
            if self.pairs_list.item(i).checkState() == Qt.Checked
        }
        known = {self.pairs_list.item(i).data(Qt.UserRole) for i in range(self.pairs_list.count())}
        self.pairs_list.clear()
        for pair in self.find_pairs():
            item = QListWidgetItem(f"{pair[0]}  <-  {pair[1]}")
            item.setToolTip(f"image: {pair[0]}\nlabels: {pair[1]}")
            item.setData(Qt.UserRole, pair)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            # new pairs start ticked, except unreviewed re-segmentations; the user's choice is kept
            fresh = pair not in known and role(self.viewer.layers[pair[1]]) != RESEGMENTED
            item.setCheckState(Qt.Checked if pair in checked or fresh else Qt.Unchecked)
            self.pairs_list.addItem(item)
        for images_dir, labels_dir in self._folders:
            item = QListWidgetItem(f"folder {images_dir.name}  <-  {labels_dir.name}")
            item.setToolTip(f"images: {images_dir}\nlabels: {labels_dir}")
            item.setData(Qt.UserRole, ("folder", str(images_dir), str(labels_dir)))
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked)
            self.pairs_list.addItem(item)
        current = self.region_combo.currentData()
        self.region_combo.clear()
        # item data: (kind, Shapes layer name or None), read by the training data
        self.region_combo.addItem(REGION_WHOLE, ("whole", None))
        self.region_combo.addItem(REGION_EDITED, ("edited", None))
        self.region_combo.addItem(REGION_LABELLED, ("labelled", None))
        for layer in self.viewer.layers:
            if isinstance(layer, Shapes):
                self.region_combo.addItem(REGION_SHAPES + layer.name, ("shapes", layer.name))
        for i in range(self.region_combo.count()):  # keep the choice (by its data: no text parsing)
            if self.region_combo.itemData(i) == current:
                self.region_combo.setCurrentIndex(i)
                break
        self.update_corrections()

    def _start_model(self) -> Model:
        choice = self.start_combo.value
        if choice == "default":
            return model_files.load("default")
        current = self.session.current_model()
        if choice == "scratch":
            return model_files.new_model(
                current.card.architecture,
                name="scratch",
                normalization=current.card.normalization,
                modality=current.card.modality,
            )
        return current

    def config(self, fine_tune: bool, own_weights: bool = False) -> TrainConfig:
        """Training settings from the widgets (``own_weights``: from weights trained for the images' kind)."""
        minutes = None if self.steps_override else float(self.minutes_spin.value)
        return preset(
            fine_tune,
            minutes=minutes,
            steps=self.steps_override,
            val_every_s=self.val_every_override,  # None: the preset's interval
            freeze_encoder=self.freeze_check.value,
            # the encoder frozen asks for the expanding path: automatic layers then train it
            head_only=last_layer_only(self.layers_combo.value, own_weights, fine_tune, self.freeze_check.value),
            augment=augmentation(fine_tune, elastic_sigma=None if self.elastic_check.value else 0.0),
        )

    def start(self):
        """Start fine-tuning in a worker thread.

        Returns
        -------
        napari.qt.threading.GeneratorWorker or None
            The worker, or ``None`` if the run was refused (the reason is shown).
        """
        if self._worker is not None:
            show_warning("A fine-tune is already running: Stop it first.")
            return None
        if self.session.busy:
            show_warning("A segmentation is running: wait for it to finish.")
            return None
        try:
            model = self._start_model()
            device = self.main_device()
            kind, start, samples, described = self.start_samples(model)
            shown = kind == self.session.thresholds_kind()  # else the run starts from another kind's thresholds
            # the objects' size: the dock's Object size when set, else measured on the labels (as train does)
            chosen = self.session.diameter_choice()
            chosen = chosen if isinstance(chosen, float) else None
            only_kind = None
            check_start(
                self.start_combo.value == "scratch",
                head_only="'Train: Only the last layer'" if self.layers_combo.value == "last" else None,
                only_kind="'Only for images of this kind'" if self.kind_only_check.value else None,
            )
            if self.kind_only_check.value:  # weights for one kind inside the model: at the model's object size
                only_kind = self.session.thresholds_kind()
                if not shown:  # the weights would be trained from, and on, another kind's
                    most = f"{MODALITY_LABELS.get(kind, kind)} images" if kind else "of mixed kinds"
                    raise InputError(
                        "'Only for images of this kind' trains weights for the kind of the image shown "
                        f"({MODALITY_LABELS.get(only_kind, only_kind or 'unknown')}), but most of the ticked images "
                        f"are {most}: tick images of the kind shown, or show one of the ticked images"
                    )
                chosen = one_kind_diameter(model, samples, only_kind, chosen)
            scaled = to_network_scale(samples, start.card, chosen)  # the starting weights' sizes (the kind's own)
            train, val = split_validation(scaled.samples, 0.15, seed=0)
            own_weights = own_kind_weights(model, start, kind)
            config = self.config(fine_tune=self.start_combo.value != "scratch", own_weights=own_weights)
            pp = self.session.postprocess_config() if shown else start.card.postprocess
        except (InputError, ModelError, ReadError, DeviceError, ValueError) as exc:
            show_error(str(exc))
            self.result_label.setText(f"Not started: {exc}")
            return None
        own = kind if kind in model.card.weights_by_kind else None
        left = "" if only_kind else weights_left_behind(model, kind, samples)
        unchanged = (
            "None of these labels was changed since the model made them: a fine-tune on its own masks has no "
            "correction to learn, and training every layer on them made other H&E images worse (docs/model.md). "
            "Correct what it got wrong first, or Stop."
            if self.only_model_masks()
            else ""
        )
        if unchanged:
            show_warning(unchanged)
        net = copy.deepcopy(start.net)
        self._stop = threading.Event()
        self._run = FinetuneRun(
            parent=model,
            net=net,
            config=config,
            described=described,
            device=device,
            pp=pp,
            pairs=self.chosen_pairs(),
            t0=time.perf_counter(),
            train_names=[s.name for s in train],
            val_names=[s.name for s in val],
            started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            modality=self.training_modality(model),
            scaled=scaled,
            start_weights=own,
            only_kind=only_kind,
        )
        self._rejected = None
        self.use_anyway_btn.setVisible(False)
        self.plot.clear()
        worker = create_worker(
            train_in_worker, net, train, val, config, device, pp, self._stop, scaled.samples, _start_thread=False
        )
        worker.yielded.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_busy(True)
        budget = f"{config.minutes:g} min" if config.minutes else f"{config.steps} steps"
        start = f" (its own weights for {MODALITY_LABELS.get(own, own)} images)" if own else ""
        if not shown:  # not the kind of the image shown: say whose weights and thresholds the run starts from
            if kind:
                start = (
                    f", starting from its weights and thresholds for {MODALITY_LABELS.get(kind, kind)} images "
                    "(most of the ticked images are of that kind)"
                )
            else:
                start = ", starting from its general weights and thresholds (the ticked images are of no one kind)"
        if only_kind:
            start += f" for {MODALITY_LABELS.get(only_kind, only_kind)} images only"
        where = f"{device} ({training_precision(device, config.precision)})"  # as train's log says it
        layers_note = ", only the network's last layer" if config.head_only else ""
        if config.head_only and self.layers_combo.value == "auto":
            layers_note += " (chosen automatically; Train: Every layer trains the whole network)"
        self.result_label.setText(
            f"Fine-tuning {model.name}{start} on {where}: {len(train)} training and {len(val)} validation sample(s), "
            f"{budget}{size_note(scaled, model)}"
            + layers_note
            + ". You can keep annotating."
            + (f" {described['doubt_note']}." if described.get("doubt_note") else "")
            + (f" {left[0].upper()}{left[1:]} ('Only for images of this kind' keeps them)." if left else "")
            + (f" {unchanged}" if unchanged else "")
        )
        worker.start()
        return worker

    def start_samples(self, model: Model) -> tuple[str | None, Model, list, dict]:
        """Where a fine-tune of ``model`` on the ticked data starts, and the samples as that start reads them.

        As ``train --from``: the weights and thresholds for the kind most of the ticked images are
        (:func:`~napari_unet_loop.core.finetune.start_kind`; the model's own for it, if it has them).
        H&E images prepared for the model's colour network are prepared again when the start is grey.

        Returns
        -------
        tuple
            The kind (``None``: the general weights), the start, the samples and what
            :meth:`build_samples` said of them.
        """
        samples, described = self.build_samples(model)
        kind = start_kind(samples)
        start, ready = start_model(model, kind, samples)
        if not ready:
            samples, described = self.build_samples(start, say=False)  # the same data, told of once
        return kind, start, samples, described

    def main_device(self):
        """The device chosen in the Model section (:meth:`.session.Session.device`)."""
        return self.session.device()

    def stop(self) -> None:
        """End training after the current step; the best weights so far are kept."""
        if self._stop is not None:
            self._stop.set()
            self.eta_label.setText("stopping...")

    def _set_busy(self, busy: bool) -> None:
        self.train_btn.setEnabled(not busy)
        self.stop_btn.setEnabled(busy)
        self.preview_btn.setEnabled(not busy)
        self.session.set_training(busy)  # the dock's Segment buttons follow

    def _on_event(self, ev) -> None:
        if isinstance(ev, TrainEvent):
            if ev.kind == "start" and ev.val is not None:
                self.plot.add_val(0, ev.val["ap50"])
            elif ev.kind == "step":
                self.progress.setValue(int(1000 * ev.fraction))
                self.plot.add_loss(ev.step, ev.loss)
                self.eta_label.setText(f"step {ev.step}, {_fmt_eta(ev.eta)} left")
            elif ev.kind == "val":
                self.plot.add_val(ev.step, ev.val["ap50"], ev.is_best)
            elif ev.kind == "check":  # after the training: thresholds chosen and checked (Stop ends the check)
                self.progress.setValue(1000)
                self.eta_label.setText(f"{ev.message}...")
        elif isinstance(ev, Failure):
            if self._run is not None:
                self._run.failed = ev.message
            show_error(f"Fine-tuning failed; the model is unchanged. {ev.message}")
            self.result_label.setText(f"Failed, model unchanged: {ev.message}")
        elif isinstance(ev, Finished):
            if ev.note:
                show_warning(ev.note)
            self._finish(ev.result, ev.postprocess, ev.tuned)

    def _on_finished(self) -> None:
        self._worker = None
        self._stop = None
        self._set_busy(False)
        self.eta_label.setText("")

    def _model_name(self, parent: Model, use_edit: bool = True) -> str:
        name = self.name_edit.text().strip() if use_edit else ""
        if name:  # a valid name, not a shipped model's (a model of the user's by it would hide that one)
            return model_files.check_user_name(name)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = parent.name.split("-ft-")[0]
        return f"{base}-ft-{stamp}"

    def _finish(self, result, postprocess, tuned=None) -> None:
        run = self._run
        if run is None:  # no fine-tune started: nothing to finish
            return
        parent = run.parent
        try:
            name = self._model_name(parent)
        except ModelError as exc:
            show_error(f"{exc}; using an automatic name")
            name = self._model_name(parent, use_edit=False)
        # the weights the network holds: the best, or the run's own best when none beat the start's (offered below)
        got = result.best if result.improved or result.trained is None else result.trained
        card = run.model_card(name, result, postprocess, got, tuned)
        model = Model(run.net, card)
        self.progress.setValue(1000)
        how = "stopped" if result.stopped else "done"
        scores = ""
        if result.baseline is not None and got is not None:
            scores = f"validation AP@0.5 {result.baseline['ap50']:.3f} -> {got['ap50']:.3f}"
            scores += evidence_note(got.get("n_true"))
        if result.baseline is not None and not result.improved:
            if result.trained is not None:  # the run's own best weights: the fine-tuned model
                self._offer(
                    model,
                    "Use it anyway",
                    "Save and select the fine-tuned model although it scored lower",
                    "Using the fine-tuned model although it scored lower on validation.",
                )
            msg = (
                f"Training {how} ({result.steps} steps): the fine-tuned model is not better on the held-out "
                f"validation tiles ({scores}). Kept {parent.name}."
            )
            show_warning(msg)
            self.result_label.setText(msg)
            return
        notes = thresholds_note(tuned)
        if result.anchor > 0:  # how much the start's own validation score held the weights near it
            notes += f" Held near {parent.name} in proportion to its validation score (anchor {result.anchor:.1f})."
        self._accept(model, f"Training {how} ({result.steps} steps, {result.seconds / 60:.1f} min); {scores}.{notes}")

    def _offer(self, model: Model, text: str, tip: str, message: str) -> None:
        """Keep the fine-tuned ``model`` unsaved, with a button to save and select it (``message``: said then)."""
        self._rejected, self._rejected_message = model, message
        self.use_anyway_btn.setText(text)
        self.use_anyway_btn.setToolTip(tip)
        self.use_anyway_btn.setVisible(True)

    def use_anyway(self) -> None:
        """Save and select the fine-tuned model that did not beat its parent, or whose saving failed."""
        if self._rejected is not None:
            model, self._rejected = self._rejected, None
            self.use_anyway_btn.setVisible(False)
            self._accept(model, self._rejected_message)

    def _accept(self, model: Model, message: str) -> None:
        trained, said = model, message  # as trained and said: what a retry after a failed save starts from
        if self._run is not None and self._run.only_kind:
            try:
                model = kind_weights.with_kind_weights(self._run.parent, self._run.only_kind, model, model.name)
                label = MODALITY_LABELS.get(self._run.only_kind, self._run.only_kind)
                parent = self._run.parent.name
                message += f" The new weights answer for {label} images only; other images keep {parent}'s."
            except ModelError as exc:
                show_error(f"Could not give {self._run.parent.name} these weights: {exc}. Saved as a model of its own.")
        # never replace a saved model or take the name of one in the list (one opened from a file too), the
        # parent least of all; names that differ only in case are one file on macOS and Windows
        taken = {n.casefold() for n in [*model_files.list_models(), *self.session.model_names()]}
        if model.name.casefold() in taken:
            asked, parent = model.name, self._run.parent if self._run is not None else model
            base = self._model_name(parent, use_edit=False)  # once: its time stamp, not a new one per try
            name, n = base, 2
            while name.casefold() in taken:
                name, n = f"{base}-{n}", n + 1
            model.card.name = name
            show_info(f"A model named '{asked}' exists; saving as '{name}' instead.")
        try:
            path = model_files.save_user_model(model, model.name, overwrite=False)
        except (OSError, ModelError) as exc:
            text = f"Could not save the fine-tuned model: {exc}"
            show_error(text)
            # the trained network is kept: free space or fix the folder, then save again
            self._offer(trained, "Save it again", "Try saving the fine-tuned model again", said)
            self.result_label.setText(f"{text}. The model is kept unsaved: press 'Save it again' to retry.")
            return
        self._previous_model = self.session.model_name()
        self.session.cache_model(model.name, model)
        self.session.select_model(model.name)  # with the new model's (tuned) thresholds
        self.revert_btn.setEnabled(True)
        self.result_label.setText(f"{message} Saved as '{model.name}' ({path.parent}).")
        show_info(f"Fine-tuned model saved as '{model.name}' and selected.")
        if self.resegment_check.value:
            self.resegment(model)

    def resegment(self, model: Model) -> None:
        """Segment the trained images again with ``model``, each into a new layer, and compare."""
        for pair in self._run.pairs if self._run is not None else []:
            if pair[0] == "folder":
                continue
            image_name, labels_name = pair
            if image_name not in self.viewer.layers:
                show_warning(f"'{image_name}' was removed meanwhile: not re-segmented (the model is saved).")
                continue
            image = self.viewer.layers[image_name]
            labels = self.viewer.layers[labels_name] if labels_name in self.viewer.layers else None
            planes = self._planes(labels, self.session.image_layout(image)) if labels is not None else None
            self.session.segment(
                layer=image,
                new_layer_name=f"{image_name} labels ({model.name})",
                indices=planes,
                on_done=lambda target, labels=labels: self.compare(labels, target),
            )
            break  # one run at a time: the first trained image (others: use Segment)

    def compare(self, corrected: Labels | None, new: Labels) -> str:
        """Before/after: how well the old and the new model's labels agree with the corrected labels."""
        if corrected is None or corrected.data.shape != new.data.shape:
            return ""
        some = self.reviewed_choice()[0] == "labelled"  # labels that mark only some cells
        report = resegment_report(corrected.data, new.data, self.tracker.corrections(corrected), some, corrected.name)
        text = f"Re-segmented into '{new.name}': {report}. Your labels are unchanged."
        # the most telling number of a fine-tune: shown first, and as a notification
        self.result_label.setText(text + "\n" + self.result_label.text())
        show_info(text)
        return text

    def revert(self) -> None:
        """Select the model that was current before the last fine-tune."""
        if self._previous_model:
            self.session.select_model(self._previous_model)
            show_info(f"Back to '{self._previous_model}'. The fine-tuned model stays in your model folder.")
            self.result_label.setText(f"Reverted to '{self._previous_model}'.")
            self.revert_btn.setEnabled(False)

    def preview_augmentation(self, n: int = 8):
        """Add an image layer with ``n`` augmented training patches (and their classes)."""
        try:  # the patches Fine-tune would train on: its start's network reads them, with its settings
            samples = self.start_samples(self._start_model())[2]
            config = self.config(fine_tune=self.start_combo.value != "scratch")
            x, cls, weight, dist = PatchSampler(samples, config, torch.device("cpu")).batch(n)
        except (InputError, ModelError, TrainingError, ValueError) as exc:
            show_error(str(exc))
            return None
        name = "augmentation preview"
        for layer_name in (name, f"{name} classes"):
            if layer_name in self.viewer.layers:
                self.viewer.layers.remove(layer_name)
        meta = {META_KEY: {"role": HELPER}}
        if x.shape[1] == 3:  # colour patches (a colour network's H&E images): in colour, stain mix and all
            self.viewer.add_image(x.permute(0, 2, 3, 1).clamp(0, 1).numpy(), name=name, rgb=True, metadata=meta)
        else:
            self.viewer.add_image(x[:, 0].numpy(), name=name, colormap="gray", metadata=meta)
        return self.viewer.add_labels(cls.numpy().astype(np.int32), name=f"{name} classes", opacity=0.4, metadata=meta)


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


__all__ = ["FineTuneSection"]
