"""The model card: everything about a model besides its weights.

A card travels in a model file's metadata (:mod:`.model_files` reads and writes the files) and is
written beside it as ``<name>.json`` for people to read: the architecture, the input normalisation
and imaging kind, the object size, the thresholds (per kind), weights of its own per kind, the
parent model, the training data and scores, the date, and the file format it needs.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .errors import ModelError
from .image import Normalization
from .postprocess import PostprocessConfig
from .scale import check_diameter, check_native
from .unet import UNetConfig

FORMAT_VERSION = 3  # the newest file format this plugin reads
ONE_NETWORK_FORMAT = 1  # files written as format 1 hold one network: older plugins read them
ONE_INPUT_FORMAT = 2  # format 2: networks per imaging kind, all reading the same input channels


def now_iso() -> str:
    """The time now, ISO 8601 with the time zone (a card's ``created``)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class ModelCard:
    """Everything about a model besides its weights.

    Attributes
    ----------
    name : str
        Model name (file stem).
    architecture : UNetConfig
        The network.
    normalization : Normalization
        Input percentile normalisation.
    modality : str
        How images reach the network (one-channel models): ``"auto"`` detects each image's
        kind (fluorescence, brightfield, H&E) and turns it into bright nuclei on a dark
        background (see :mod:`.modality`); a kind forces that conversion; ``"none"`` (models
        made before modalities existed) feeds the grey image as it is.
    kind_in_doubt : str or None
        With ``modality`` ``"auto"``: how a grey image whose background lies where the
        detection has no evidence (:data:`.modality.DOUBT_BAND`: phase contrast, DIC, dense
        fluorescence) is read, ``"fluorescence"`` or ``"brightfield"``: the way the images
        of a fine-tune in that band were read (:func:`.modality.settle_doubt`), so that every
        frame of such an experiment reaches the network alike. ``None``: by the detection's
        line.
    postprocess : PostprocessConfig
        Default instance thresholds (sizes in pixels at the network's scale).
    postprocess_by_kind : dict
        Thresholds for images of one imaging kind (``"fluorescence"``, ``"brightfield"``,
        ``"he"``) where they differ from ``postprocess``; see :meth:`thresholds`. Empty for
        most models (fine-tuned ones re-tune ``postprocess`` on their own data).
    weights_by_kind : dict
        Imaging kinds that have their own network weights in the file (a specialist trained on
        images of that kind only), each with how those weights were made (command, data,
        validation scores). Such a kind always has its own thresholds in ``postprocess_by_kind``.
        A record's ``in_channels`` (3: R, G and B) says that the kind's network reads the image
        itself instead of the grey plane the general network reads (``architecture``'s other
        settings are shared); see :meth:`architecture_for`. Empty for most models; see
        :meth:`Model.net_for`.
    diameter : float or None
        Median object diameter (pixels) the network was trained at: images are rescaled so
        their objects reach it at this size (see :mod:`.scale`); ``None`` (models made before
        object sizes) takes images as they are.
    default_diameter : float or None
        Object diameter (pixels) assumed in a user's image when none is given: the one of the
        images the model was trained or fine-tuned on (``None``: ``diameter``).
    native_diameters : tuple of float or None
        ``(smallest, largest)`` object diameters (pixels) the network learnt at their own scale:
        an image (or a fine-tune's images) whose objects are within it is not rescaled
        (:func:`.scale.scale_factor`). A kind's own weights may give their own in their
        ``weights_by_kind`` record (the shipped H&E network: the 5th to 95th percentile of its
        training images' object sizes). ``None``: images are rescaled to ``diameter``.
    upscale_small : bool
        When no diameter is given: an image whose objects come out much smaller than the
        model's default diameter is segmented again, enlarged for them (see
        :func:`napari_unet_loop.core.segment.iter_segment`). For a model trained on objects
        of many sizes at their own scale (the shipped one), which still separates small
        touching nuclei less well than large ones.
    description : str
        What the model is for.
    parent : str or None
        Name of the model it was fine-tuned from.
    training : dict
        Training data, split, steps, time, settings.
    metrics : dict
        Validation / test metrics.
    created : str
        ISO date and time.
    """

    name: str
    architecture: UNetConfig
    normalization: Normalization = field(default_factory=Normalization)
    modality: str = "none"
    kind_in_doubt: str | None = None
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    postprocess_by_kind: dict[str, PostprocessConfig] = field(default_factory=dict)
    weights_by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)
    diameter: float | None = None
    default_diameter: float | None = None
    native_diameters: tuple[float, float] | None = None
    upscale_small: bool = False
    description: str = ""
    parent: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    format_version: int = ONE_NETWORK_FORMAT

    def thresholds(
        self, kind: str | None, given: PostprocessConfig | Mapping[str, Any] | None = None
    ) -> PostprocessConfig:
        """The instance thresholds for an image of one imaging kind.

        Parameters
        ----------
        kind : str or None
            The image's imaging kind as the network sees it (``None`` or ``"none"``: unknown).
        given : PostprocessConfig or mapping, optional
            Thresholds chosen by the user: a full set is used as it is; a mapping replaces
            those settings only, in the kind's thresholds.

        Returns
        -------
        PostprocessConfig
            ``given``, or the kind's thresholds (``postprocess_by_kind``, else ``postprocess``)
            with ``given``'s settings.

        Raises
        ------
        ValueError
            For a setting out of range.
        TypeError
            For an unknown setting.
        """
        if isinstance(given, PostprocessConfig):
            return given
        base = self.postprocess_by_kind.get(kind or "", self.postprocess)
        return replace(base, **dict(given)) if given else base

    def native_for(self, kind: str | None) -> tuple[float, float] | None:
        """The object sizes the network for images of one imaging kind learnt at their own scale.

        The kind's own weights' (their ``weights_by_kind`` record) where it gives them, else
        ``native_diameters``.

        Parameters
        ----------
        kind : str or None
            The imaging kind the image reaches the network as (``None`` or ``"none"``: unknown).

        Returns
        -------
        tuple of float or None
            ``(smallest, largest)`` in pixels; ``None``: images are rescaled to ``diameter``.
        """
        own = self.weights_by_kind.get(kind or "", {})
        return check_native(own["native_diameters"]) if "native_diameters" in own else self.native_diameters

    def architecture_for(self, kind: str | None) -> UNetConfig:
        """The network that reads images of one imaging kind.

        ``architecture``, with the input channels of the kind's own weights where their record
        in ``weights_by_kind`` gives them (a colour network for H&E in a grey model).

        Parameters
        ----------
        kind : str or None
            The imaging kind the image reaches the network as (``None`` or ``"none"``: unknown).

        Returns
        -------
        UNetConfig
        """
        channels = self.weights_by_kind.get(kind or "", {}).get("in_channels")
        if channels is None or channels == self.architecture.in_channels:
            return self.architecture
        return replace(self.architecture, in_channels=channels)

    def _format(self) -> int:
        """The oldest file format that holds this card's networks."""
        if any(self.architecture_for(kind) != self.architecture for kind in self.weights_by_kind):
            return FORMAT_VERSION
        return ONE_INPUT_FORMAT if self.weights_by_kind else ONE_NETWORK_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Return the card as a JSON-compatible dict."""
        from . import __version__ as version  # local: avoid an import cycle at package import

        return {
            "name": self.name,
            # a newer format only where it is needed, so that older plugins read every other file and
            # say "update" (not "damaged") for a file with networks they cannot use
            "format_version": self._format(),
            "description": self.description,
            "architecture": self.architecture.to_dict(),
            "normalization": self.normalization.to_dict(),
            "modality": self.modality,
            "kind_in_doubt": self.kind_in_doubt,
            "postprocess": self.postprocess.to_dict(),
            "postprocess_by_kind": {k: v.to_dict() for k, v in self.postprocess_by_kind.items()},
            "weights_by_kind": dict(self.weights_by_kind),
            "diameter": self.diameter,
            "default_diameter": self.default_diameter,
            **({"native_diameters": list(self.native_diameters)} if self.native_diameters else {}),
            "upscale_small": self.upscale_small,
            "parent": self.parent,
            "training": self.training,
            "metrics": self.metrics,
            "created": self.created,
            "software": {"napari-unet-loop": version, "torch": torch.__version__},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from a dict (as stored in a model file)."""
        version = data.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ModelError(
                f"model format {version} is newer than this plugin understands ({FORMAT_VERSION}); "
                "update napari-unet-loop"
            )
        for key, kind in (("training", dict), ("metrics", dict), ("description", str), ("name", str)):
            if key in data and data[key] is not None and not isinstance(data[key], kind):
                raise TypeError(f"{key} must be a {'JSON object' if kind is dict else 'string'}")
        for key in ("architecture", "normalization", "postprocess"):
            if key in data and not isinstance(data[key], dict):
                raise TypeError(f"{key} must be a JSON object")
        postprocess = PostprocessConfig.from_dict(data.get("postprocess", {}))
        return cls(
            name=str(data["name"]),
            architecture=UNetConfig.from_dict(data["architecture"]),
            normalization=Normalization.from_dict(data.get("normalization", {})),
            modality=_card_modality(data.get("modality", "none")),
            kind_in_doubt=_card_kind_in_doubt(data.get("kind_in_doubt")),
            postprocess=postprocess,
            postprocess_by_kind=_card_thresholds_by_kind(data.get("postprocess_by_kind") or {}, postprocess),
            weights_by_kind=_card_by_kind(data.get("weights_by_kind") or {}, "weights_by_kind"),
            diameter=check_diameter(data.get("diameter"), "diameter"),
            default_diameter=check_diameter(data.get("default_diameter"), "default_diameter"),
            native_diameters=check_native(data.get("native_diameters")),
            upscale_small=_card_flag(data, "upscale_small"),
            description=data.get("description", ""),
            parent=data.get("parent"),
            training=data.get("training", {}),
            metrics=data.get("metrics", {}),
            created=data.get("created", ""),
            format_version=version,
        )


def _card_flag(data: dict[str, Any], key: str) -> bool:
    """A yes/no setting of a card (absent: no), checked."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be true or false, got {value!r}")
    return value


def _card_by_kind(value: Any, key: str) -> dict[str, dict[str, Any]]:
    """A card's entries per imaging kind (``key``: the card field), checked: known kinds, JSON objects."""
    from .modality import MODALITIES

    if not isinstance(value, dict):
        raise TypeError(f"{key} must be a JSON object")
    for kind, entry in value.items():
        if kind not in MODALITIES:
            raise ValueError(f"{key}: unknown imaging kind {kind!r} (one of {', '.join(MODALITIES)})")
        if not isinstance(entry, dict):
            raise TypeError(f"{key}[{kind!r}] must be a JSON object")
        if "native_diameters" in entry:
            check_native(entry["native_diameters"])
        channels = entry.get("in_channels")
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
            raise ValueError(f"{key}[{kind!r}]: in_channels must be 1 (grey) or 3 (colour), got {channels!r}")
    return dict(value)


def _card_thresholds_by_kind(value: Any, general: PostprocessConfig) -> dict[str, PostprocessConfig]:
    """A card's thresholds per imaging kind, checked (a setting left out is the ``general`` one)."""
    return {
        kind: PostprocessConfig.from_dict({**general.to_dict(), **pp})
        for kind, pp in _card_by_kind(value, "postprocess_by_kind").items()
    }


def _card_kind_in_doubt(value: Any) -> str | None:
    """A card's ``kind_in_doubt``, checked."""
    from .modality import check_kind_in_doubt

    return check_kind_in_doubt(value)


def _card_modality(value: Any) -> str:
    """A card's modality setting, checked."""
    from .modality import check_choice

    if value in (None, "none"):
        return "none"
    if not isinstance(value, str):
        raise TypeError(f"modality must be a string, got {type(value).__name__}")
    return str(check_choice(value))


def card_summary(card: ModelCard) -> dict[str, Any]:
    """The card as a dict without the bulky parts (training history, file lists), for provenance records."""
    d = card.to_dict()
    training = dict(d.get("training") or {})
    training.pop("history", None)
    data = dict(training.get("data") or {})
    for key in ("train_names", "val_names"):
        data.pop(key, None)
    if data:
        training["data"] = data
    d["training"] = training
    return d
