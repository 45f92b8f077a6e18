"""Annotated image files as training samples, read the way ``segment`` reads them.

One home for turning image/label file pairs into :class:`~napari_unet_loop.core.sampling.Sample`
objects: the command line's ``train`` and ``tune`` and the dock's *Add folders...* all call
:func:`training_samples`. An image is read with its axes (:func:`.images.read_with_axes`); a file
that holds a stack (Z, T) gives one sample per plane whose labels hold an object, and the planes
of a Z stack are normalised together, as the plane loop segments them
(:func:`napari_unet_loop.core.planes.stack_settings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.axes import Planes
from ..core.image import InputError, prepare_input
from ..core.modality import ModalityReport, detect, input_modality
from ..core.model_files import Model
from ..core.planes import SegmentSettings, stack_settings
from ..core.sampling import Sample
from .images import fit_labels, read_label_file, read_with_axes


class SampleFileError(InputError):
    """A training file cannot be used; ``path`` names it, the message says why."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path.name}: {message}")
        self.path = path


def training_samples(
    pairs: Sequence[tuple[Path, Path]],
    model: Model,
    modality: str | None = None,
    channel: int | None = None,
    axes: str | None = None,
    notes: list[str] | None = None,
) -> list[Sample]:
    """Image/label file pairs as training samples, prepared as ``model`` segments them.

    Parameters
    ----------
    pairs : sequence of tuple
        ``(image file, label file)`` pairs (e.g. from :func:`.images.pair_files`).
    model : Model
        The model to train (its input channels, normalisation and imaging modality).
    modality : str, optional
        Imaging modality (``"auto"`` detects each image's kind); the model card's when omitted.
    channel : int, optional
        Channel to train on in multichannel images.
    axes : str, optional
        Axes of the image files (e.g. ``"ZCYX"``); what each file declares, else guessed.
    notes : list of str, optional
        Where to say which label files were read as masks (one id in separate pieces: each
        piece one object, :func:`.images.read_label_file`).

    Returns
    -------
    list of Sample
        One per 2D image, and one per annotated plane of a stack (named ``stem[z]``); each
        with the kind of imaging it reaches the network as (for balancing, the weights a
        fine-tune starts from, and per-kind scores).

    Raises
    ------
    SampleFileError
        For a file that cannot be read, labels whose shape does not match the image's planes,
        or bad channel or axes choices.
    """
    from .images import ReadError

    setting = modality or model.card.modality
    samples = []
    for img_path, lab_path in pairs:
        try:
            data, file_axes = read_with_axes(img_path, axes, model.card.architecture.in_channels, channel)
            labels = read_label_file(lab_path, notes)
            samples.extend(_file_samples(model, data, file_axes, labels, Path(img_path).stem, setting, channel))
        except (InputError, ReadError, ValueError) as exc:
            raise SampleFileError(Path(img_path), str(exc)) from exc
    return samples


def mask_note(notes: Sequence[str]) -> str | None:
    """One line for the label files :func:`training_samples` read as masks (``notes``), or ``None``."""
    if not notes:
        return None
    if len(notes) == 1:
        return f"{notes[0]} (touching objects stay one: give each its own id to train on them apart)"
    first = notes[0].split(" is a mask")[0]
    return (
        f"{len(notes)} label files are masks (one id in separate pieces; the first: {first}): each piece "
        "trains as one object (touching objects stay one: give each its own id to train on them apart)"
    )


def training_reports(
    pairs: Sequence[tuple[Path, Path]],
    model: Model,
    modality: str | None = None,
    channel: int | None = None,
    axes: str | None = None,
) -> list[ModalityReport]:
    """What the imaging detection finds on each annotated plane of image/label file pairs.

    For :func:`napari_unet_loop.core.modality.settle_doubt`: a training set's grey images in
    doubt are all read alike. Only where the images are detected (``modality`` or the card's
    ``"auto"``, one-channel models); files that cannot be read are left to
    :func:`training_samples`, which says why.

    Returns
    -------
    list of ModalityReport
        One per plane whose labels hold an object (empty when nothing is detected).
    """
    from .images import ReadError

    if (modality or model.card.modality) != "auto" or model.card.architecture.in_channels != 1:
        return []
    reports = []
    for img_path, lab_path in pairs:
        try:
            data, file_axes = read_with_axes(img_path, axes, 1, channel)
            labels = read_label_file(lab_path)
            for plane, _, _ in _annotated_planes(Planes.of(data, file_axes), labels):
                reports.append(detect(plane, channel=channel))
        except (InputError, ReadError, ValueError):
            continue
    return reports


def _annotated_planes(source: Planes, labels: np.ndarray):
    """``(plane, its labels, index)`` for each plane of ``source`` whose labels hold an object.

    Raises
    ------
    InputError
        For labels whose shape does not match the image's planes, or none annotated.
    """
    labels = fit_labels(labels, _planes_shape(source))  # a (Y, X, 1) mask of a (Y, X) image
    if source.stack.shape[0] == 1:  # one 2D image
        yield source.read(()), labels, ()
        return
    planes_shape = _planes_shape(source)
    if labels.shape != planes_shape:
        raise InputError(
            f"the labels have shape {labels.shape}, but the image's planes need {planes_shape} (axes {source.axes}YX)"
        )
    annotated = [index for index in source.indices if labels[index].any()]  # empty planes are not annotated
    if not annotated:
        raise InputError(f"no plane of the {len(source.indices)} holds a labelled object")
    for index in annotated:
        yield source.read(index), labels[index], index


def _planes_shape(source: Planes) -> tuple[int, ...]:
    """The shape labels of ``source`` have: ``(Y, X)`` for one 2D image, else the stack's axes then Y, X."""
    plane = tuple(source.stack.shape[1:3])
    return plane if source.stack.shape[0] == 1 else (*source.shape, *plane)


def _file_samples(
    model: Model, data: np.ndarray, axes: str, labels: np.ndarray, stem: str, setting: str, channel: int | None
) -> list[Sample]:
    source = Planes.of(data, axes)
    if source.stack.shape[0] == 1:  # one 2D image
        labels = fit_labels(labels, _planes_shape(source))  # a (Y, X, 1) mask of a (Y, X) image
        return [_plane_sample(model, source.read(()), labels, stem, setting, channel)]
    stack_of = source.stack_of()
    stacks: dict[tuple, SegmentSettings] = {}
    samples = []
    for plane, plane_labels, index in _annotated_planes(source, labels):
        fed = SegmentSettings(channel=channel, modality=setting)
        if stack_of is not None:  # the planes of a Z stack train as they are segmented: together
            stack_ix = tuple(stack_of(index))
            if stack_ix not in stacks:
                stacks[stack_ix] = stack_settings(model, source.read, stack_ix, fed)
            fed = stacks[stack_ix]
        name = f"{stem}{list(index)}"
        samples.append(_plane_sample(model, plane, plane_labels, name, fed.modality, channel, fed.limits))
    return samples


def _plane_sample(
    model: Model,
    plane: np.ndarray,
    labels: np.ndarray,
    name: str,
    setting: str,
    channel: int | None,
    limits: tuple[tuple[float, float], ...] | None = None,
) -> Sample:
    """One plane as a sample, converted by its kind.

    Its ``kind``: the one it reaches the network as (an Imaging choice included, as the dock's
    samples), else the detected one (models that take grey as it is).
    """
    card = model.card
    kind = detect(plane, channel=channel).read_as(card.kind_in_doubt)
    use = input_modality(model, plane, kind if setting == "auto" else setting, channel=channel)
    x = prepare_input(
        plane, model.input_channels(use), card.normalization, channel=channel, limits=limits, modality=use
    )
    return Sample(x, labels, name=name, kind=use or kind)
