"""Model files and the model registry.

A model is one ``.safetensors`` file: the U-Net weights plus a JSON *model card* (:mod:`.model_card`)
stored in the file's metadata (architecture, normalisation, post-processing
defaults, parent model, training data, metrics, date). A copy of the card is
written beside it as ``<name>.json`` for people to read; loading needs only the
``.safetensors`` file, so one file is enough to share a model.

Models are found by name in the package's ``models/`` folder (shipped) and in the
user model folder (``platformdirs.user_data_dir("napari-unet-loop")/models``), or
by path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .atomic import atomic_path
from .errors import ModelError
from .model_card import ModelCard
from .unet import UNet, UNetConfig

CARD_KEY = "napari_unet_loop.card"
DEFAULT_MODEL = "dsb2018-nuclei"
SUFFIX = ".safetensors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _kind_prefix(kind: str) -> str:
    """The prefix of a kind's own tensors in a model file."""
    return f"by_kind.{kind}."


@dataclass
class Model:
    """A loaded model: the network and its card.

    Attributes
    ----------
    net : UNet
        The network (on the CPU, eval mode, after loading).
    card : ModelCard
        Its card.
    path : pathlib.Path or None
        The file it came from.
    nets_by_kind : dict
        Networks for images of one imaging kind (the card's ``weights_by_kind``), of the same
        architecture but for their input channels (:meth:`ModelCard.architecture_for`); every
        other image goes to ``net``. See :meth:`net_for`.
    """

    net: UNet
    card: ModelCard
    path: Path | None = None
    nets_by_kind: dict[str, UNet] = field(default_factory=dict)

    def net_for(self, kind: str | None) -> UNet:
        """The network for an image of one imaging kind: the kind's own, else the general one.

        Parameters
        ----------
        kind : str or None
            The imaging kind the image reaches the network as (``None`` or ``"none"``: unknown).

        Returns
        -------
        UNet
        """
        return self.nets_by_kind.get(kind or "", self.net)

    def input_channels(self, kind: str | None) -> int:
        """How many channels the network for an image of one imaging kind reads.

        1: the grey plane the image's kind is turned into (:mod:`.modality`); 3: the image's
        R, G and B (a colour network, the general one or a kind's own). What every caller of
        :func:`.image.prepare_input` and :func:`.image.input_limits` passes as ``in_channels``.

        Parameters
        ----------
        kind : str or None
            The imaging kind the image reaches the network as (``None`` or ``"none"``: unknown).

        Returns
        -------
        int
        """
        return self.card.architecture_for(kind).in_channels

    def reading_in_doubt_as(self, kind: str | None) -> Model:
        """The model reading grey images in doubt as ``kind`` (its card's ``kind_in_doubt``), networks shared."""
        if kind == self.card.kind_in_doubt:
            return self
        return Model(self.net, replace(self.card, kind_in_doubt=kind), self.path, self.nets_by_kind)

    def for_kind(self, kind: str | None) -> Model:
        """The model as one network for images of one kind: where a fine-tune on such images starts.

        The kind's weights and thresholds become the general ones; nothing per kind is kept
        (a fine-tuned child tunes its own thresholds on the user's data). The networks are
        shared with this model, not copied.

        Parameters
        ----------
        kind : str or None
            The imaging kind (``None``: the general network and thresholds).

        Returns
        -------
        Model
        """
        card = replace(
            self.card,
            postprocess=self.card.thresholds(kind),
            postprocess_by_kind={},
            weights_by_kind={},
            native_diameters=self.card.native_for(kind),  # the sizes the kind's own weights learnt unscaled
        )
        arch = self.card.architecture_for(kind)
        if arch != self.card.architecture:  # the kind's own colour network: it reads the image as it is
            card = replace(card, architecture=arch, modality="none", kind_in_doubt=None)
        return Model(self.net_for(kind), card)  # no file holds these weights and this card

    @property
    def name(self) -> str:
        """The model's name."""
        return self.card.name

    @property
    def image_diameter(self) -> float | None:
        """Object diameter assumed in an image when none is given (``None``: unknown)."""
        return self.card.default_diameter or self.card.diameter


def shipped_dir() -> Path:
    """Folder of the models shipped with the package."""
    return Path(__file__).resolve().parent.parent / "models"


def user_dir() -> Path:
    """Folder of the user's own models (``NAPARI_UNET_LOOP_MODELS`` overrides it)."""
    env = os.environ.get("NAPARI_UNET_LOOP_MODELS")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-unet-loop", appauthor=False)) / "models"


def list_models() -> dict[str, Path]:
    """Return ``{name: path}`` of all shipped and user models (user models shadow shipped ones)."""
    out: dict[str, Path] = {}
    for folder in (shipped_dir(), user_dir()):
        if folder.is_dir():
            for p in sorted(folder.glob(f"*{SUFFIX}")):
                out[p.stem] = p
    return out


def resolve(name_or_path: str | os.PathLike | None) -> Path:
    """Find a model file by name (``default`` included) or path.

    Raises
    ------
    ModelError
        If no such model exists.
    """
    if name_or_path is None or str(name_or_path) == "default":
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if p.suffix == SUFFIX or p.exists() or os.sep in str(name_or_path):
        if p.is_dir():
            raise ModelError(f"{p} is a folder, not a model file ({SUFFIX})")
        if not p.exists():
            raise ModelError(f"model file {p} does not exist")
        return p
    models = list_models()
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    known = ", ".join(sorted(models)) or "none"
    raise ModelError(f"no model named {name_or_path!r} (known: {known}); give a name or a path")


def _read_header(path: Path) -> tuple[ModelCard, dict[str, tuple[int, ...]]]:
    """A model file's card and tensor shapes, from its header (no weights are read).

    Raises
    ------
    ModelError
        If the file is corrupt, not a safetensors file, or holds no valid model card.
    """
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read model file {path}: it is corrupt or not a safetensors file ({exc})") from exc
    if CARD_KEY not in meta:
        raise ModelError(f"{path} is a safetensors file but not a napari-unet-loop model (no model card)")
    try:
        data = json.loads(meta[CARD_KEY])
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return ModelCard.from_dict(data), shapes
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"the model card in {path} is invalid: {exc}") from exc


def read_card(name_or_path: str | os.PathLike | None = "default") -> ModelCard:
    """A model's card, read from its file's header without loading the weights (for listings).

    Raises
    ------
    ModelError
        If the file is missing, corrupt, or not a napari-unet-loop model.
    """
    return _read_header(resolve(name_or_path))[0]


def load(name_or_path: str | os.PathLike | None = "default") -> Model:
    """Load a model by name or path.

    Raises
    ------
    ModelError
        If the file is missing, corrupt, not a napari-unet-loop model, or its weights
        do not fit its card.
    """
    path = resolve(name_or_path)
    card, shapes = _read_header(path)
    # compare the tensor shapes in the file's header with the card's network, built without memory,
    # before allocating or reading anything
    with torch.device("meta"):
        nets = {kind: UNet(card.architecture_for(kind or None)) for kind in ["", *card.weights_by_kind]}
        one = {kind: {k: tuple(v.shape) for k, v in net.state_dict().items()} for kind, net in nets.items()}
    expected = {}
    for kind, shapes_of_kind in one.items():
        prefix = _kind_prefix(kind) if kind else ""
        expected.update({prefix + k: v for k, v in shapes_of_kind.items()})
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or sorted(k for k in shapes if shapes[k] != expected[k])
        raise ModelError(
            f"the weights in {path} do not match its architecture ({len(wrong)} tensor(s) differ, "
            f"e.g. {wrong[0]!r}): the file is damaged or its card was edited"
        )
    try:
        tensors = load_file(str(path))
        nets = {}
        for kind in ["", *card.weights_by_kind]:
            prefix = _kind_prefix(kind) if kind else ""
            net = UNet(card.architecture_for(kind or None))
            net.load_state_dict({k: tensors[prefix + k] for k in one[kind]}, strict=True)
            nets[kind] = net.eval()
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"the weights in {path} cannot be loaded: {exc}") from exc
    general = nets.pop("")
    return Model(general, card, path, nets)


def save(model: Model, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write a model file (and a readable ``.json`` card beside it), atomically.

    Parameters
    ----------
    model : Model
        The model.
    path : path-like
        Target ``.safetensors`` file (the suffix is added when missing).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        The written model file.

    Raises
    ------
    ValueError
        If the model's networks per imaging kind do not match its card's ``weights_by_kind``,
        or a network's input channels its card's (nothing is written).
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    if set(model.nets_by_kind) != set(model.card.weights_by_kind):
        raise ValueError(
            f"the model's networks per imaging kind ({', '.join(sorted(model.nets_by_kind)) or 'none'}) do not match "
            f"its card's weights_by_kind ({', '.join(sorted(model.card.weights_by_kind)) or 'none'})"
        )
    for kind, net in [(None, model.net), *model.nets_by_kind.items()]:
        wanted = model.card.architecture_for(kind).in_channels
        if net.config.in_channels != wanted:
            raise ValueError(
                f"the network for {kind or 'every'} image(s) reads {net.config.in_channels} input channel(s), "
                f"its card says {wanted}"
            )
    card = model.card.to_dict()
    state = {}
    for kind, net in [("", model.net), *sorted(model.nets_by_kind.items())]:
        prefix = _kind_prefix(kind) if kind else ""
        # a copy per network: the same weights may answer for two kinds (safetensors refuses shared memory)
        state.update(
            {
                prefix + k: v.detach().to("cpu", torch.float32).clone(memory_format=torch.contiguous_format)
                for k, v in net.state_dict().items()
            }
        )
    check_card_place(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        # the bytes written into atomic_path's file: safetensors' save_file renames a private (0600) file of
        # its own over the path, which undid the mode a model on a shared folder needs
        tmp.write_bytes(safetensors_bytes(state, metadata={CARD_KEY: json.dumps(card)}))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    model.path = path
    return path


def check_card_place(path: str | os.PathLike) -> None:
    """Refuse a model file whose readable card (``<name>.json``) would replace a JSON file that is not a card.

    Raises
    ------
    ModelError
        If ``path`` does not exist yet and its ``.json`` does, holding something else (a user's file).
    """
    path = Path(path)
    card = path.with_suffix(".json")
    if path.exists() or not card.exists():
        return
    try:
        text = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        text = None
    if not (isinstance(text, dict) and "architecture" in text):
        raise ModelError(f"{card} is not a model card, and the model's card would replace it")


def check_name(name: str) -> str:
    """Validate a model name for the user folder.

    Raises
    ------
    ModelError
        If the name is empty or holds characters unsafe in file names.
    """
    if not _NAME_RE.match(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (up to 100)")
    return name


def check_user_name(name: str) -> str:
    """Validate a name for a model in the user folder: a valid name (:func:`check_name`), not a shipped model's.

    A user model shadows a shipped one of the same name (:func:`list_models`), so saving one as
    the shipped default's name would hide the default from the dock and from ``--model default``.

    Raises
    ------
    ModelError
        If the name is invalid, ``default``, or a shipped model's (in any case).
    """
    check_name(name)
    shipped = {p.stem.casefold() for p in shipped_dir().glob(f"*{SUFFIX}")} if shipped_dir().is_dir() else set()
    if name.casefold() == "default" or name.casefold() in shipped:
        default = name.casefold() in ("default", DEFAULT_MODEL.casefold())
        what = "the shipped default model's" if default else "a shipped model's"
        raise ModelError(f"'{name}' is {what} name, and a model of yours by that name would hide it: choose another")
    return name


def save_user_model(model: Model, name: str, overwrite: bool = False) -> Path:
    """Save ``model`` under ``name`` in the user model folder (not a shipped model's name: :func:`check_user_name`)."""
    model.card.name = check_user_name(name)
    return save(model, user_dir() / f"{name}{SUFFIX}", overwrite=overwrite)


def delete_user_model(name: str) -> None:
    """Delete a user model (shipped models cannot be deleted)."""
    p = user_dir() / f"{check_name(name)}{SUFFIX}"
    if not p.exists():
        raise ModelError(f"no user model named {name!r}")
    p.unlink()
    p.with_suffix(".json").unlink(missing_ok=True)


def rename_user_model(name: str, new_name: str) -> Path:
    """Rename a user model (its card's name too)."""
    check_user_name(new_name)
    target = user_dir() / f"{new_name}{SUFFIX}"
    if target.exists():
        raise FileExistsError(f"a user model named {new_name!r} exists")
    model = load(user_dir() / f"{check_name(name)}{SUFFIX}")
    path = save_user_model(model, new_name)
    delete_user_model(name)
    return path


def import_model(path: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Path:
    """Copy a model file into the user folder after checking that it loads."""
    name = check_user_name(name or Path(path).stem)  # before reading the file: a name refused says so at once
    model = load(path)
    return save_user_model(model, name, overwrite=overwrite)


def export_model(name_or_path: str, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy a model file to ``target`` (one self-contained ``.safetensors`` file)."""
    src = resolve(name_or_path)
    target = Path(target)
    with atomic_path(target, overwrite=overwrite) as tmp:
        shutil.copyfile(src, tmp)
    return target


def new_model(config: UNetConfig, name: str = "untrained", seed: int = 0, **card: Any) -> Model:
    """Create a freshly initialised model."""
    torch.manual_seed(seed)
    return Model(UNet(config), ModelCard(name=name, architecture=config, **card))
