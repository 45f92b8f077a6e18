"""The fine-tune policy shared by the dock's Fine-tune and the command line's ``train``.

One home for what a user does not choose, so ``napari-unet-loop train --from default`` trains as
the dock's Fine-tune does: the presets (same patch, batch, learning rate, normalisation statistics,
augmentation, validation interval; from scratch, the batch and learning rate of the shipped
model's first stage, plus a light blur), the checks that refuse data that cannot teach, the
samples brought to the network's object size and the sizes recorded in the new card, and the
card's training record. The threshold re-tuning rule that ends a fine-tune is :mod:`.retune`'s.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .augment import AugmentConfig
from .image import InputError
from .sampling import VALIDATION_SUFFIX, Sample
from .scale import check_diameter, median_diameter, resize, resize_labels, scale_factor, scaled_shape
from .train import TrainConfig, training_precision

if TYPE_CHECKING:
    from .model_card import ModelCard
    from .model_files import Model

MIN_ANNOTATED_PX = 32 * 32  # less reviewed area than a 32 x 32 patch teaches nothing reliable

FINE_TUNE = {
    "patch_size": 128,
    "batch_size": 8,
    # at a fixed step budget, 2e-3 beat 5e-4 in 5 of 6 paired runs (held-out AP@0.5 +0.04 on average;
    # ISBI EM and DSB colour, k = 2; docs/model.md); 4e-3 was no better than 2e-3
    "learning_rate": 2e-3,
    # a few images: keep the starting model's normalisation statistics (measured in docs/model.md)
    "freeze_norm": True,
    # stay near the starting weights as far as they already segment the user's validation stripe:
    # one corrected DSB image, 600 steps, the kind's other validation images: AP@0.5 -0.106 -> -0.030
    # against the start, corrections learnt 15 -> 16 of 29; ISBI EM (a new kind, no pull earned)
    # k = 1, 2, 5 unchanged within noise; a fixed pull of 30 halved ISBI's AP@0.5 (docs/model.md)
    "anchor": 30.0,
    "blur": 0.0,
    "stain": 0.0,
}
FROM_SCRATCH = {
    "patch_size": 128,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "freeze_norm": False,
    "anchor": 0.0,  # random starting weights: nothing to keep
    "blur": 1.0,  # out-of-focus and dim nuclei, for a model meant for many kinds of image
    "stain": 0.0,
}


def validation_interval(minutes: float | None) -> float:
    """Seconds between validations: ten per run, at least every 10 s (60 s for a step budget)."""
    return max(10.0, minutes * 60 / 10) if minutes else 60.0


def validation_steps(steps: int | None) -> int | None:
    """Steps between validations for a step budget: ten per run, so the run does not follow the load.

    Examples
    --------
    >>> validation_steps(600), validation_steps(5), validation_steps(None)
    (60, 1, None)
    """
    return max(1, steps // 10) if steps else None


def preset(fine_tune: bool, minutes: float | None = 5.0, **overrides: Any) -> TrainConfig:
    """Training settings for fine-tuning a model (``fine_tune``) or training one from scratch.

    Parameters
    ----------
    fine_tune : bool
        Start from a trained model (the dock's Fine-tune, ``train --from MODEL``) or from
        random weights (``train --from scratch``).
    minutes : float or None
        Time budget (``None`` with ``steps`` in ``overrides``: then it validates every tenth of
        the steps, unless ``val_every_s`` is given).
    **overrides
        Any :class:`~napari_unet_loop.core.train.TrainConfig` field the user set; ``None``
        values keep the preset.

    Returns
    -------
    TrainConfig
        The settings.

    Examples
    --------
    >>> preset(True, minutes=5).batch_size
    8
    >>> preset(False, minutes=60, batch_size=32).batch_size
    32
    """
    base: dict[str, Any] = dict(FINE_TUNE if fine_tune else FROM_SCRATCH)
    base["minutes"] = minutes
    base["val_every_s"] = validation_interval(minutes)
    if minutes is None and overrides.get("val_every_s") is None:
        # a step budget alone: validate at fixed steps, so the same seed gives the same weights on a busy
        # machine (a time interval validated once a minute, at steps that followed the load)
        base["val_every_steps"] = validation_steps(overrides.get("steps"))
    del base["blur"], base["stain"]  # the augmentation's, not TrainConfig's
    base["augment"] = augmentation(fine_tune)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


# which layers a fine-tune trains: the setting's values, as the dock shows them
LAYERS = {
    "auto": "Automatic (last layer for own weights)",
    "all": "Every layer",
    "last": "Only the last layer (recalibrate)",
}


def layers_asked(layers: str | None, head_only: bool) -> str:
    """The layers a user asked to train: ``layers`` (``None``: ``"auto"``), or ``"last"`` for ``head_only``.

    ``train``'s ``--layers`` and ``--head-only`` (the benchmarks' too), read in one place.

    Raises
    ------
    InputError
        When ``head_only`` is given with another ``layers``.

    Examples
    --------
    >>> layers_asked(None, False), layers_asked("all", False), layers_asked(None, True)
    ('auto', 'all', 'last')
    """
    if head_only and layers not in (None, "last"):
        raise InputError(f"--head-only is --layers last: it contradicts --layers {layers}")
    return "last" if head_only else (layers or "auto")


def own_kind_weights(parent: Model, start: Model, kind: str | None) -> bool:
    """Whether a fine-tune starts from weights trained for its images' kind (see :func:`last_layer_only`).

    They are the parent's own weights for that kind (``weights_by_kind``: the shipped model's colour
    network for H&E images), or a colour network that reads H&E images (a model fine-tuned from those
    weights, whose card keeps no weights by kind, or a colour model of the user's own).

    Parameters
    ----------
    parent : Model
        The model the fine-tune starts from.
    start : Model
        Its network and card for ``kind`` (:func:`start_model`).
    kind : str or None
        The kind most of the images are (:func:`start_kind`).

    Returns
    -------
    bool
    """
    if kind is None:
        return False
    return kind in parent.card.weights_by_kind or (kind == "he" and start.card.architecture.in_channels == 3)


def last_layer_only(layers: str, own_weights: bool, fine_tune: bool = True, other_layers: bool = False) -> bool:
    """Whether a run trains only the network's last layer (``TrainConfig.head_only``).

    ``"last"`` and ``"all"`` say so; ``"auto"`` (the dock's and ``train``'s default) trains the last
    layer only when a fine-tune starts from weights trained for the images' kind
    (:func:`own_kind_weights`: the shipped model's colour weights for H&E images, and models
    fine-tuned from them), unless the user asked for settings of other layers. On the loop
    benchmark's five validation H&E images, a whole-network fine-tune on one corrected image got 1
    more of 22 corrected objects right and cost four other H&E images 0.163 AP@0.5 on average; the
    last layer alone cost them 0.013 (docs/model.md, *The last layer by default for a kind's own
    weights*). A run from random weights trains every layer.

    Parameters
    ----------
    layers : str
        ``"auto"``, ``"all"`` or ``"last"``.
    own_weights : bool
        The run starts from weights trained for its images' kind (:func:`own_kind_weights`).
    fine_tune : bool
        The run starts from a trained model (``False``: from random weights).
    other_layers : bool
        The user asked for settings of other layers (freeze the encoder: train the expanding path;
        re-estimate the normalisation statistics): ``"auto"`` then trains every layer they allow.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For another value of ``layers``.

    Examples
    --------
    >>> last_layer_only("auto", own_weights=True), last_layer_only("auto", own_weights=False)
    (True, False)
    >>> last_layer_only("all", own_weights=True), last_layer_only("auto", True, fine_tune=False)
    (False, False)
    """
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {', '.join(LAYERS)}, got {layers!r}")
    if layers == "auto":
        return fine_tune and own_weights and not other_layers
    return layers == "last"


# settings that change a trained model, and what each does with it: refused from random weights
NEEDS_A_START = {
    "anchor": "pulls toward a starting model's weights",
    "head_only": "recalibrates what a trained model makes of what it sees",
    "only_kind": "adds weights to a trained model",
}


def check_start(from_scratch: bool, how: str = "start from a trained model", **asked: str | None) -> None:
    """Refuse settings that need a trained model to start from when the run starts from random weights.

    One home for the refusal of ``train``'s flags and the dock's check boxes alike.

    Parameters
    ----------
    from_scratch : bool
        The run starts from random weights.
    how : str
        What to do instead, as that front end says it.
    **asked
        For each setting of :data:`NEEDS_A_START` the user asked for, its name as that front end
        shows it (a flag, a check box's text); ``None`` or ``""`` when not asked.

    Raises
    ------
    InputError
        Naming the first such setting asked for, what it does and what to do instead.

    Examples
    --------
    >>> check_start(True, head_only=None)
    >>> check_start(False, head_only="--head-only")
    >>> check_start(True, head_only="--head-only")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_unet_loop.core.errors.InputError: --head-only recalibrates what a trained model makes of what it sees: ...
    """
    unknown = set(asked) - set(NEEDS_A_START)
    if unknown:
        raise ValueError(f"not a setting that needs a start: {sorted(unknown)}")
    if not from_scratch:
        return
    for key, label in asked.items():
        if label:
            raise InputError(f"{label} {NEEDS_A_START[key]}: {how}, not from scratch")


def augmentation(fine_tune: bool, **changes: Any) -> AugmentConfig:
    """The preset's augmentation, with the fields a user changed (``None``: the preset's).

    The one place the dock's check boxes and ``train``'s flags meet the preset, so that a setting
    one of them leaves alone keeps the preset's value in both.

    Parameters
    ----------
    fine_tune : bool
        The fine-tuning preset (else the from-scratch one).
    **changes
        :class:`~napari_unet_loop.core.augment.AugmentConfig` fields to change.

    Returns
    -------
    AugmentConfig
        The augmentation.

    Examples
    --------
    >>> augmentation(False).blur
    1.0
    >>> augmentation(False, elastic_sigma=0.0).blur
    1.0
    """
    base = FINE_TUNE if fine_tune else FROM_SCRATCH
    fields = {"blur": base["blur"], "stain": base["stain"]}
    fields.update({k: v for k, v in changes.items() if v is not None})
    return AugmentConfig(**fields)


def check_samples(samples: Sequence[Sample]) -> int:
    """Refuse training data that cannot teach anything: the one check the dock and ``train`` share.

    Parameters
    ----------
    samples : sequence of Sample
        The annotated training samples.

    Returns
    -------
    int
        Number of annotated (reviewed) pixels.

    Raises
    ------
    InputError
        Without samples, when the labels hold no objects in the reviewed pixels, or when fewer
        than :data:`MIN_ANNOTATED_PX` pixels are annotated.
    """
    if not samples:
        raise InputError("nothing to train on: no annotated image or plane")
    annotated = sum(s.n_annotated for s in samples)
    objects = sum(int((s.labels[~s.ignore] if s.ignore is not None else s.labels).max(initial=0) > 0) for s in samples)
    if objects == 0:
        raise InputError("the labels hold no objects (all background): nothing to learn from")
    if annotated < MIN_ANNOTATED_PX:
        raise InputError(
            f"only {annotated} pixels are annotated; review at least {MIN_ANNOTATED_PX} pixels "
            "(e.g. a 32 x 32 area) to train"
        )
    return annotated


def training_record(
    config: TrainConfig,
    device: Any,
    train: Sequence[Sample | str],
    val: Sequence[Sample | str],
    *,
    steps: int,
    seconds: float,
    modality: str,
    patches: int | None = None,
    stopped: bool = False,
    started: str | None = None,
    data: dict[str, Any] | None = None,
    start_weights: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The model card's ``training`` record: one schema for models trained in the dock and by ``train``.

    Parameters
    ----------
    config : TrainConfig
        The settings.
    device : torch.device or str
        Where it trained.
    train, val : sequence of Sample or str
        Training and validation samples, or their names (the names are listed).
    steps, seconds, patches : int, float, int
        How much training happened.
    modality : str
        How the images were converted (``"auto"``, a kind, or ``"none"``).
    stopped : bool
        Whether the user stopped the run early.
    started : str, optional
        ISO date and time the run started.
    data : dict, optional
        More about the data (e.g. folders, the dock's layer pairs, annotated pixels).
    start_weights : str, optional
        The imaging kind whose own weights of the parent the run started from (recorded only
        when given: ``None`` is the parent's general weights).
    **extra
        Further fields of the front end (e.g. the command line, the split lists).

    Returns
    -------
    dict
        ``data`` (``n_train``, ``n_val``, ``train_names``, ``val_names`` and ``data``'s fields),
        ``config``, ``device``, ``precision_used`` (what the run computed in: ``"fp32"``,
        ``"bf16"`` or ``"fp16"``), ``started``, ``steps``, ``patches``, ``seconds``, ``stopped_by_user``,
        ``validated`` (whether anything was validated), ``modality``, ``start_weights`` when
        given, then ``extra``.
    """
    return {
        "data": {
            **(data or {}),
            "n_train": len(train),
            "n_val": len(val),
            "train_names": sorted(s if isinstance(s, str) else s.name for s in train),
            "val_names": sorted(s if isinstance(s, str) else s.name for s in val),
        },
        "config": config.to_dict(),
        "device": str(device),
        "precision_used": training_precision(device, config.precision),
        "started": started,
        "steps": steps,
        "patches": patches,
        "seconds": round(float(seconds), 1),
        "stopped_by_user": bool(stopped),
        "validated": bool(val),
        "modality": modality,
        **({"start_weights": start_weights} if start_weights else {}),
        **extra,
    }


@dataclass
class Scaled:
    """Training samples at the network's scale (what :func:`to_network_scale` returns).

    Attributes
    ----------
    samples : list of Sample
        The samples, rescaled so their objects have the model's diameter (unchanged when
        ``factor`` is 1).
    diameter : float or None
        Object diameter in the user's images (pixels): given, or the median measured on the
        labels (``None`` without objects).
    factor : float
        Rescaling applied (network pixels per image pixel).
    """

    samples: list[Sample]
    diameter: float | None
    factor: float


def rescale_sample(sample: Sample, factor: float) -> Sample:
    """A sample rescaled by ``factor``: the image bilinear (antialiased), labels and masks by nearest neighbours."""
    if factor == 1.0:
        return sample
    shape = scaled_shape(sample.labels.shape, factor)
    return dataclasses.replace(
        sample,
        image=resize(sample.image, shape),
        labels=resize_labels(sample.labels, shape),
        ignore=None if sample.ignore is None else resize_labels(sample.ignore, shape),
        weight=None if sample.weight is None else resize_labels(sample.weight, shape),
    )


def to_network_scale(samples: Sequence[Sample], card: ModelCard, diameter: float | None = None) -> Scaled:
    """Rescale annotated samples so their objects reach the network at its diameter: the dock's and ``train``'s rule.

    Parameters
    ----------
    samples : sequence of Sample
        Annotated samples on the user's grid.
    card : ModelCard
        The starting model's card: its ``diameter`` is the network's scale (``None``: no
        rescaling; the network will be trained at the samples' own scale).
    diameter : float, optional
        The objects' diameter in the samples (pixels); measured on the labels (reviewed
        objects only, pooled median) when omitted.

    Returns
    -------
    Scaled
        The samples, the diameter and the factor.

    Raises
    ------
    InputError
        For a diameter that is not a positive number.
    """
    try:
        d = check_diameter(diameter)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if d is None:
        d = median_diameter([s.labels for s in samples], [s.ignore for s in samples])
    f = scale_factor(card.diameter, d, card.native_diameters)
    return Scaled([rescale_sample(s, f) for s in samples], d, f)


def record_sizes(card: ModelCard, scaled: Scaled) -> None:
    """Write a trained model's object sizes into its card.

    The network's ``diameter`` stays the starting model's (the samples were rescaled to it);
    a model that had none (from scratch, or made before object sizes) was trained at the
    samples' own scale, which becomes its diameter. ``default_diameter`` becomes the
    samples' diameter: the model will rescale images like its training images by default.
    """
    if scaled.diameter is None:
        return
    d = round(float(scaled.diameter), 2)
    if card.diameter is None:
        card.diameter = d
    card.default_diameter = d


def finetuned_modality(parent: str, trained: str, colour: bool = False) -> str:
    """The modality setting of a model fine-tuned from a ``parent`` setting on ``trained`` input.

    A model trained on the grey image as it is (``"none"``) must be fed it so; one trained
    on converted images (bright nuclei on a dark background, whichever kind they came from)
    keeps its parent's conversion, or detects each image (``"auto"``) when the parent had none.
    A kind's own colour network of a grey parent (H&E) reads the image as it is, as
    :meth:`.model_files.Model.for_kind` sets it: its child is a colour model, ``"none"``.

    Parameters
    ----------
    parent : str
        The parent card's ``modality``.
    trained : str
        What the training samples were converted with (``"auto"``, a kind or ``"none"``).
    colour : bool
        Whether the run trained the parent's colour network for one kind.

    Returns
    -------
    str
        The new card's ``modality``.

    Examples
    --------
    >>> finetuned_modality("none", "brightfield"), finetuned_modality("auto", "auto", colour=True)
    ('auto', 'none')
    """
    if colour or trained == "none":
        return "none"
    return parent if parent != "none" else "auto"


def start_kind(samples: Sequence[Sample]) -> str | None:
    """The imaging kind a fine-tune starts from: the kind most of its images are.

    The fine-tune starts from the parent's weights and thresholds for that kind
    (:meth:`.model_files.Model.for_kind`); the dock's Fine-tune and ``train --from`` both
    ask this function. Ties and unknown kinds: ``None`` (the general weights and thresholds).

    Parameters
    ----------
    samples : sequence of Sample
        The fine-tune's images.

    Returns
    -------
    str or None
    """
    # one vote per image: a validation stripe cut from an image is the same image
    kinds = {s.name.removesuffix(VALIDATION_SUFFIX) or id(s): s.kind for s in samples if s.kind}
    leaders = Counter(kinds.values()).most_common(2)
    if not leaders or (len(leaders) == 2 and leaders[0][1] == leaders[1][1]):
        return None
    return leaders[0][0]


def start_model(parent: Model, kind: str | None, samples: Sequence[Sample]) -> tuple[Model, bool]:
    """What a fine-tune starts from, and whether its samples, prepared by the parent, fit that network.

    The start is the parent's network and thresholds for ``kind``
    (:meth:`.model_files.Model.for_kind`). A grey model may read H&E images with a colour
    network of its own (3 input channels, :meth:`.model_card.ModelCard.architecture_for`), and
    the parent prepared those images as R, G and B: a fine-tune that starts from that network
    trains on such images only; one that starts from a grey network reads H&E images as their
    haematoxylin plane, and they must be prepared again, as the start reads them.

    Parameters
    ----------
    parent : Model
        The model fine-tuned.
    kind : str or None
        The imaging kind it starts from (:func:`start_kind`).
    samples : sequence of Sample
        The fine-tune's images, prepared as ``parent`` reads them.

    Returns
    -------
    start : Model
        One network, with the kind's thresholds.
    ready : bool
        ``True`` if every sample holds the input channels the start's network reads; else
        prepare them again with ``start``.

    Raises
    ------
    InputError
        If the start is a kind's own colour network and some images are of other kinds.
    """
    from .modality import LABELS

    start = parent.for_kind(kind)
    if parent.card.architecture_for(kind) != parent.card.architecture:
        others = list(dict.fromkeys(s.name.removesuffix(VALIDATION_SUFFIX) for s in samples if s.kind != kind))
        if others:
            label = LABELS.get(kind, kind)
            raise InputError(
                f"the fine-tune starts from the model's colour network for {label} images, which reads "
                f"colour images only, and {len(others)} of its images are of other kinds ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}): fine-tune on the {label} images alone, and on the others "
                "in a run of their own"
            )
    channels = start.card.architecture.in_channels
    return start, all(s.image.shape[0] == channels for s in samples)


def weights_left_behind(parent: Model, kind: str | None, samples: Sequence[Sample], name: str | None = None) -> str:
    """What a fine-tune into a model of its own does not carry over: the parent's weights for other kinds.

    A child of a fine-tune is one network (:meth:`.model_files.Model.for_kind`), so the parent's
    own weights for the kinds it did not start from (the colour network for H&E images of the
    shipped model) are not in it: its images of those kinds go through the new network. Said
    when the run starts, so nobody finds out from a worse H&E segmentation later.

    Parameters
    ----------
    parent : Model
        The model fine-tuned.
    kind : str or None
        The kind the fine-tune starts from (:func:`start_kind`).
    samples : sequence of Sample
        The fine-tune's images.
    name : str, optional
        The parent's name to show (default: ``parent.name``).

    Returns
    -------
    str
        One sentence (without its full stop), or ``""`` when nothing is left behind.
    """
    from .modality import LABELS

    name = name or parent.name
    left = [k for k in parent.card.weights_by_kind if k != kind]
    if not left:
        return ""
    labels = " and ".join(f"{LABELS.get(k, k)} images" for k in left)
    trained = {s.name.removesuffix(VALIDATION_SUFFIX) for s in samples if s.kind in left}
    note = (
        f"the new model is one network: {name}'s own weights for {labels} stay in {name} "
        f"and are not carried over, so it reads such images with the network trained here"
    )
    if trained:
        note += f" ({len(trained)} of the images trained on are such images, read as it reads them)"
    return note


def one_kind_diameter(
    model: Model, samples: Sequence[Sample], kind: str | None, diameter: float | None
) -> float | None:
    """Check a fine-tune whose weights will answer for one imaging kind inside ``model``; the size to train at.

    The fine-tuned weights join ``model`` as its own weights for ``kind``
    (:func:`.kind_weights.add_kind_weights`); its other images keep its weights. The model
    segments images of that kind at its one default object size, so the images train at that
    size too: ``diameter`` (the user's object size) when given, else the model's, not the
    labels' measure.

    Parameters
    ----------
    model : Model
        The model the fine-tune starts from and joins.
    samples : sequence of Sample
        The training samples; each one's ``kind`` is how it reached the network.
    kind : str or None
        The imaging kind the weights are for.
    diameter : float, optional
        The object size the user set, pixels.

    Returns
    -------
    float or None
        The object diameter to rescale the samples by (:func:`to_network_scale`).

    Raises
    ------
    InputError
        When the model does not detect each image's kind, the kind is unknown, the images are
        of another kind too, or the user's object size is further from the model's than its
        weights for one kind may be (:func:`.kind_weights.same_size`).
    """
    from .kind_weights import same_size
    from .modality import LABELS, MODALITIES

    if model.card.modality != "auto":
        raise InputError(
            f"{model.name} does not detect each image's kind (imaging {model.card.modality!r}): "
            "weights for one kind would never be used; fine-tune a model of its own"
        )
    if kind not in MODALITIES:
        raise InputError("the image's imaging kind is not known: choose it under Imaging first")
    label = LABELS.get(kind, kind)
    others = sorted({s.kind for s in samples if s.kind and s.kind != kind})
    if others:
        raise InputError(
            f"weights for {label} images only, but some training images are "
            f"{', '.join(LABELS.get(k, k) for k in others)}: leave those out, or fine-tune a model of its own"
        )
    own = model.image_diameter
    d = diameter if diameter is not None else own
    if not same_size(own, d):
        raise InputError(
            f"{model.name} takes images as objects of {own:.0f} px and yours are set to {d:.0f} px: a model "
            f"has one object size, so its weights for {label} images must learn them at its size. Leave the "
            "object size unset, or fine-tune a model of its own"
        )
    return d
