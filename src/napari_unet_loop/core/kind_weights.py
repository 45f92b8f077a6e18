"""Weights of their own for one imaging kind inside a model.

What ``models --add-kind`` and the dock's *Only for images of this kind* build.

A model that detects each image's kind may answer for one kind with another network of the
same architecture and input: a *specialist* fine-tuned on images of that kind only. For H&E
images the specialist may read the image's colour (R, G and B) where the model reads a grey
plane (the kind's record then says ``in_channels: 3``). Its
weights and thresholds are stored in the same model file (``by_kind.<kind>.`` tensors,
``weights_by_kind`` and ``postprocess_by_kind`` on the card); :meth:`.model_files.Model.for_kind`
picks them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import ModelError
from .model_card import card_summary, now_iso
from .model_files import Model

SAME_SIZE = 1.33  # default object diameters a kind's own weights may differ by: the training zoom range


def same_size(a: float | None, b: float | None) -> bool:
    """Whether two default object diameters may share one model (unknown ones always may).

    Weights for one imaging kind learnt their images at ``b`` px; the model segments them at
    ``a`` px. Within :data:`SAME_SIZE` of each other (the training zoom range) they agree.

    Examples
    --------
    >>> same_size(20.0, 25.0), same_size(20.0, 40.0), same_size(None, 40.0)
    (True, False, True)
    """
    return not (a and b) or max(a, b) / min(a, b) <= SAME_SIZE


def add_kind_weights(model: Model, kind: str, specialist: Model, record: dict[str, Any] | None = None) -> Model:
    """Give ``model`` its own weights and thresholds for images of one imaging kind.

    The specialist is a model of the same network and input (trained on images of that
    kind only, e.g. fine-tuned from ``model`` with ``train --include``); its weights answer
    for that kind from now on, with its general thresholds. For H&E images it may be a
    colour network of the same architecture (3 input channels, R, G and B) in a grey model.

    Parameters
    ----------
    model : Model
        The model to extend (changed in place).
    kind : str
        The imaging kind (``"fluorescence"``, ``"brightfield"`` or ``"he"``).
    specialist : Model
        The model whose weights and thresholds the kind gets.
    record : dict, optional
        What to record in the card's ``weights_by_kind`` (the default: the specialist's
        name, description, training record without its history, and metrics).

    Returns
    -------
    Model
        ``model``.

    Raises
    ------
    ModelError
        For an unknown kind; if the specialist's network, normalisation or network object
        diameter differ from the model's, or its default object diameter by more than the
        training zoom (1.33x); if it reads images as another kind; if the model does not
        detect each image's kind (its imaging setting is not ``"auto"``); for other input
        channels than the model's but a colour network for H&E images in a grey model.
    """
    from .modality import MODALITIES

    if kind not in MODALITIES:
        raise ModelError(f"unknown imaging kind {kind!r} (one of {', '.join(MODALITIES)})")
    own = specialist.for_kind(kind)  # a specialist with weights of its own for the kind gives those
    mine, theirs = model.card, own.card
    channels = theirs.architecture.in_channels
    colour = channels == 3 and mine.architecture.in_channels == 1 and kind == "he"
    if channels != mine.architecture.in_channels and not colour:
        raise ModelError(
            f"{specialist.name} cannot answer for {kind} images in {model.name}: it reads "
            f"{channels} input channel(s), {model.name} {mine.architecture.in_channels}; only H&E images may "
            f"have a colour network (3 channels) in a grey model, and the other kinds' weights read the same "
            f"input as the model (use {specialist.name} as a model of its own)"
        )
    for what, a, b in (
        (
            "network",
            mine.architecture.to_dict(),
            replace(theirs.architecture, in_channels=mine.architecture.in_channels).to_dict(),
        ),
        ("normalisation", mine.normalization.to_dict(), theirs.normalization.to_dict()),
        ("object diameter", mine.diameter, theirs.diameter),
    ):
        if a != b:
            raise ModelError(f"{specialist.name} cannot answer for {kind} images in {model.name}: its {what} differs")
    if theirs.modality not in (("none",) if colour else ("auto", kind)):
        raise ModelError(f"{specialist.name} reads images as {theirs.modality!r}, not as {kind} images")
    a, b = model.image_diameter, specialist.image_diameter
    if not same_size(a, b):
        raise ModelError(
            f"{specialist.name} takes images as objects of {b:.0f} px, {model.name} as objects of {a:.0f} px: "
            f"{kind} images would reach its network at another size than it learnt (fine-tune it with "
            f"--diameter {a:.0f}, or keep it as a model of its own)"
        )
    if mine.modality != "auto":
        raise ModelError(
            f"{model.name} does not detect each image's kind (its imaging setting is {mine.modality!r}, not 'auto'): "
            f"weights for {kind} images would never be used"
        )
    if record is None:
        summary = card_summary(theirs)
        record = {key: summary.get(key) for key in ("name", "description", "training", "metrics", "created")}
    if colour:
        record = {**record, "in_channels": channels}  # the kind's network reads R, G and B
    if theirs.native_diameters:  # the sizes it learnt unscaled go with it (Model.for_kind gives them back)
        record = {**record, "native_diameters": list(theirs.native_diameters)}
    model.nets_by_kind[kind] = own.net
    model.card.weights_by_kind[kind] = record
    model.card.postprocess_by_kind[kind] = own.card.postprocess
    if mine.kind_in_doubt is None and theirs.kind_in_doubt == kind:
        # the specialist learnt grey images in doubt as this kind: they go to its weights, read that way
        mine.kind_in_doubt = kind
    return model


def with_kind_weights(model: Model, kind: str, specialist: Model, name: str) -> Model:
    """A new model named ``name``: ``model`` with ``specialist``'s weights and thresholds for ``kind`` images.

    ``model`` is left as it is (its networks are shared, not copied); the new card names it as
    the parent. Its scores are not the new model's: the card keeps none (the kind's own are in
    ``weights_by_kind``). What ``models --add-kind`` and the dock's *Only for images of this kind* save.

    Parameters
    ----------
    model : Model
        The model whose other images keep its weights.
    kind : str
        The imaging kind.
    specialist : Model
        The model whose weights and thresholds the kind gets (see :func:`add_kind_weights`).
    name : str
        The new model's name.

    Returns
    -------
    Model

    Raises
    ------
    ModelError
        As :func:`add_kind_weights`.
    """
    from .modality import LABELS

    card = replace(model.card, name=name, parent=model.name, created=now_iso(), metrics={})
    card.postprocess_by_kind = dict(model.card.postprocess_by_kind)
    card.weights_by_kind = dict(model.card.weights_by_kind)
    card.description = (
        f"{model.card.description or model.name}, with weights of its own for {LABELS.get(kind, kind)} images"
    )
    return add_kind_weights(Model(model.net, card, nets_by_kind=dict(model.nets_by_kind)), kind, specialist)
