"""The Fine-tune section's training data: which image/labels pairs and folders, which pixels were reviewed, as samples.

A mixin of :class:`~napari_unet_loop.gui.finetune_section.FineTuneSection`: it reads the ticked
pairs and folders into training samples the way segmentation reads images, with the dock's
layout, channel and imaging choices from the section's ``session`` (:class:`.session.Session`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog
from scipy import ndimage as ndi

from ..core.axes import z_stack_of
from ..core.edits import changed_objects, correction_weight, edited_region, labelled_region, trust_near_labels
from ..core.finetune import check_samples
from ..core.image import InputError, prepare_input
from ..core.modality import ModalityReport, detect, doubt_note, input_modality, settle_doubt
from ..core.model_files import Model
from ..core.planes import SegmentSettings, stack_settings
from ..core.sampling import Sample
from ..core.targets import object_ids, separate_mask
from ..io.images import ReadError, is_ctc_gold_truth, pair_files, unpaired_note
from ..io.training import mask_note, training_reports, training_samples
from .layers import (
    META_KEY,
    Layout,
    is_helper,
    plane_sample,
    plane_shape,
    read_plane,
    sample_plane,
    stack_shape,
    z_position,
)

# texts of the reviewed-region choices; the items' data is ``(kind, Shapes layer name or None)``,
# kind one of "whole", "edited", "labelled", "shapes"
REGION_WHOLE = "whole image (all reviewed)"
REGION_EDITED = "only what I edited or accepted (+ margin)"
REGION_LABELLED = "near labelled objects (not every cell)"
REGION_SHAPES = "inside Shapes layer: "


class TrainingData:
    """Training data of the Fine-tune section (a mixin)."""

    def find_pairs(self) -> list[tuple[str, str]]:
        """``(image name, labels name)`` pairs in the viewer: labels of an image's shape, named after it first."""
        images = [lyr for lyr in self.viewer.layers if isinstance(lyr, Image) and not is_helper(lyr)]
        pairs = []
        for labels in self.viewer.layers:
            if not isinstance(labels, Labels) or is_helper(labels):
                continue
            fits = [img for img in images if self._fits(img, labels)]
            named = [img for img in fits if labels.name.startswith(f"{img.name} labels")]
            if named or fits:
                pairs.append(((named or fits)[0].name, labels.name))
        return pairs

    def _fits(self, image: Image, labels: Labels) -> bool:
        try:
            lay = self.session.image_layout(image)
        except InputError:
            return False
        return tuple(labels.data.shape) == (*stack_shape(image, lay), *plane_shape(image))

    def chosen_pairs(self) -> list[tuple]:
        """The ticked pairs."""
        return [
            self.pairs_list.item(i).data(Qt.UserRole)
            for i in range(self.pairs_list.count())
            if self.pairs_list.item(i).checkState() == Qt.Checked
        ]

    def update_corrections(self) -> None:
        """Show how many objects the user corrected in the ticked layers."""
        total = 0
        for pair in self.chosen_pairs():
            if pair[0] == "folder" or pair[1] not in self.viewer.layers:
                continue
            for original, current in self.tracker.corrections(self.viewer.layers[pair[1]]).values():
                total += changed_objects(original, current)
        self.corrections_label.setText(f"{total} object(s) corrected" if total else "no corrections yet")

    def only_model_masks(self) -> bool:
        """Whether every ticked pair is a labels layer the plugin made that no one has changed since.

        A fine-tune on the model's own masks teaches it nothing new: on H&E, fitting the whole network
        to them cost the kind's other images 0.12-0.17 AP@0.5 (docs/model.md, the loop benchmark).
        """
        pairs = self.chosen_pairs()
        layers = self.viewer.layers
        return bool(pairs) and all(
            pair[0] != "folder" and pair[1] in layers and not self.tracker.is_edited(layers[pair[1]]) for pair in pairs
        )

    def _choose_folders(self) -> None:
        images = QFileDialog.getExistingDirectory(self, "Folder of images")
        if not images:
            return
        labels = QFileDialog.getExistingDirectory(self, "Folder of label files (matched to the images by name)")
        if labels:
            self.add_folders(images, labels)

    def add_folders(self, images_dir: str | Path, labels_dir: str | Path) -> bool:
        """Add a folder pair of images and label files to the training data."""
        try:
            found = pair_files(images_dir, labels_dir)
        except ReadError as exc:
            show_error(str(exc))
            return False
        self._folders.append((Path(images_dir), Path(labels_dir)))
        self.reset_choices()
        note = ""
        if found and all(is_ctc_gold_truth(lab) for _, lab in found):  # as train does with such files
            self.region_combo.setCurrentText(REGION_LABELLED)
            note = (
                "; they are Cell Tracking Challenge gold truth (man_segNNN), which may mark only some cells: "
                f"Reviewed is now '{REGION_LABELLED}' (choose 'whole image' if yours mark every cell)"
            )
        left = unpaired_note(images_dir, labels_dir, found)
        note += f". {left[0].upper()}{left[1:]}" if left else ""
        show_info(f"{len(found)} image/label file pairs added from {Path(images_dir).name}{note}")
        return True

    # ------------------------------------------------------------------ data
    def reviewed_choice(self) -> tuple[str, str | None]:
        """The *Reviewed* choice: ``(kind, Shapes layer name or None)``, kind as in the texts above."""
        return self.region_combo.currentData() or ("whole", None)

    def _region_masks(self, labels: Labels, index, shape) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(ignore, weight)`` for one plane, from the reviewed-region choice and the corrections."""
        mode, name = self.reviewed_choice()
        corr = self.tracker.corrections(labels).get(index)
        weight = None
        if corr is not None and self.weight_spin.value > 1:
            weight = correction_weight(corr[0], corr[1], self.weight_spin.value)
        if mode == "edited":
            region = np.zeros(shape, bool) if corr is None else edited_region(corr[0], corr[1])
            accepted = [
                lab
                for plane, lab in labels.metadata.get(META_KEY, {}).get("reviewed", [])
                if tuple(plane) == tuple(index)
            ]
            if accepted:  # objects accepted in the review queue count as reviewed
                current = np.asarray(labels.data[index])
                region |= ndi.binary_dilation(np.isin(current, accepted), iterations=4)
            return ~region, weight
        if mode == "labelled":  # labels that mark some cells: the others are not background
            return ~labelled_region(np.asarray(labels.data[index])), weight
        if mode == "shapes":
            if name not in self.viewer.layers:
                raise InputError(f"the Shapes layer '{name}' is gone; choose another reviewed region")
            shapes = self.viewer.layers[name]
            if len(shapes.data) == 0:
                raise InputError(f"the Shapes layer '{name}' holds no shapes: draw rectangles around reviewed areas")
            masks = np.asarray(shapes.to_masks(mask_shape=shape)) if shapes.ndim == 2 else None
            if masks is None:
                raise InputError("the reviewed-region Shapes layer must be 2D (draw it on the image plane)")
            return ~masks.any(0), weight
        return None, weight

    def build_samples(self, model: Model, say: bool = True) -> tuple[list[Sample], dict]:
        """Read the ticked pairs and folders into training samples (on the main thread).

        ``say``: whether to tell the user how labels were read (masks as their pieces); ``False``
        when the same data is read again for another start.

        Raises
        ------
        InputError
            For missing layers, shape mismatches, empty labels or too little annotation.
        """
        modality = self.training_modality(model)
        samples: list[Sample] = []
        described: list[str] = []
        pairs = self.chosen_pairs()
        if not pairs:
            raise InputError(
                "no training data: segment an image (its labels layer appears here) or add a labels layer "
                "of the image's shape, correct it, and tick it"
            )
        # grey images between fluorescence and brightfield (phase contrast, DIC) all reach the network alike,
        # as the new model will read them (train --from does the same)
        reports = self._detect_planes(model, modality, pairs)
        doubt = settle_doubt(reports, model.card.kind_in_doubt)
        model = model.reading_in_doubt_as(doubt)
        card = model.card
        some = self.reviewed_choice()[0] == "labelled"  # labels that mark only some cells (folders too)
        for pair in pairs:
            if pair[0] == "folder":  # read as the command line's train reads them
                _, images_dir, labels_dir = pair
                notes: list[str] = []
                read = training_samples(pair_files(images_dir, labels_dir), model, modality, notes=notes)
                note = mask_note(notes) if say else None  # label files read as masks: said, as for a layer
                if note:
                    show_info(f"{Path(labels_dir).name}: {note}")
                samples.extend(trust_near_labels(read) if some else read)  # the other regions are for layers
                described.append(
                    f"folder {images_dir} ({len(read)} image(s) or plane(s)"
                    + (", trained near their labelled objects)" if some else ")")
                )
                continue
            image_name, labels_name = pair
            for name, kind in ((image_name, Image), (labels_name, Labels)):
                if name not in self.viewer.layers or not isinstance(self.viewer.layers[name], kind):
                    raise InputError(f"the layer '{name}' is gone; tick the pairs again")
            image, labels = self.viewer.layers[image_name], self.viewer.layers[labels_name]
            lay = self.session.image_layout(image)
            expected = (*stack_shape(image, lay), *plane_shape(image))
            if tuple(labels.data.shape) != expected:
                raise InputError(
                    f"labels '{labels.name}' have shape {tuple(labels.data.shape)}, but image '{image.name}' "
                    f"needs {expected}"
                )
            if not np.issubdtype(labels.data.dtype, np.integer):
                raise InputError(f"labels '{labels.name}' are {labels.data.dtype}: label ids must be whole numbers")
            n_before = len(samples)
            channel = self.session.image_channel(image)
            stack_of = z_stack_of(stack_shape(image, lay), z_position(image, lay))
            stacks: dict[tuple, SegmentSettings] = {}  # a Z stack's planes train as they are segmented: together
            for index in self._planes(labels, lay):
                lab = np.array(labels.data[index])  # a copy: painting on while it trains changes nothing it reads
                try:
                    lab = object_ids(lab, f"labels layer '{labels.name}'")  # the rule training samples follow
                except ValueError as exc:
                    raise InputError(str(exc)) from None
                lab, masked = separate_mask(lab)  # every object painted with one id: as label files are read
                if masked and say:
                    show_info(
                        f"'{labels.name}' marks its objects with one id{f' in plane {index}' if index else ''}: "
                        "each separate piece trains as one object (touching objects stay one; give each its "
                        "own id with the new-label tool)"
                    )
                ignore, weight = self._region_masks(labels, index, lab.shape)
                if ignore is not None and ignore.all():
                    continue
                fed = SegmentSettings(rgb=image.rgb or None, channel=channel, modality=modality)
                if stack_of is not None:
                    stack = tuple(stack_of(index))
                    if stack not in stacks:
                        stacks[stack] = stack_settings(
                            model, partial(read_plane, image, lay), stack, fed, partial(sample_plane, image, lay)
                        )
                    fed = stacks[stack]
                plane = read_plane(image, lay, index)
                # the kind the plane reaches the network as: the Imaging choice, else the detected kind
                kind = input_modality(model, plane, fed.modality, rgb=fed.rgb, channel=channel)
                x = prepare_input(
                    plane,
                    model.input_channels(kind),
                    card.normalization,
                    rgb=fed.rgb,
                    channel=channel,
                    limits=fed.limits,
                    modality=kind,
                )
                name = f"{labels.name}{list(index) if index else ''}"
                samples.append(Sample(x, lab, ignore, weight, name=name, kind=kind or ""))
            described.append(f"{labels.name} ({len(samples) - n_before} plane(s)) on {image.name}")
        if not samples:
            raise InputError("nothing to train on: no plane is reviewed (edit some objects, or choose another region)")
        annotated = check_samples(samples)  # the same checks as the command line's train
        info = {"sources": described, "n_samples": len(samples), "annotated_pixels": annotated}
        if doubt:
            info["kind_in_doubt"] = doubt
            note = doubt_note(reports, doubt)
            if note:
                info["doubt_note"] = note
        return samples, info

    def _detect_planes(self, model: Model, modality: str, pairs: list[tuple]) -> list[ModalityReport]:
        """What the imaging detection finds on the annotated planes of the ticked pairs and folders.

        Empty unless images are detected (``"auto"``, one-channel models). A pair that cannot be
        read is skipped here: reading it into samples says why.
        """
        if modality != "auto" or model.card.architecture.in_channels != 1:
            return []
        reports: list[ModalityReport] = []
        for pair in pairs:
            try:
                if pair[0] == "folder":
                    reports.extend(training_reports(pair_files(pair[1], pair[2]), model, modality))
                    continue
                image, labels = (self.viewer.layers[n] if n in self.viewer.layers else None for n in pair)
                if not isinstance(image, Image) or not isinstance(labels, Labels):
                    continue
                lay = self.session.image_layout(image)
                channel = self.session.image_channel(image)
                for index in self._planes(labels, lay):
                    if np.asarray(labels.data[index]).any():  # detect()'s own subsample, not the whole plane
                        plane = plane_sample(image, lay, index)
                        plane = read_plane(image, lay, index) if plane is None else plane
                        reports.append(detect(plane, rgb=image.rgb or None, channel=channel))
            except (InputError, ReadError, ValueError, IndexError):
                continue
        return reports

    def training_modality(self, model: Model) -> str:
        """How training images reach the network: as segmentation feeds them.

        The dock's Imaging choice when it is not Auto, else the model card's setting
        (``"auto"``: each image detected and converted; ``"none"``: grey as it is).
        """
        choice = self.session.modality_choice()
        return model.card.modality if choice is None else choice

    def _planes(self, labels: Labels, lay: Layout) -> list[tuple[int, ...]]:
        """Planes to train on: in a stack, those the user corrected, or that hold labels the plugin did not write.

        A plane the plugin wrote and nobody touched is the model's own output, not ground truth.
        """
        if not lay.stack_axes:
            return [()]
        corrections = self.tracker.corrections(labels)
        data = labels.data
        out = []
        for ix in np.ndindex(*data.shape[: len(lay.stack_axes)]):
            ix = tuple(int(i) for i in ix)
            if ix in corrections:
                original, current = corrections[ix]
                if not np.array_equal(original, current):
                    out.append(ix)
            elif np.asarray(data[ix]).any():
                out.append(ix)
        return out

    # ------------------------------------------------------------------ running
